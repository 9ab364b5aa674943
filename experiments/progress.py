"""Run outputs a researcher reads: progress.csv, TensorBoard scalars, online returns, a progress line.

Column names follow the reference's progress.csv so existing plotting scripts keep working.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time

import numpy as np

ITERATION = "Epoch"
ENV_STEPS = "Number of env steps total"
TRAIN_STEPS = "Number of train steps total"
TEST_RETURN = "AverageReturn_all_test_tasks"


class ProgressLog:
    """Appends one row per evaluation to progress.csv and the same scalars to TensorBoard."""

    def __init__(self, run_dir: str, resume_iteration: int | None = None):
        self.path = os.path.join(run_dir, "progress.csv")
        self.online_dir = os.path.join(run_dir, "online")
        os.makedirs(self.online_dir, exist_ok=True)
        self.columns: list[str] | None = None
        if resume_iteration is not None and os.path.exists(self.path):
            self._truncate_after(resume_iteration)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"), flush_secs=30)

    def _truncate_after(self, iteration: int) -> None:
        """Drop rows logged after the checkpoint we resume from (they will be produced again)."""
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        self.columns = list(rows[0].keys())
        kept = [r for r in rows if int(float(r[ITERATION])) <= iteration]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)

    def write(self, row: dict[str, float], online: dict[str, np.ndarray]) -> None:
        iteration = int(row[ITERATION])
        if self.columns is None:
            self.columns = list(row.keys())
            new_file = True
        else:
            new_file = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        step = int(row[ENV_STEPS])
        for name, value in row.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(name.replace(" ", "_"), value, step)
        for name, values in online.items():
            np.save(os.path.join(self.online_dir, f"{name}-iter{iteration:05d}.npy"), values)
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


class ProgressBar:
    """One self-overwriting line: iteration, env steps, latest test return, ETA."""

    def __init__(self, total_iterations: int, start_iteration: int, stream=sys.stderr):
        self.total, self.start = total_iterations, start_iteration
        self.t0 = time.perf_counter()
        self.stream = stream
        self.tty = stream.isatty()

    def update(self, iteration: int, env_steps: int, test_return: float | None) -> None:
        done = iteration - self.start
        elapsed = time.perf_counter() - self.t0
        left = self.total - iteration
        eta = elapsed / done * left if done > 0 else float("nan")
        ret = "n/a" if test_return is None else f"{test_return:.2f}"
        width = 24
        filled = int(width * iteration / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = (f"[{bar}] iter {iteration}/{self.total}  env steps {env_steps:,}  "
                f"test return {ret}  ETA {_fmt_seconds(eta)}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "--"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
