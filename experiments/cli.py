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

import dataclasses
import difflib
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import envs
from experiments.configs import PRESETS, TASK_FAMILIES, ConfigError, apply_preset, get_config
from pearl_jax.config import PearlConfig

FIELDS: dict[str, str] = {f.name: f.type for f in dataclasses.fields(PearlConfig)}
RESUME_MUTABLE = ("num_iterations", "eval_every", "checkpoint_every", "keep_checkpoints")
_RUN_FLAGS = ("task", "preset", "seed", "out_dir", "resume")
# env constructor arguments that resize the task set (plus n_tasks where train = test), so the
# config's counts follow them
_TRAIN_COUNT_KWARGS = ("n_train", "n_train_tasks")
_EVAL_COUNT_KWARGS = ("n_test", "n_test_tasks", "n_eval", "n_eval_tasks")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class RunRequest:
    config: PearlConfig
    out_dir: str
    resume: str | None = None  # the run dir to continue; out_dir is then the same dir
    preset: str | None = None


def _fmt(value) -> str:
    """A value as a user would type it, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(f"{k}={_fmt(v)}" for k, v in value) if _is_pairs(value) else str(value)
    return str(value).replace("\n", "\\n")


def _is_pairs(value) -> bool:
    return all(isinstance(p, tuple) and len(p) == 2 for p in value)


def _fail(name: str, value, why: str):
    raise ConfigError(f"--{name}={_fmt(value)}: {why}")


# --- parsing and checking one value --------------------------------------------------------

def _parse_scalar(kind: str, name: str, text: str):
    """Text -> value of `kind` ('int', 'float', 'bool', 'str', 'float | None')."""
    t = text.strip().lower()
    if kind == "bool":
        if t in _TRUE or t in _FALSE:
            return t in _TRUE
        _fail(name, text, "must be a boolean (true/false/1/0/yes/no)")
    if kind == "int":
        try:
            return int(t)
        except ValueError:
            _fail(name, text, "must be an integer")
    if kind in ("float", "float | None"):
        if kind != "float" and t in ("none", "null"):
            return None
        try:
            value = float(t)
        except ValueError:
            _fail(name, text, "must be a number" + (" or none" if kind != "float" else ""))
        if not math.isfinite(value):
            _fail(name, text, "must be a finite number")
        return value
    return text  # str


def parse_env_value(task: str, name: str, text: str):
    """An --env.NAME value, typed like the constructor's default for NAME."""
    flag = f"env.{name}"
    try:
        allowed = envs.allowed_overrides(task)
        params = inspect.signature(envs.env_class(task).__init__).parameters
    except ImportError as exc:
        _fail(flag, text, f"cannot check overrides: env module of {task} does not import ({exc})")
    if name not in allowed:
        _fail(flag, text, f"not an override of {task}; allowed: {', '.join(allowed) or 'none'}")
    default = params[name].default
    for kind in ("bool", "int", "float"):  # bool before int: bool is a subclass of int
        if type(default).__name__ == kind:
            return _parse_scalar(kind, flag, text)
    return _parse_scalar("str", flag, text)


def _type_ok(kind: str, value) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "float | None"):
        if value is None:
            return kind != "float"
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "tuple":
        return isinstance(value, tuple)
    raise AssertionError(f"no type check for PearlConfig field type {kind!r}")


_TYPE_WORDS = {"bool": "a boolean", "int": "an integer", "float": "a finite number",
               "float | None": "a finite number or none", "str": "a string",
               "tuple": "a tuple of (name, value) pairs"}


def _positive(v): return v > 0
def _non_negative(v): return v >= 0


_POSITIVE_INT = ("max_path_length", "n_train_tasks", "n_eval_tasks", "latent_size", "net_size",
                 "encoder_size", "meta_batch", "batch_size", "embedding_batch_size",
                 "num_iterations", "num_initial_steps", "num_tasks_sample",
                 "num_train_steps_per_itr", "num_evals", "num_steps_per_eval", "eval_every",
                 "checkpoint_every", "keep_checkpoints")
_NON_NEGATIVE_INT = ("num_steps_prior", "num_steps_posterior", "num_extra_rl_steps_posterior",
                     "num_exp_traj_eval", "rl_buffer_capacity", "enc_buffer_capacity")
_POSITIVE_FLOAT = ("reward_scale", "policy_lr", "qf_lr", "vf_lr", "context_lr", "alpha_lr")
_NON_NEGATIVE_FLOAT = ("kl_lambda", "policy_mean_reg_weight", "policy_std_reg_weight",
                       "policy_pre_activation_weight")
# field -> (predicate, what is allowed)
RANGES: dict[str, tuple] = {
    **{n: (_positive, "must be a positive integer") for n in _POSITIVE_INT},
    **{n: (_non_negative, "must be a non-negative integer") for n in _NON_NEGATIVE_INT},
    **{n: (_positive, "must be > 0") for n in _POSITIVE_FLOAT},
    **{n: (_non_negative, "must be >= 0") for n in _NON_NEGATIVE_FLOAT},
    "discount": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "soft_target_tau": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "seed": (lambda v: 0 <= v < 2**32, "must be an integer in [0, 2**32)"),
    "init_scheme": (lambda v: v in ("rlkit", "flax"), "must be one of: rlkit, flax"),
    "sac_variant": (lambda v: v in ("v1", "twin_q"), "must be one of: v1, twin_q"),
    "task": (lambda v: v in TASK_FAMILIES, f"unknown task; valid: {', '.join(TASK_FAMILIES)}"),
}


def _counts_from_env_kwargs(task: str, kw: dict) -> dict[str, int]:
    """n_train_tasks / n_eval_tasks implied by env overrides that resize the task set."""
    family, out = TASK_FAMILIES[task], {}
    for k, v in kw.items():
        if k in _TRAIN_COUNT_KWARGS or (k == "n_tasks" and family.train_equals_test):
            out["n_train_tasks"] = v
            if family.train_equals_test:
                out["n_eval_tasks"] = v
        elif k in _EVAL_COUNT_KWARGS:
            out["n_eval_tasks"] = v
    return out


def _expected_counts(config: PearlConfig) -> tuple[int, int]:
    family = TASK_FAMILIES[config.task]
    counts = _counts_from_env_kwargs(config.task, dict(config.env_kwargs))
    return counts.get("n_train_tasks", family.n_train), counts.get("n_eval_tasks", family.n_eval)


def validate(config: PearlConfig, given=()) -> PearlConfig:
    """Check types, ranges and cross-field contradictions; return `config` or raise ConfigError.

    `given` names the fields the user set: a contradiction is reported on one of those, since
    that is the flag to change.
    """
    for name, kind in FIELDS.items():
        value = getattr(config, name)
        if not _type_ok(kind, value):
            _fail(name, value, f"must be {_TYPE_WORDS[kind]}")
        if name in RANGES and not RANGES[name][0](value):
            _fail(name, value, RANGES[name][1])
    _check_env_kwargs(config)
    c = config

    def blame(*names):
        return next((n for n in names if n in given), names[0])

    def contradiction(names, why):
        name = blame(*names)
        _fail(name, getattr(c, name), why)

    family = TASK_FAMILIES[c.task]
    n_train, n_eval = _expected_counts(c)
    if c.n_train_tasks != n_train:
        contradiction(("n_train_tasks",), f"must equal {n_train}, the train-task count of "
                      f"{c.task} (change the task set through --env.* instead)")
    if c.n_eval_tasks != n_eval:
        contradiction(("n_eval_tasks",), f"must equal {n_eval}, the eval-task count of "
                      f"{c.task} (change the task set through --env.* instead)")
    if c.sparse_rewards and not family.has_sparse_reward:
        sparse = [t for t, f in TASK_FAMILIES.items() if f.has_sparse_reward]
        contradiction(("sparse_rewards", "task"), f"{c.task} has no sparse reward; only "
                      f"{', '.join(sparse)} does")
    if c.num_steps_prior + c.num_steps_posterior == 0:
        contradiction(("num_steps_prior", "num_steps_posterior"), "num_steps_prior + "
                      "num_steps_posterior must be > 0, or a visited task's encoder buffer "
                      "is left empty")
    if c.num_exp_traj_eval * c.max_path_length >= c.num_steps_per_eval:
        contradiction(("num_exp_traj_eval", "num_steps_per_eval", "max_path_length"),
                      f"num_exp_traj_eval * max_path_length ({c.num_exp_traj_eval} * "
                      f"{c.max_path_length}) must be < num_steps_per_eval "
                      f"({c.num_steps_per_eval}), or evaluation never uses the posterior")
    if c.target_entropy is not None and c.sac_variant != "twin_q":
        contradiction(("target_entropy", "sac_variant"), "target_entropy needs "
                      "--sac_variant=twin_q (v1 has a fixed temperature)")
    return config


def _check_env_kwargs(config: PearlConfig) -> None:
    kw = config.env_kwargs
    if not _is_pairs(kw) or not all(isinstance(k, str) for k, _ in kw):
        _fail("env_kwargs", kw, "must be a tuple of (name, value) pairs")
    names = [k for k, _ in kw]
    if names != sorted(set(names)):
        _fail("env_kwargs", kw, "names must be unique and sorted (so equal configs hash equal)")
    for k, v in kw:
        if not isinstance(v, (bool, int, float, str)):
            _fail(f"env.{k}", v, "must be a boolean, number or string")
    if kw:  # importing a MuJoCo env module is slow: only for runs that override it
        try:
            allowed = envs.allowed_overrides(config.task)
        except ImportError as exc:
            _fail(f"env.{names[0]}", kw[0][1], f"cannot check overrides ({exc})")
        for k, v in kw:
            if k not in allowed:
                _fail(f"env.{k}", v, f"not an override of {config.task}; "
                      f"allowed: {', '.join(allowed) or 'none'}")


# --- JSON (config.json in a run dir, and checkpoints) ---------------------------------------

def config_to_json(config: PearlConfig) -> str:
    data = dataclasses.asdict(config)
    data["env_kwargs"] = dict(config.env_kwargs)
    return json.dumps(data, indent=2, sort_keys=True)


def config_from_json(text: str) -> PearlConfig:
    """Inverse of `config_to_json`; every field must be present (no silent defaults)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config json: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("config json: must be an object of PearlConfig fields")
    unknown = sorted(set(data) - set(FIELDS))
    missing = sorted(set(FIELDS) - set(data))
    if unknown:
        raise ConfigError(f"config json: unknown field(s) {', '.join(unknown)}")
    if missing:
        raise ConfigError(f"config json: missing field(s) {', '.join(missing)}")
    kw = data["env_kwargs"]
    if not isinstance(kw, dict):
        _fail("env_kwargs", kw, "must be a JSON object in config json")
    data["env_kwargs"] = tuple(sorted(kw.items()))
    return PearlConfig(**data)


# --- the command line -----------------------------------------------------------------------

def help_text(task: str | None = None) -> str:
    """Every flag with its type and default (the task's reference value when --task is known)."""
    base = get_config(task) if task in TASK_FAMILIES else PearlConfig()
    where = f"reference config of {task}" if task in TASK_FAMILIES else "PearlConfig defaults"
    lines = [
        "usage: python -m experiments.run --task TASK [--preset NAME] [--FIELD=VALUE ...]",
        "       python -m experiments.run --resume RUN_DIR [--num_iterations N ...]",
        "",
        f"  --task TASK        one of: {', '.join(TASK_FAMILIES)}",
        f"  --preset NAME      reduced settings, not the reference: {', '.join(PRESETS)}",
        "  --out-dir DIR      default runs/<task>-seed<seed>-<YYYYmmdd-HHMMSS>; must not exist",
        "                     or be empty",
        f"  --resume RUN_DIR   continue a run; may change only: {', '.join(RESUME_MUTABLE)}",
        "  --env.NAME=VALUE   env constructor override (repeatable), see envs.allowed_overrides",
        "",
        f"fields (defaults: {where}; bools take true/false/1/0/yes/no):",
    ]
    for name, kind in FIELDS.items():
        if name == "env_kwargs":
            continue
        lines.append(f"  --{name:<32} {kind:<13} default {_fmt(getattr(base, name))}")
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
            bool_flag = FIELDS.get(name) == "bool"
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


def _unknown(name: str, value: str):
    if name == "env_kwargs":
        _fail(name, value, "set env overrides one at a time as --env.NAME=VALUE")
    close = difflib.get_close_matches(name, list(FIELDS) + list(_RUN_FLAGS), n=3)
    hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
    _fail(name, value, "unknown field" + hint)


def parse_command_line(argv: list[str]) -> RunRequest:
    """Resolve and validate a run from argv; reads at most RUN_DIR/config.json, writes nothing.

    Raises ConfigError (one line) on any problem; `--help` prints and raises SystemExit(0).
    """
    run_flags: dict[str, str] = {}
    fields: dict[str, str] = {}
    env_text: dict[str, str] = {}
    for name, value in _tokens(argv):
        if name == "help":
            task = dict((n, v) for n, v in _tokens([a for a in argv if a not in ("-h", "--help")]))
            print(help_text(task.get("task")))
            raise SystemExit(0)
        if name.startswith("env."):
            target, key = env_text, name[4:]
        elif name in _RUN_FLAGS:
            target, key = run_flags, name
        elif name in FIELDS and name != "env_kwargs":
            target, key = fields, name
        else:
            _unknown(name, value)
        if key in target:
            _fail(name, value, f"given twice (first as --{name}={target[key]})")
        target[key] = value

    given = set(fields) | {k for k in ("task", "seed") if k in run_flags}
    if "resume" in run_flags:
        config, out_dir = _resumed(run_flags, fields, env_text)
    else:
        if "task" not in run_flags:
            raise ConfigError(f"--task: required; valid: {', '.join(TASK_FAMILIES)}")
        config = get_config(run_flags["task"])
        if "preset" in run_flags:
            config = apply_preset(config, run_flags["preset"])
        values = {n: _parse_scalar(FIELDS[n], n, t) for n, t in fields.items()}
        if "seed" in run_flags:
            values["seed"] = _parse_scalar("int", "seed", run_flags["seed"])
        kw = {k: parse_env_value(config.task, k, t) for k, t in env_text.items()}
        if kw:
            values["env_kwargs"] = tuple(sorted(kw.items()))
            given.add("env_kwargs")
            # a resized task set carries the config's counts along unless they were given
            for n, v in _counts_from_env_kwargs(config.task, kw).items():
                values.setdefault(n, v)
        config = config.replace(**values)
        validate(config, given)
        out_dir = run_flags.get("out_dir") or os.path.join(
            "runs", f"{config.task}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.isdir(out_dir) and os.listdir(out_dir):
            _fail("out_dir", out_dir, "exists and is not empty; use --resume to continue a run")
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            _fail("out_dir", out_dir, "exists and is not a directory")
    return RunRequest(config=config, out_dir=out_dir, resume=run_flags.get("resume"),
                      preset=run_flags.get("preset"))


def _resumed(run_flags, fields, env_text) -> tuple[PearlConfig, str]:
    run_dir = run_flags["resume"]
    for flag in ("preset", "out_dir"):
        if flag in run_flags:
            _fail(flag, run_flags[flag], "cannot be used with --resume (the run dir holds the "
                  "resolved config and is the output dir)")
    if env_text:
        k = next(iter(env_text))
        _fail(f"env.{k}", env_text[k], "cannot change when resuming")
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            saved = config_from_json(f.read())
    except OSError:
        _fail("resume", run_dir, "no readable config.json in that directory")
    changes = {n: _parse_scalar(FIELDS[n], n, t) for n, t in fields.items()}
    for flag in ("task", "seed"):
        if flag in run_flags:
            changes[flag] = _parse_scalar(FIELDS[flag], flag, run_flags[flag])
    for n, v in changes.items():
        if n not in RESUME_MUTABLE and v != getattr(saved, n):
            _fail(n, v, f"cannot change when resuming (saved: {_fmt(getattr(saved, n))}); "
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
    request = parse_or_exit()
    print(config_to_json(request.config))
    print(f"out_dir: {request.out_dir}" + (" (resume)" if request.resume else ""))
