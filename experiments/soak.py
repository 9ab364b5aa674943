"""Kill a small run again and again, resume it each time, and check it ends as if never killed.

    python -m experiments.soak --task=point-robot --kills=20 --seed=0 [--num_seeds=2]
                               [--num_iterations=N] [--keep]

First trains an uninterrupted reference run. Then trains the same run in processes that are
SIGKILLed at moments drawn from `--seed`: halfway through writing a progress.csv row, while a
checkpoint's files are being written, or after a random delay; each next process resumes
(`--resume`), until `--kills` kills have landed. The run is long enough that it rarely ends
first (`--num_iterations`, default 2 x kills + 2). A final process finishes the run. Then every
logged value must equal the reference's: progress.csv rows (timing columns aside), the scalars
TensorBoard shows, the online-adaptation curves, and the final checkpoint's state (its per-leaf
fingerprints).

Prints one JSON object with what was checked; exit status 0 when everything matched, 1 if not.
Runs use the `--preset=tiny` config (seconds per process once compiled).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from experiments import faults, progress, rundir

TIMING = {"Wall seconds", "Compile seconds"}
_TINY = ["--preset=tiny", "--rl_buffer_capacity=400", "--enc_buffer_capacity=60"]


# --- one killed process ----------------------------------------------------------------------

def run_process(args: list[str], env: dict, kill: str | None = None, run_dir: str | None = None,
                timeout: float = 600) -> dict:
    """Run `python -m experiments.run ARGS`, killed as `kill` says: 'save:N' / 'progress:N'
    (the process kills itself there, see experiments/faults.py), 'time:SECONDS' (SIGKILL after
    that long; for a new run counted from when its config.json exists), or None.
    Returns {'returncode', 'output', 'kill'} plus what the kill left behind."""
    env = dict(env)
    env.pop(faults.ENV, None)
    if kill and kill.split(":")[0] in faults.KINDS:
        env[faults.ENV] = kill
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        if kill and kill.startswith("time:"):
            config = os.path.join(run_dir, rundir.CONFIG)
            deadline = time.monotonic() + timeout
            while not os.path.exists(config) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            try:
                proc.wait(timeout=float(kill.split(":")[1]))
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=timeout)
        out.seek(0)
        text = out.read()
    return {"kill": kill, "returncode": proc.returncode, "output": text, **aftermath(run_dir)}


def aftermath(run_dir: str | None) -> dict:
    """What a process left: an unfinished checkpoint, a progress file with a partial last line."""
    if run_dir is None or not os.path.isdir(run_dir):
        return {"mid_save": False, "partial_line": False}
    ckpt = rundir.checkpoint_dir(run_dir)
    mid_save = os.path.isdir(ckpt) and any("tmp" in name for name in os.listdir(ckpt))
    partial = False
    for d in [run_dir] + [os.path.join(run_dir, n) for n in os.listdir(run_dir) if n.startswith("seed-")]:
        path = os.path.join(d, rundir.PROGRESS)
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                partial |= f.read(1) != b"\n"
    return {"mid_save": mid_save, "partial_line": partial}


def killed_runs(run_dir: str, new_run_args: list[str], kills: list[str], env: dict,
                enough: int | None = None) -> list[dict]:
    """Start the run in `run_dir` and resume it after each kill in `kills` (one process per
    kill; the first is the new run, later ones `--resume`). Stops early when a process finishes
    the run before its kill comes, or once `enough` kills have landed. Every process must exit
    by SIGKILL or finish (status 0)."""
    results = []
    for kill in kills:
        if enough is not None and sum(r["returncode"] == -9 for r in results) >= enough:
            break
        args = (["--resume", run_dir] if os.path.exists(os.path.join(run_dir, rundir.CONFIG))
                else new_run_args + [f"--out-dir={run_dir}"])
        r = run_process(args, env, kill=kill, run_dir=run_dir)
        r["resumed"] = args[0] == "--resume"
        results.append(r)
        if r["returncode"] not in (0, -9):
            raise RuntimeError(f"a process ({kill}) exited with {r['returncode']}:\n{r['output'][-3000:]}")
        if r["returncode"] == 0:
            break
    return results


# --- comparing two runs ----------------------------------------------------------------------

def compare_runs(run_dir: str, reference: str) -> dict:
    """Counts of what was compared, and 'equal' (every logged value and the final state)."""
    mismatches: list[str] = []
    rows = scalars = curves = 0
    for seed, d in rundir.seed_dirs(reference):
        other = os.path.join(run_dir, os.path.relpath(d, reference))
        a, b = _rows(other), _rows(d)
        rows += len(b)
        if a != b:
            mismatches.append(f"seed {seed}: progress.csv rows differ ({len(a)} vs {len(b)} rows)")
        ta, tb = (_untimed(progress.tensorboard_scalars(x)) for x in (other, d))
        scalars += sum(len(v) for v in tb.values())
        if ta != tb:
            mismatches.append(f"seed {seed}: TensorBoard scalars differ")
        names_a, names_b = (sorted(os.listdir(os.path.join(x, rundir.ONLINE))) for x in (other, d))
        if names_a != names_b:
            mismatches.append(f"seed {seed}: online curve files differ")
        for name in set(names_a) & set(names_b):
            curves += 1
            if not np.array_equal(np.load(os.path.join(other, rundir.ONLINE, name)),
                                  np.load(os.path.join(d, rundir.ONLINE, name))):
                mismatches.append(f"seed {seed}: online/{name} differs")
    fa, fb = final_fingerprints(run_dir), final_fingerprints(reference)
    if fa != fb:
        mismatches.append(f"final checkpoint differs (step {fa[0]} vs {fb[0]}, or its state)")
    return {"rows_compared": rows, "tensorboard_values_compared": scalars, "online_curves_compared": curves,
            "final_state_leaves_compared": len(fb[1]), "equal": not mismatches, "mismatches": mismatches}


def final_fingerprints(run_dir: str) -> tuple[int, list[int]]:
    """(newest step, its per-leaf fingerprints), read from the checkpoint's metadata file."""
    ckpt = rundir.checkpoint_dir(run_dir)
    step = max(int(n) for n in os.listdir(ckpt) if n.isdigit())
    with open(os.path.join(ckpt, str(step), "meta", "metadata")) as f:
        return step, json.load(f)["fingerprints"]


def _rows(seed_dir: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in progress.read_rows(os.path.join(seed_dir, rundir.PROGRESS))]


def _untimed(tb: dict) -> dict:
    return {tag: values for tag, values in tb.items() if tag.replace("_", " ") not in TIMING}


# --- the soak --------------------------------------------------------------------------------

def plan_kills(rng: random.Random, kills: int, max_delay: float) -> list[str]:
    """`kills` kill moments, each mid-row, mid-save or timed (up to `max_delay` seconds); small
    counts, so that a process dies within its first few iterations."""
    plan = []
    for _ in range(kills):
        kind = rng.choice(["progress", "save", "time"])
        plan.append(f"time:{rng.uniform(0.0, max_delay):.2f}" if kind == "time" else f"{kind}:{rng.randint(1, 3)}")
    return plan


def soak(task: str, kills: int, seed: int, num_seeds: int, num_iterations: int, work: str, env: dict) -> dict:
    t0 = time.perf_counter()
    args = [f"--task={task}", *_TINY, f"--num_seeds={num_seeds}", f"--num_iterations={num_iterations}"]
    reference, run_dir = os.path.join(work, "reference"), os.path.join(work, "killed")
    ref = run_process(args + [f"--out-dir={reference}"], env)
    if ref["returncode"] != 0:
        raise RuntimeError(f"the reference run failed:\n{ref['output'][-3000:]}")
    # timed kills fall within a process's start and first three iterations, as the reference
    # took them (its rows' wall seconds and what it spent outside them), less its compilation
    # (later processes find the programs in the compilation cache)
    rows = progress.read_rows(os.path.join(rundir.seed_dirs(reference)[0][1], rundir.PROGRESS))
    wall, third = float(rows[-1]["Wall seconds"]), rows[min(3, len(rows)) - 1]
    max_delay = (time.perf_counter() - t0 - wall) + float(third["Wall seconds"]) - float(third["Compile seconds"])
    plan = plan_kills(random.Random(seed), 3 * kills, max_delay)  # more than needed: some miss
    results = killed_runs(run_dir, args, plan, env, enough=kills)
    if results[-1]["returncode"] != 0:  # the last kill landed: one more process finishes
        results.append({**run_process(["--resume", run_dir], env, run_dir=run_dir), "resumed": True})
    if results[-1]["returncode"] != 0:
        raise RuntimeError(f"the final resume failed:\n{results[-1]['output'][-3000:]}")
    landed = [r for r in results if r["returncode"] == -9]
    report = {
        "task": task, "seed": seed, "num_seeds": num_seeds, "num_iterations": num_iterations,
        "kills": [r["kill"] for r in results if r["kill"]], "kills_landed": len(landed),
        "max_delay_seconds": round(max_delay, 1),
        "landed_by_kind": {k: sum(r["kill"].startswith(k) for r in landed) for k in ("progress", "save", "time")},
        "left_mid_save": sum(r["mid_save"] for r in landed),
        "left_partial_line": sum(r["partial_line"] for r in landed),
        "processes": len(results),
        "fresh_starts": sum("starting afresh" in r["output"] for r in results),
        "unreadable_warnings": sum(r["output"].count("is unreadable") for r in results),
        **compare_runs(run_dir, reference),
    }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


_FLAGS = {"task": "point-robot", "kills": 20, "seed": 0, "num_seeds": 1, "num_iterations": 0, "keep": False}


def parse(argv: list[str]) -> dict:
    """--task, --kills, --seed, --num_seeds, --num_iterations, --keep; a one-line error otherwise."""
    from experiments.configs import task_names

    flags = dict(_FLAGS)
    for arg in argv:
        name, eq, value = arg.removeprefix("--").partition("=")
        name = name.replace("-", "_")
        if not arg.startswith("--") or name not in flags:
            raise ValueError(f"{arg}: unknown flag; valid: {', '.join('--' + f for f in _FLAGS)}")
        if name == "task":
            if value not in task_names():
                raise ValueError(f"--task={value}: unknown task; valid: {', '.join(task_names())}")
            flags[name] = value
        elif name == "keep":
            flags[name] = value.lower() in ("", "true", "1", "yes")
        else:
            lowest = 0 if name in ("seed", "num_iterations") else 1
            if not value.lstrip("-").isdigit() or int(value) < lowest:
                raise ValueError(f"--{name}={value}: must be an integer >= {lowest}")
            flags[name] = int(value)
    return flags


def main(argv: list[str] | None = None) -> int:
    from experiments.run import use_compilation_cache

    try:
        flags = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    flags["num_iterations"] = flags["num_iterations"] or 2 * flags["kills"] + 2  # 0: room for every kill
    use_compilation_cache()
    import jax

    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir)
    work = tempfile.mkdtemp(prefix="pearl-soak-")
    try:
        report = soak(flags["task"], flags["kills"], flags["seed"], flags["num_seeds"], flags["num_iterations"],
                      work, env)
    finally:
        if not flags["keep"]:
            shutil.rmtree(work, ignore_errors=True)
    if flags["keep"]:
        report["work_dir"] = work
    print(json.dumps(report, indent=1))
    return 0 if report["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
