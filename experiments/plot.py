"""Learning curves against the published PEARL runs, the numbers at fixed env steps, online adaptation.

    python -m experiments.plot RUN_DIR [RUN_DIR ...] [--out curves.png] [--log-x] [--table]
    python -m experiments.plot RUN_DIR --online [--iteration K] [--out online.png]
    python -m experiments.plot --task cheetah-vel,ant-dir --out reference.png   # reference only
    python -m experiments.plot RUN_DIR --posterior --task-id K [--seed S] [--out posterior.png]

One panel per task. A RUN_DIR is a single-seed run or a multi-seed run (seed-<s>/ sub-directories);
its curve is the mean over seeds with a 95% percentile-bootstrap band (docs/results.md).
`--posterior` draws one adaptation run of a trained point robot from its newest checkpoint
(experiments/belief.py). Figures
are drawn with matplotlib's Agg canvas: no display is needed. Bad input prints one line
`error: ...` on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from experiments import reference_curves, results
from experiments.configs import task_names

FORMATS = (".png", ".svg", ".pdf")
_BASELINE_STYLE = {"ProMP": ("tab:brown", "--"), "MAML": ("tab:purple", ":"), "RL2": ("tab:olive", "-.")}
_REFERENCE_COLOR = "0.2"


class UsageError(ValueError):
    """A bad command line; its str is one line."""


def _steps_text(x: float, _pos=None) -> str:
    if x >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if x >= 1e3 else f"{x:g}"


def _panels(n: int) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _band_text(n_seeds: int) -> str:
    if n_seeds == 1:
        return "1 seed, no band"
    return f"mean of {n_seeds} seeds, {results.CONFIDENCE:.0%} bootstrap CI"


def curves_figure(runs: list[results.Run], tasks: list[str], reference: bool = True,
                  log_x: bool = False) -> Figure:
    """Test return against env steps, one panel per task: our runs, the official curve, baselines."""
    fig, axes = _panels(len(tasks))
    colors = {id(run): f"C{i}" for i, run in enumerate(runs)}
    for ax, task in zip(axes, tasks):
        mine = [r for r in runs if r.task == task]
        for run in mine:
            c = results.mean_curve(run)
            ax.plot(c.env_steps, c.mean, color=colors[id(run)], lw=1.8,
                    label=f"{run.label} ({_band_text(c.n_seeds)})")
            if c.n_seeds > 1:
                ax.fill_between(c.env_steps, c.ci_low, c.ci_high, color=colors[id(run)], alpha=0.25, lw=0)
        has_curve = bool(mine)
        if reference:
            has_curve |= _draw_reference(ax, task)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("meta-test return")
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(_steps_text))
        if not has_curve:  # baselines' final returns only: no step axis to show
            ax.set_xticks([])
            ax.set_xticks([], minor=True)
            ax.set_xlabel("no curve published: baselines' final returns only")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return fig


def _draw_reference(ax, task: str) -> bool:
    """The official curve and the baselines' final returns; True if there was a curve."""
    ref = reference_curves.curve(task)
    if ref is not None:
        ax.plot(ref.env_steps, ref.mean, color=_REFERENCE_COLOR, lw=1.4,
                label=f"PEARL paper (official, mean ± std of {ref.n_runs} runs)")
        ax.fill_between(ref.env_steps, ref.mean - ref.std, ref.mean + ref.std,
                        color=_REFERENCE_COLOR, alpha=0.15, lw=0)
    for name, base in reference_curves.baseline_finals(task).items():
        color, style = _BASELINE_STYLE[name]
        ax.axhline(base.mean, color=color, ls=style, lw=1.2,
                   label=f"{name} final, after {base.env_steps / 1e6:.0f}M steps ({base.n_runs} runs)")
    return ref is not None


def online_figure(runs: list[results.Run], iteration: int | None = None) -> Figure:
    """Mean return per trajectory of the meta-test adaptation runs, prior-z trajectories hollow."""
    tasks = list(dict.fromkeys(r.task for r in runs))
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        explore = set()
        for i, run in enumerate(runs):
            if run.task != task:
                continue
            data = results.online_returns(run, iteration)
            mean = data.returns.mean(axis=0)
            x = np.arange(1, mean.size + 1)
            color = f"C{i}"
            n = data.returns.shape[0]
            ax.plot(x, mean, "o-", color=color, lw=1.6,
                    label=f"{run.label}, iteration {data.iteration} ({_band_text(n)})")
            k = data.num_exploration
            ax.plot(x[:k], mean[:k], "o", color=color, mfc="white", mew=1.6)
            if n > 1:
                lo, hi = results.bootstrap_ci(data.returns)
                ax.fill_between(x, lo, hi, color=color, alpha=0.25, lw=0)
            explore.add(k)
        if len(explore) == 1 and (k := explore.pop()) > 0:
            ax.axvspan(0.5, k + 0.5, color="0.85", zorder=0,
                       label=f"trajectories 1-{k}: z from the prior (exploration)" if k > 1
                       else "trajectory 1: z from the prior (exploration)")
        ax.set_title(f"{task}: online adaptation on test tasks")
        ax.set_xlabel("trajectory (hollow: z sampled from the prior)")
        ax.set_ylabel("mean return per trajectory")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return fig


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and a second line
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.plot",
                description="Learning curves of pearl-jax runs against the published PEARL runs.")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="single-seed or multi-seed run directories")
    p.add_argument("--out", help="figure file: .png (default), .svg or .pdf "
                                 "(default: curves.png, or online.png with --online)")
    p.add_argument("--task", action="append", default=[], metavar="TASK[,TASK]",
                   help="panels for these tasks only; with no RUN_DIR, the reference alone")
    p.add_argument("--no-reference", action="store_true",
                   help="leave the official curve and baselines out of the figure (the table keeps them)")
    p.add_argument("--log-x", action="store_true", help="logarithmic env-step axis, as the paper's Figure 3")
    p.add_argument("--table", action="store_true",
                   help="print the returns at 100k, 300k, 1M env steps and the last common point, and "
                        "write them next to --out as <name>-table.csv and <name>-table.md")
    p.add_argument("--online", action="store_true",
                   help="mean return per trajectory of the meta-test adaptation runs instead of curves")
    p.add_argument("--iteration", type=int, metavar="K", help="with --online: this evaluation, not the latest")
    p.add_argument("--posterior", action="store_true",
                   help="point robots: the trajectories of one meta-test adaptation run and the belief after "
                        "each, from the run's newest checkpoint (default --out posterior.png)")
    p.add_argument("--task-id", type=int, metavar="K",
                   help="with --posterior: the test task, an index 0..n_test-1 into the run's test tasks")
    p.add_argument("--seed", type=int, metavar="S",
                   help="with --posterior: this seed of a multi-seed run (default: its first)")
    return p


def _out_path(given: str | None, default: str) -> str:
    path = given or default
    root, suffix = os.path.splitext(path)
    if not suffix:
        return path + ".png"
    if suffix.lower() not in FORMATS:
        raise UsageError(f"--out={path}: unsupported format {suffix!r}; use {', '.join(FORMATS)}")
    return path


def _tasks(given: list[str]) -> list[str]:
    tasks = list(dict.fromkeys(t.strip() for group in given for t in group.split(",") if t.strip()))
    for t in tasks:
        if t not in task_names():
            raise UsageError(f"--task={t}: unknown task; valid: {', '.join(task_names())}")
    return tasks


def _load_runs(paths: list[str]) -> list[results.Run]:
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    return [results.load_run(p, label=name if names.count(name) == 1 else os.path.normpath(p))
            for p, name in zip(paths, names)]


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.posterior:
        return _posterior(args)
    for flag, value in (("--task-id", args.task_id), ("--seed", args.seed)):
        if value is not None:
            raise UsageError(f"{flag}={value}: only meaningful with --posterior")
    tasks = _tasks(args.task)
    if args.iteration is not None and not args.online:
        raise UsageError(f"--iteration={args.iteration}: only meaningful with --online")
    if not args.runs and (args.online or not tasks):
        raise UsageError("no RUN_DIR given" + ("" if args.online else " (or --task to draw the reference alone)"))
    out = _out_path(args.out, "online.png" if args.online else "curves.png")
    runs = _load_runs(args.runs)
    if tasks:
        for r in runs:
            if r.task not in tasks:
                print(f"note: {r.path} (task {r.task}) left out by --task", file=sys.stderr)
        runs = [r for r in runs if r.task in tasks]
    else:
        tasks = list(dict.fromkeys(r.task for r in runs))
    if args.online:
        if not runs:
            raise UsageError(f"--online: no run of task {', '.join(tasks)} given")
        fig = online_figure(runs, args.iteration)
    else:
        for task in tasks:
            has_reference = reference_curves.curve(task) or reference_curves.baseline_finals(task)
            if not any(r.task == task for r in runs) and (args.no_reference or not has_reference):
                raise UsageError(f"--task={task}: nothing to draw (no run of it given"
                                 + (")" if args.no_reference else " and no published reference)"))
        fig = curves_figure(runs, tasks, reference=not args.no_reference, log_x=args.log_x)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=150)
    print(f"wrote {out}")
    if args.table:
        rows = results.table_rows(runs, tasks)
        print(results.table_markdown(rows), end="")
        for path in results.write_table(rows, os.path.splitext(out)[0] + "-table"):
            print(f"wrote {path}")
    return 0


def _posterior(args) -> int:
    """The posterior-sampling figure of one run (experiments/belief.py)."""
    others = [f for f, on in (("--online", args.online), ("--table", args.table), ("--log-x", args.log_x),
                              ("--task", args.task), ("--iteration", args.iteration is not None)) if on]
    if others:
        raise UsageError(f"{others[0]}: not with --posterior")
    if len(args.runs) != 1:
        raise UsageError(f"--posterior: give exactly one RUN_DIR (got {len(args.runs)})")
    if args.task_id is None:
        raise UsageError("--posterior: needs --task-id K, an index into the run's test tasks")
    out = _out_path(args.out, "posterior.png")
    from experiments import belief, trained  # jax and the envs, needed by this figure only

    path = args.runs[0]
    config = trained.read_config(path)
    if config.task not in trained.POINT_TASKS:
        raise UsageError(f"--posterior: drawn for {' and '.join(trained.POINT_TASKS)} only; {path} is a "
                         f"{config.task} run (watch it with python -m experiments.render {path} --task-id K)")
    trained.pick_seed(config, args.seed, path)
    trained.check_task_index(config, args.task_id)
    policy = trained.load(path, args.seed, config)
    run = trained.adaptation_run(policy, args.task_id)
    probe = belief.training_probe(policy)
    fig = belief.posterior_figure(run, probe, policy)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")  # equal-aspect panels leave margins
    print(f"wrote {out}: seed {policy.seed}, checkpoint of iteration {policy.iteration}, test task "
          f"{args.task_id}, {run.num_trajs} trajectories; probe error {probe.cv_error:.3f} "
          f"(chance {probe.chance_error:.3f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except (UsageError, results.ResultsError, OSError) as exc:  # trained.TrainedError is a ResultsError
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
