"""Command line -> a fully resolved, validated run request, before anything is compiled or written.

    python -m experiments.run --task point-robot --preset cpu-small --meta_batch=8 --seed 3
    python -m experiments.run --task ant-dir --env.forward_backward=true
    python -m experiments.run --resume runs/point-robot-seed3-20250101-120000 --num_iterations 800

Resolution order: the task's reference config, then `--preset`, then field overrides. Every
PearlConfig field is a flag (`--field=value` or `--field value`; `-` and `_` both work in names).
With `--resume RUN_DIR` the config is the run's saved config.json and only the fields in
`RESUME_MUTABLE` may change: they extend or re-schedule a run without changing what it trains.
`python -m experiments.cli ARGS` prints the resolved config as JSON (a dry run).
"""
from __future__ import annotations

import difflib
import inspect
import math
import os
import sys
import time
from dataclasses import dataclass

import envs
from pearl_jax import placement
from experiments import rundir
from experiments.configs import PRESETS, apply_preset, get_config
from pearl_jax.config import (FIELDS, RESUME_MUTABLE, ConfigError, PearlConfig, fail,
                              format_value, from_json, validate)

# flags that are not config fields: what to run and where (placement never changes results
# beyond float32 reduction order, so it is chosen per launch, not saved with the run)
_RUN_FLAGS = ("task", "preset", "seed", "out_dir", "resume", "task_shards",
              "coordinator", "num_processes", "process_id", "wandb")
_BOOL_RUN_FLAGS = ("wandb",)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Distributed:
    """One process of several (jax.distributed); None fields are auto-detected by JAX."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


@dataclass(frozen=True)
class RunRequest:
    config: PearlConfig
    out_dir: str
    resume: str | None = None  # the run dir to continue; out_dir is then the same dir
    preset: str | None = None
    task_shards: int = 1  # devices that share one seed's gradient step (meta-batch axis)
    distributed: Distributed | None = None
    wandb: bool = False  # also log the scalars to Weights & Biases (experiments/wandb_log.py)


# --- parsing one value ------------------------------------------------------------------------

def _parse_scalar(kind: str, name: str, text: str):
    """Text -> value of `kind` (a PearlConfig field type such as 'int' or 'float | None')."""
    t = text.strip().lower()
    if kind.endswith(" | None") and t in ("none", "null"):
        return None
    base = kind.replace(" | None", "")
    if base == "bool":
        if t in _TRUE or t in _FALSE:
            return t in _TRUE
        fail(name, text, "must be a boolean (true/false/1/0/yes/no)")
    if base == "int":
        try:
            return int(t)
        except ValueError:
            fail(name, text, "must be an integer" + (" or none" if kind != base else ""))
    if base == "float":
        try:
            value = float(t)
        except ValueError:
            fail(name, text, "must be a number" + (" or none" if kind != base else ""))
        if not math.isfinite(value):
            fail(name, text, "must be a finite number")
        return value
    return text  # str


def parse_env_value(task: str, name: str, text: str):
    """An --env.NAME value, typed like the constructor's default for NAME."""
    flag = f"env.{name}"
    try:
        allowed = envs.allowed_overrides(task)
        params = inspect.signature(envs.env_class(task).__init__).parameters
    except ImportError as exc:
        fail(flag, text, f"cannot check overrides: env module of {task} does not import ({exc})")
    if name not in allowed:
        fail(flag, text, f"not an override of {task}; allowed: {', '.join(allowed) or 'none'}")
    default = params[name].default
    for kind in ("bool", "int", "float"):  # bool before int: bool is a subclass of int
        if type(default).__name__ == kind:
            return _parse_scalar(kind, flag, text)
    return _parse_scalar("str", flag, text)


# --- the command line -----------------------------------------------------------------------

def help_text(task: str | None = None) -> str:
    """Every flag with its type and default (the task's reference value when --task is known)."""
    known = task in envs.names()
    base = get_config(task) if known else PearlConfig()
    where = f"reference config of {task}" if known else "PearlConfig defaults"
    lines = [
        "usage: python -m experiments.run --task TASK [--preset NAME] [--FIELD=VALUE ...]",
        "       python -m experiments.run --resume RUN_DIR [--num_iterations N ...]",
        "",
        f"  --task TASK          one of: {', '.join(envs.names())}",
        f"  --preset NAME        reduced settings, not the reference: {', '.join(PRESETS)}",
        "  --out-dir DIR        default runs/<task>-seed<seed>-<YYYYmmdd-HHMMSS>; must not exist",
        "                       or be empty",
        f"  --resume RUN_DIR     continue a run; may change only: {', '.join(RESUME_MUTABLE)}",
        "  --env.NAME=VALUE     env constructor override (repeatable), see envs.allowed_overrides",
        "  --num_seeds N        train seeds seed .. seed+N-1 in one program (a config field)",
        "  --task_shards K      split each seed's meta-batch over K devices (data parallel);",
        "                       the seeds go over the remaining devices",
        "  --coordinator HOST:PORT --num_processes N --process_id I",
        "                       one process of a multi-host run (jax.distributed); on SLURM and",
        "                       cloud TPUs JAX detects these itself",
        "  --wandb              also log to Weights & Biases, one wandb run per seed (needs the",
        "                       wandb extra; WANDB_MODE=offline logs without network)",
        "",
        f"fields (defaults: {where}; bools take true/false/1/0/yes/no):",
    ]
    for name, kind in FIELDS.items():
        if name == "env_kwargs":
            continue
        lines.append(f"  --{name:<32} {kind:<13} default {format_value(getattr(base, name))}")
    return "\n".join(lines)


def _tokens(argv: list[str]) -> list[tuple[str, str | None]]:
    """argv -> (flag name normalised to underscores, value or None) pairs."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("-h", "--help"):
            out.append(("help", None))
            i += 1
            continue
        if not tok.startswith("--") or tok == "--":
            raise ConfigError(f"{tok}: unexpected argument; flags are --field=value")
        name, eq, value = tok[2:].partition("=")
        name = name.replace("-", "_")
        if not eq:
            bool_flag = FIELDS.get(name) == "bool" or name in _BOOL_RUN_FLAGS
            if i + 1 < len(argv) and not (bool_flag and argv[i + 1].startswith("--")):
                value = argv[i + 1]
                i += 1
            elif bool_flag:
                value = "true"  # a bare bool flag switches it on
            else:
                raise ConfigError(f"--{name}: needs a value (--{name}=VALUE)")
        out.append((name, value))
        i += 1
    return out


def _unknown(name: str, value: str, run_flags_allowed=_RUN_FLAGS):
    if name == "env_kwargs":
        fail(name, value, "set env overrides one at a time as --env.NAME=VALUE")
    close = difflib.get_close_matches(name, list(FIELDS) + list(run_flags_allowed), n=3)
    hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
    fail(name, value, "unknown field" + hint)


def _split_flags(argv: list[str], run_flags_allowed) -> tuple[dict, dict, dict]:
    """argv -> (run flags, config fields, env overrides) as text, each given at most once."""
    run_flags: dict[str, str] = {}
    fields: dict[str, str] = {}
    env_text: dict[str, str] = {}
    for name, value in _tokens(argv):
        if name.startswith("env."):
            target, key = env_text, name[4:]
        elif name in run_flags_allowed:
            target, key = run_flags, name
        elif name in FIELDS and name != "env_kwargs":
            target, key = fields, name
        else:
            _unknown(name, value, run_flags_allowed)
        if key in target:
            fail(name, value, f"given twice (first as --{name}={target[key]})")
        target[key] = value
    return run_flags, fields, env_text


def _new_config(run_flags: dict, fields: dict, env_text: dict, default_task: str | None = None) -> PearlConfig:
    """The task's reference config, then --preset, then field and --env.* overrides, validated."""
    task = run_flags.get("task", default_task)
    if task is None:
        raise ConfigError(f"--task: required; valid: {', '.join(envs.names())}")
    config = get_config(task)
    if "preset" in run_flags:
        config = apply_preset(config, run_flags["preset"])
    values = {n: _parse_scalar(FIELDS[n], n, t) for n, t in fields.items()}
    if "seed" in run_flags:
        values["seed"] = _parse_scalar("int", "seed", run_flags["seed"])
    given = set(fields) | {k for k in ("task", "seed") if k in run_flags}
    kw = {k: parse_env_value(config.task, k, t) for k, t in env_text.items()}
    if kw:
        values["env_kwargs"] = tuple(sorted(kw.items()))
        given.add("env_kwargs")
    return validate(config.replace(**values), given)


def parse_config_flags(argv: list[str], extra: dict[str, tuple[str, object]], default_task: str) -> tuple[PearlConfig, dict]:
    """For benchmarks and tools: the run command's config flags (--task, --preset, --seed,
    --env.NAME, every field) plus `extra` flags, name -> (PearlConfig-style type, default).
    Returns (validated config, extra values). Raises ConfigError like the run command."""
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(default_task))
        print("\nbenchmark flags:\n" + "\n".join(f"  --{n:<32} {k:<13} default {format_value(d)}"
                                                 for n, (k, d) in extra.items()))
        raise SystemExit(0)
    run_flags, fields, env_text = _split_flags(argv, ("task", "preset", "seed", *extra))
    own = {n: (_parse_scalar(kind, n, run_flags[n]) if n in run_flags else default)
           for n, (kind, default) in extra.items()}
    return _new_config(run_flags, fields, env_text, default_task), own


def parse_command_line(argv: list[str]) -> RunRequest:
    """Resolve and validate a run from argv; reads at most RUN_DIR/config.json, writes nothing.

    Raises ConfigError (one line) on any problem; `--help` prints and raises SystemExit(0).
    """
    if any(a in ("-h", "--help") for a in argv):
        task = dict((n, v) for n, v in _tokens([a for a in argv if a not in ("-h", "--help")]))
        print(help_text(task.get("task")))
        raise SystemExit(0)
    run_flags, fields, env_text = _split_flags(argv, _RUN_FLAGS)
    if "resume" in run_flags:
        config, out_dir = _resumed(run_flags, fields, env_text)
    else:
        config = _new_config(run_flags, fields, env_text)
        multi = "coordinator" in run_flags or placement.cluster_detected()
        if multi and "out_dir" not in run_flags:
            raise ConfigError("--out_dir: required for a multi-process run (every process must name "
                              "the same directory)")
        out_dir = run_flags.get("out_dir") or os.path.join(
            "runs", f"{config.task}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        if not multi:  # several processes: process 0 checks, since it may already have begun
            check_new_run_dir(out_dir)
    task_shards = _parse_positive(run_flags, "task_shards", 1)
    if config.meta_batch % task_shards:
        fail("task_shards", task_shards, f"must divide meta_batch ({config.meta_batch}): each "
             "device takes an equal share of the meta-batch")
    return RunRequest(config=config, out_dir=out_dir, resume=run_flags.get("resume"),
                      preset=run_flags.get("preset"), task_shards=task_shards,
                      distributed=_distributed(run_flags), wandb=_wandb(run_flags))


def _wandb(run_flags) -> bool:
    """--wandb, checked for the package before anything is compiled."""
    on = "wandb" in run_flags and _parse_scalar("bool", "wandb", run_flags["wandb"])
    if on:
        from experiments import wandb_log

        if not wandb_log.available():
            fail("wandb", run_flags["wandb"], "needs the wandb package: pip install 'pearl-jax[wandb]'")
    return on


def check_new_run_dir(out_dir: str) -> None:
    """A new run's directory must not exist, or be an empty directory (a lock file alone that
    nobody holds counts as empty: a start killed before it wrote anything)."""
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not rundir.holds_only_a_free_lock(out_dir):
        fail("out_dir", out_dir, "exists and is not empty; use --resume to continue a run")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        fail("out_dir", out_dir, "exists and is not a directory")


def _parse_positive(run_flags, name, default):
    if name not in run_flags:
        return default
    value = _parse_scalar("int", name, run_flags[name])
    if value < 1:
        fail(name, value, "must be a positive integer")
    return value


def _distributed(run_flags) -> Distributed | None:
    """The multi-process trio: all three given, or none (JAX then auto-detects a cluster)."""
    trio = ("coordinator", "num_processes", "process_id")
    given = [n for n in trio if n in run_flags]
    if not given:
        return None
    if len(given) != 3:
        missing = [n for n in trio if n not in run_flags]
        fail(given[0], run_flags[given[0]], f"needs {', '.join('--' + m for m in missing)} too")
    coordinator = run_flags["coordinator"]
    host, colon, port = coordinator.rpartition(":")
    if not colon or not host or not port.isdigit():
        fail("coordinator", coordinator, "must be HOST:PORT, e.g. 10.0.0.1:1234")
    n = _parse_positive(run_flags, "num_processes", None)
    pid = _parse_scalar("int", "process_id", run_flags["process_id"])
    if not 0 <= pid < n:
        fail("process_id", pid, f"must be in [0, {n}) for --num_processes={n}")
    return Distributed(coordinator, n, pid)


def read_run_config(run_dir: str, flag: str = "resume") -> PearlConfig:
    """The config saved in RUN_DIR/config.json; a one-line ConfigError when it is missing or
    unreadable (naming the run dir and what is wrong)."""
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        fail(flag, run_dir, "no readable config.json in that directory")
    try:
        return from_json(text)
    except ConfigError as exc:
        fail(flag, run_dir, f"{path}: {exc}")


def _resumed(run_flags, fields, env_text) -> tuple[PearlConfig, str]:
    run_dir = run_flags["resume"]
    for flag in ("preset", "out_dir"):
        if flag in run_flags:
            fail(flag, run_flags[flag], "cannot be used with --resume (the run dir holds the "
                 "resolved config and is the output dir)")
    if env_text:
        k = next(iter(env_text))
        fail(f"env.{k}", env_text[k], "cannot change when resuming")
    saved = read_run_config(run_dir)
    changes = {n: _parse_scalar(FIELDS[n], n, t) for n, t in fields.items()}
    for flag in ("task", "seed"):
        if flag in run_flags:
            changes[flag] = _parse_scalar(FIELDS[flag], flag, run_flags[flag])
    for n, v in changes.items():
        if n not in RESUME_MUTABLE and v != getattr(saved, n):
            fail(n, v, f"cannot change when resuming (saved: {format_value(getattr(saved, n))}); "
                 f"only {', '.join(RESUME_MUTABLE)} may")
    return validate(saved.replace(**changes), set(changes)), run_dir


def main_error_exit(exc: BaseException) -> None:
    """Report a bad command line like argparse does: one line on stderr, exit status 2."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def parse_or_exit(argv: list[str] | None = None) -> RunRequest:
    try:
        return parse_command_line(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        main_error_exit(exc)


if __name__ == "__main__":
    from pearl_jax.config import to_json

    request = parse_or_exit()
    print(to_json(request.config))
    print(f"out_dir: {request.out_dir}" + (" (resume)" if request.resume else ""))
