"""Run outputs a researcher reads: progress.csv, TensorBoard scalars, online returns, a progress line.

Column names follow the reference's progress.csv so existing plotting scripts keep working.
One `ProgressLog` writes one seed's directory. A killed process can leave a partial last line in
progress.csv and TensorBoard events past the last checkpoint: opening a log for a resumed run
drops both (rows after the checkpoint's iteration, and TensorBoard steps after its env steps).
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time

import numpy as np

from experiments import faults, rundir

ITERATION = "Epoch"
ENV_STEPS = "Number of env steps total"
TRAIN_STEPS = "Number of train steps total"
TEST_RETURN = "AverageReturn_all_test_tasks"


def read_rows(path: str) -> list[dict[str, str]]:
    """The complete rows of a progress.csv; a partial last line (a killed writer) is dropped."""
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the unfinished line is not a row
    reader = csv.DictReader(io.StringIO(text))
    rows = [r for r in reader if None not in r and None not in r.values()]
    return rows


def write_atomically(path: str, text: str) -> None:
    """Replace `path` with `text` so a reader (or a kill) sees the old file or the new, never half.
    Temporary files that killed writers left for `path` go too (the run lock admits one writer)."""
    folder, name = os.path.split(path)
    for left in os.listdir(folder or "."):
        if left.startswith(f"{name}.tmp-"):
            os.remove(os.path.join(folder, left))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ProgressLog:
    """Appends one row per evaluation to a seed's progress.csv, the same scalars to TensorBoard
    (against env steps) and the online-adaptation curves to online/.

    resume_iteration / resume_env_steps: the checkpoint a resumed run continues from; anything
    logged after it (by the killed or stopped process) is dropped. None for a fresh run.
    """

    def __init__(self, seed_dir: str, resume_iteration: int | None = None, resume_env_steps: int = 0):
        self.path = os.path.join(seed_dir, rundir.PROGRESS)
        self.online_dir = os.path.join(seed_dir, rundir.ONLINE)
        os.makedirs(self.online_dir, exist_ok=True)
        self.columns: list[str] | None = None
        purge_step = None
        if resume_iteration is not None:
            self._truncate_after(resume_iteration)
            purge_step = resume_env_steps + 1  # TensorBoard hides events at or after this step
        from tensorboardX import SummaryWriter

        # a unique file per writer: tensorboardX names files by the second and opens them with
        # "wb", so a second writer within one second would otherwise erase the first one's events
        self.tb = SummaryWriter(os.path.join(seed_dir, rundir.TENSORBOARD), flush_secs=30, purge_step=purge_step,
                                filename_suffix=f".{time.time_ns()}")

    def _truncate_after(self, iteration: int) -> None:
        """Keep the rows up to `iteration` (they will not be produced again) and nothing else."""
        if not os.path.exists(self.path):
            return
        rows = read_rows(self.path)
        if not rows:
            os.remove(self.path)
            return
        self.columns = list(rows[0].keys())
        kept = [r for r in rows if int(float(r[ITERATION])) <= iteration]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_atomically(self.path, out.getvalue())
        for name in os.listdir(self.online_dir):  # curves of dropped evaluations go too
            if name.endswith(".npy") and _online_iteration(name) > iteration:
                os.remove(os.path.join(self.online_dir, name))

    def write(self, row: dict[str, float], online: dict[str, np.ndarray]) -> None:
        iteration = int(row[ITERATION])
        for name, values in online.items():  # before the row: a row never lacks its curves
            np.save(os.path.join(self.online_dir, f"{name}-iter{iteration:05d}.npy"), values)
        if self.columns is None:
            self.columns = list(row.keys())
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        if not os.path.exists(self.path):
            writer.writeheader()
        writer.writerow(row)
        text = out.getvalue()
        with open(self.path, "a", newline="") as f:
            if faults.due("progress"):  # tests: die with half a line on disk
                f.write(text[: len(text) // 2])
                f.flush()
                faults.die()
            f.write(text)
        step = int(row[ENV_STEPS])
        for name, value in scalars(row).items():
            self.tb.add_scalar(name, value, step)
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def scalars(row: dict) -> dict[str, float]:
    """The finite numbers of a progress row, under their TensorBoard (and wandb) names."""
    return {name.replace(" ", "_"): value for name, value in row.items()
            if isinstance(value, (int, float)) and math.isfinite(value)}


def tensorboard_scalars(seed_dir: str) -> dict[str, dict[int, float]]:
    """The scalars TensorBoard shows for a seed directory: tag -> {step: value}.

    Reads every event file in name (= creation) order and applies TensorBoard's restart rule: a
    session-start event at step s (what `purge_step` writes) hides every earlier event at a step
    >= s. A record cut short by a killed writer ends its file, as in TensorBoard.
    """
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    tb_dir = os.path.join(seed_dir, rundir.TENSORBOARD)
    out: dict[str, dict[int, float]] = {}
    for name in sorted(os.listdir(tb_dir)):
        with open(os.path.join(tb_dir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):  # record: u64 length, u32 crc, payload, u32 crc
            length = int.from_bytes(data[pos:pos + 8], "little")
            if pos + 12 + length + 4 > len(data):
                break
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for values in out.values():
                    for step in [s for s in values if s >= event.step]:
                        del values[step]
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
    return out


def _online_iteration(name: str) -> int:
    try:
        return int(name.rsplit("-iter", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return -1


class ProgressBar:
    """One self-overwriting line: iteration, env steps, the latest test return (mean and range
    over seeds), ETA."""

    def __init__(self, total_iterations: int, start_iteration: int, stream=sys.stderr):
        self.total, self.start = total_iterations, start_iteration
        self.t0 = time.perf_counter()
        self.stream = stream
        self.tty = stream.isatty()

    def update(self, iteration: int, env_steps, test_returns: np.ndarray | None) -> None:
        """env_steps, test_returns: each seed's env steps and latest test return."""
        done = iteration - self.start
        elapsed = time.perf_counter() - self.t0
        left = self.total - iteration
        eta = elapsed / done * left if done > 0 else float("nan")
        width = 24
        filled = int(width * iteration / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = (f"[{bar}] iter {iteration}/{self.total}  env steps {format_env_steps(env_steps)}  "
                f"test return {format_returns(test_returns)}  ETA {_fmt_seconds(eta)}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_returns(returns: np.ndarray | None) -> str:
    """'n/a', one seed's return, or the mean over seeds with their range."""
    if returns is None:
        return "n/a"
    returns = np.asarray(returns, dtype=float).ravel()
    if returns.size == 1:
        return f"{returns[0]:.2f}"
    return f"{returns.mean():.2f} [{returns.min():.2f}, {returns.max():.2f}] over {returns.size} seeds"


def format_env_steps(per_seed) -> str:
    """Env steps as a learning curve's x axis counts them: per seed, never summed over seeds."""
    steps = np.asarray(per_seed, dtype=np.int64).ravel()
    if steps.size == 1:
        return f"{steps[0]:,}"
    if steps.min() == steps.max():
        return f"{steps[0]:,} per seed"
    return f"{int(steps.mean()):,} per seed (mean; {steps.min():,} to {steps.max():,})"


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "--"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
