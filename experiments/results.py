"""Reading finished (or running) runs, averaging their seeds, and the numbers a reader wants first.

How seeds are put together (docs/results.md says the same for readers):
- Seeds of one run evaluate at the same iterations; only the iterations every seed has logged are
  used. Their env-step counts can differ a little (episodes that end early), so a curve is drawn
  by iteration, at the mean env-step count of the seeds: no interpolation on the curve.
- The band is a 95% percentile bootstrap of the mean over seeds: seeds are resampled with
  replacement (the same resample for the whole curve), from a fixed generator seed so the band
  is the same on every call. One seed gives no band.
- The table reads each seed's curve at fixed env-step counts by linear interpolation between its
  two neighbouring evaluations, then averages over seeds; a count outside a seed's evaluated
  range is "n/a" (never extrapolated). The reference is interpolated the same way.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from experiments import reference_curves, rundir
from experiments.progress import ENV_STEPS, ITERATION, TEST_RETURN

TABLE_STEPS = (100_000, 300_000, 1_000_000)
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
_COLUMNS_AT_ONCE = 256  # bootstrap memory: N_RESAMPLES x this many curve points at a time


class ResultsError(ValueError):
    """A run that cannot be read; its str is one line naming the directory or file."""


@dataclass(frozen=True)
class SeedCurve:
    """One seed's logged evaluations (complete progress.csv rows only)."""

    seed: int
    path: str
    config: dict
    iterations: np.ndarray  # int, increasing
    env_steps: np.ndarray
    returns: np.ndarray  # AverageReturn_all_test_tasks


@dataclass(frozen=True)
class Run:
    """A run directory: one seed, or several `seed-<s>/` seeds of the same task."""

    path: str
    label: str
    task: str
    seeds: tuple[SeedCurve, ...]

    def common(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(iterations, env_steps[seed, i], returns[seed, i]) over the iterations all seeds logged."""
        shared = set(self.seeds[0].iterations.tolist())
        for s in self.seeds[1:]:
            shared &= set(s.iterations.tolist())
        its = np.array(sorted(shared), dtype=int)
        pick = lambda s, a: a[np.searchsorted(s.iterations, its)]
        return (its, np.stack([pick(s, s.env_steps) for s in self.seeds]),
                np.stack([pick(s, s.returns) for s in self.seeds]))


def read_progress(path: str) -> list[dict[str, float]]:
    """The complete rows of a progress.csv; a last line cut off by a killed process is dropped."""
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row is complete only once its newline is written
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in (ITERATION, ENV_STEPS, TEST_RETURN) if c not in (reader.fieldnames or ())]
    if reader.fieldnames and missing:
        raise ResultsError(f"{path}: no column {missing[0]!r}; not a pearl-jax progress.csv")
    rows = []
    for r in reader:
        try:
            rows.append({c: float(r[c]) for c in (ITERATION, ENV_STEPS, TEST_RETURN)})
        except (TypeError, ValueError):
            continue  # a short or garbled row: not a finished evaluation
    return rows


def _load_seed(seed: int, path: str) -> SeedCurve:
    try:
        with open(os.path.join(path, rundir.CONFIG)) as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable {rundir.CONFIG} ({exc})") from None
    progress = os.path.join(path, rundir.PROGRESS)
    rows = read_progress(progress) if os.path.isfile(progress) else []
    rows = sorted({int(r[ITERATION]): r for r in rows}.values(), key=lambda r: r[ITERATION])
    return SeedCurve(
        seed=seed, path=path, config=config,
        iterations=np.array([int(r[ITERATION]) for r in rows], dtype=int),
        env_steps=np.array([r[ENV_STEPS] for r in rows], dtype=float),
        returns=np.array([r[TEST_RETURN] for r in rows], dtype=float),
    )


def load_run(path: str, label: str | None = None) -> Run:
    """Every seed of the run in `path`; ResultsError if it is no run or has no evaluation yet."""
    try:
        found = rundir.seed_dirs(path)
    except rundir.NotARunError as exc:
        raise ResultsError(str(exc)) from None
    seeds = tuple(_load_seed(s, d) for s, d in found)
    tasks = sorted({str(s.config.get("task")) for s in seeds})
    if len(tasks) > 1:
        raise ResultsError(f"{path}: seeds of different tasks ({', '.join(tasks)})")
    run = Run(path=path, label=label or os.path.basename(os.path.normpath(path)),
              task=tasks[0], seeds=seeds)
    if run.common()[0].size == 0:
        raise ResultsError(f"{path}: no evaluations yet (no complete row in {rundir.PROGRESS}"
                           + (" common to all seeds)" if len(seeds) > 1 else ")"))
    return run


def bootstrap_ci(samples: np.ndarray, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over axis 0 (seeds), per remaining entry.

    Each resample draws seeds with replacement and is shared by all entries, so a band along a
    curve comes from whole resampled curves. With one seed the interval is nan (no band).
    """
    x = np.asarray(samples, dtype=float)
    n, shape = x.shape[0], x.shape[1:]
    if n < 2:
        nan = np.full(shape, np.nan)
        return nan, nan.copy()
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    flat = x.reshape(n, -1)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    lo, hi = np.empty(flat.shape[1]), np.empty(flat.shape[1])
    for start in range(0, flat.shape[1], _COLUMNS_AT_ONCE):
        cols = slice(start, start + _COLUMNS_AT_ONCE)
        means = counts @ flat[:, cols] / n  # (n_resamples, columns)
        lo[cols], hi[cols] = np.quantile(means, q, axis=0)
    return lo.reshape(shape), hi.reshape(shape)


@dataclass(frozen=True)
class MeanCurve:
    env_steps: np.ndarray  # mean over seeds, per iteration
    mean: np.ndarray
    ci_low: np.ndarray  # nan with one seed
    ci_high: np.ndarray
    n_seeds: int


def mean_curve(run: Run) -> MeanCurve:
    """Mean test return over seeds per common iteration, with its bootstrap band."""
    _, steps, returns = run.common()
    lo, hi = bootstrap_ci(returns)
    return MeanCurve(steps.mean(axis=0), returns.mean(axis=0), lo, hi, len(run.seeds))


def at_step(env_steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """`values` linearly interpolated at `step`; nan outside the evaluated range."""
    if env_steps.size == 0 or not env_steps[0] <= step <= env_steps[-1]:
        return math.nan
    return float(np.interp(step, env_steps, values))


@dataclass(frozen=True)
class TableRow:
    """Ours against the official reference at one env-step count (nan = not reached: n/a)."""

    task: str
    run: str
    point: str  # "100k", ..., or "last common"
    env_steps: float
    n_seeds: int
    mean: float
    std: float  # sample std over seeds (nan with one seed)
    ci_low: float
    ci_high: float
    ref_mean: float
    ref_std: float
    ref_runs: int

    @property
    def diff_in_ref_std(self) -> float:
        """(ours - reference) / reference std: how many reference deviations apart."""
        return (self.mean - self.ref_mean) / self.ref_std if self.ref_std > 0 else math.nan


def _point_name(step: float) -> str:
    return f"{step / 1e6:g}M" if step >= 1e6 else f"{step / 1e3:g}k"


def table_rows(runs: list[Run], tasks: list[str], steps=TABLE_STEPS) -> list[TableRow]:
    """Rows for each task, each run of it (or none), each of `steps` and the last common point.

    The last common point is the largest step count every run of the task reaches (all its
    seeds) and the reference too, when the task has one.
    """
    rows = []
    for task in tasks:
        ref = reference_curves.curve(task)
        mine = [r for r in runs if r.task == task]
        ends = [run.common()[1][:, -1].min() for run in mine]
        if ref is not None:
            ends.append(ref.env_steps[-1])
        points = [(_point_name(s), float(s)) for s in steps]
        if ends:
            points.append(("last common", float(min(ends))))
        for run in mine or [None]:
            for name, step in points:
                rows.append(_row(task, run, name, step, ref))
    return rows


def _row(task, run, name, step, ref) -> TableRow:
    ref_mean = at_step(ref.env_steps, ref.mean, step) if ref else math.nan
    ref_std = at_step(ref.env_steps, ref.std, step) if ref else math.nan
    values = np.full(1, np.nan)
    if run is not None:
        _, seed_steps, seed_returns = run.common()
        values = np.array([at_step(s, r, step) for s, r in zip(seed_steps, seed_returns)])
    reached = not np.isnan(values).any()
    lo, hi = bootstrap_ci(values) if reached else (math.nan, math.nan)
    return TableRow(
        task=task, run=run.label if run else "-", point=name, env_steps=step,
        n_seeds=len(values) if run else 0,
        mean=float(values.mean()) if reached else math.nan,
        std=float(values.std(ddof=1)) if reached and len(values) > 1 else math.nan,
        ci_low=float(lo), ci_high=float(hi),
        ref_mean=ref_mean, ref_std=ref_std, ref_runs=ref.n_runs if ref else 0,
    )


_ONLINE_TEST = re.compile(r"^online-test-iter(\d+)\.npy$")  # progress.ProgressLog's file names


@dataclass(frozen=True)
class OnlineReturns:
    """Meta-test adaptation at one evaluation: mean return per trajectory index, per seed."""

    iteration: int
    returns: np.ndarray  # [seed, trajectory]
    num_exploration: int  # the first this many trajectories sample z from the prior


def _online_files(seed: SeedCurve) -> dict[int, str]:
    folder = os.path.join(seed.path, rundir.ONLINE)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return {int(m.group(1)): os.path.join(folder, n) for n in names if (m := _ONLINE_TEST.match(n))}


def online_returns(run: Run, iteration: int | None = None) -> OnlineReturns:
    """The test tasks' adaptation curve at `iteration` (default: the latest all seeds saved)."""
    files = [_online_files(s) for s in run.seeds]
    shared = sorted(set.intersection(*(set(f) for f in files)))
    if not shared:
        raise ResultsError(f"{run.path}: no online-test returns saved yet (in {rundir.ONLINE}/)")
    if iteration is None:
        iteration = shared[-1]
    elif iteration not in shared:
        raise ResultsError(f"--iteration={iteration}: {run.path} has online returns for iterations "
                           f"{_ranges(shared)}")
    try:
        curves = [np.load(f[iteration]).astype(float).ravel() for f in files]
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{run.path}: unreadable online returns of iteration {iteration} ({exc})") from None
    if len({c.size for c in curves}) > 1:
        raise ResultsError(f"{run.path}: seeds saved online returns of different lengths at iteration {iteration}")
    explore = int(run.seeds[0].config.get("num_exp_traj_eval", 0))
    return OnlineReturns(iteration, np.stack(curves), min(explore, curves[0].size))


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    parts, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur is None or cur != prev + 1:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)


_NA = "n/a"
TABLE_CSV_COLUMNS = ("task", "run", "point", "env_steps", "n_seeds", "mean", "std", "ci_low",
                     "ci_high", "ref_mean", "ref_std", "ref_runs", "diff_in_ref_std")


def _num(value: float, fmt: str = ".2f") -> str:
    return _NA if value is None or math.isnan(value) else format(value, fmt)


def _ours_text(r: TableRow) -> str:
    if math.isnan(r.mean):
        return _NA
    if r.n_seeds == 1:
        return f"{r.mean:.1f} (1 seed)"
    return f"{r.mean:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}] ({r.n_seeds} seeds)"


def table_markdown(rows: list[TableRow]) -> str:
    """The table as Markdown: ours = mean [95% bootstrap CI]; reference = mean ± std."""
    lines = [
        "| task | run | point | env steps | ours: mean [95% CI] | official: mean ± std"
        " | difference (official std) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = _NA if math.isnan(r.ref_mean) else f"{r.ref_mean:.1f} ± {r.ref_std:.1f} ({r.ref_runs} runs)"
        lines.append(f"| {r.task} | {r.run} | {r.point} | {r.env_steps:,.0f} | {_ours_text(r)} | {ref}"
                     f" | {_num(r.diff_in_ref_std, '+.2f')} |")
    return "\n".join(lines) + "\n"


def write_table(rows: list[TableRow], stem: str) -> tuple[str, str]:
    """Writes `<stem>.csv` (numbers, n/a where not reached) and `<stem>.md`; returns both paths."""
    csv_path, md_path = stem + ".csv", stem + ".md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TABLE_CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.task, r.run, r.point, f"{r.env_steps:.0f}", r.n_seeds,
                             _num(r.mean, ".6g"), _num(r.std, ".6g"), _num(r.ci_low, ".6g"),
                             _num(r.ci_high, ".6g"), _num(r.ref_mean, ".6g"), _num(r.ref_std, ".6g"),
                             r.ref_runs, _num(r.diff_in_ref_std, ".4g")])
    with open(md_path, "w") as f:
        f.write(table_markdown(rows))
    return csv_path, md_path
