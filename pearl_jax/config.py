"""Every knob of a PEARL run, as one frozen dataclass, and the one check of it.

Defaults are the reference's values common to all tasks (docs/reference.md §5.3 and
oyster configs/default.py); per-task values live in `experiments/configs.py`. The task family owns its own facts:
the horizon is the env class's `max_path_length` (a config's `None` means "the family's") and
the task counts are the env's, changed only through `env_kwargs`. `validate` is the single
gate: `Trainer(config)` and the command line both call it, so the library and the CLI refuse
the same things with the same one-line messages. The config is static (hashable), so jitted
functions can close over it: every field that changes a shape or the program's structure is
a compile-time constant.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import envs


class ConfigError(ValueError):
    """A bad task, preset, field or value; its str is one line naming the culprit."""


@dataclass(frozen=True)
class PearlConfig:
    # --- task -----------------------------------------------------------------------------
    task: str = "cheetah-vel"
    # the sampler's time limit; None = the family's reference horizon (its env class says)
    max_path_length: int | None = None
    # constructor overrides for envs.make, as sorted (name, value) pairs so the config stays
    # hashable, e.g. (("forward_backward", False),) for ant-dir with random directions; the
    # task counts are the env's and change only through these (n_train=..., n_test=...)
    env_kwargs: tuple = ()

    # --- networks -------------------------------------------------------------------------
    latent_size: int = 5
    net_size: int = 300  # width of the 3 hidden layers of policy, Q and V
    encoder_size: int = 200  # width of the 3 hidden layers of the context encoder
    init_scheme: str = "rlkit"  # "rlkit" (reference fan-out quirk, bias 0.1) or "flax" (lecun/zeros)
    use_information_bottleneck: bool = True
    recurrent: bool = False  # LSTM encoder over an ordered context (new work)
    use_next_obs_in_context: bool = False
    sparse_rewards: bool = False  # context reward = info['sparse_reward']

    # --- SAC and the information bottleneck -------------------------------------------------
    sac_variant: str = "v1"  # "v1": the reference (V, target V, fixed temperature);
    #                          "twin_q": twin target Qs and a learned temperature
    reward_scale: float = 5.0
    discount: float = 0.99
    kl_lambda: float = 0.1
    soft_target_tau: float = 0.005
    policy_lr: float = 3e-4
    qf_lr: float = 3e-4
    vf_lr: float = 3e-4
    context_lr: float = 3e-4
    alpha_lr: float = 3e-4  # twin_q only
    target_entropy: float | None = None  # twin_q only; None means -action_size
    policy_mean_reg_weight: float = 1e-3
    policy_std_reg_weight: float = 1e-3
    policy_pre_activation_weight: float = 0.0

    # --- batches ---------------------------------------------------------------------------
    meta_batch: int = 16
    batch_size: int = 256
    embedding_batch_size: int = 100

    # --- data collection -------------------------------------------------------------------
    num_iterations: int = 500
    num_initial_steps: int = 2000
    num_tasks_sample: int = 5
    num_steps_prior: int = 400
    num_steps_posterior: int = 0
    num_extra_rl_steps_posterior: int = 600
    num_train_steps_per_itr: int = 2000
    # rows per task in each buffer; 0 = sized from this config (buffers.buffer_capacities).
    # A run records the resolved sizes, so extending num_iterations on resume keeps its shapes.
    rl_buffer_capacity: int = 0
    enc_buffer_capacity: int = 0

    # --- evaluation -------------------------------------------------------------------------
    num_evals: int = 1
    num_steps_per_eval: int = 600
    num_exp_traj_eval: int = 2
    eval_every: int = 1  # iterations between evaluations; the protocol itself never changes

    # --- run bookkeeping --------------------------------------------------------------------
    seed: int = 0  # the first seed; a batch trains seeds seed .. seed + num_seeds - 1
    num_seeds: int = 1  # independent runs trained together in one program (a leading seed axis)
    checkpoint_every: int = 10  # iterations
    keep_checkpoints: int = 3

    def replace(self, **changes) -> "PearlConfig":
        return dataclasses.replace(self, **changes)

    @property
    def encoder_out_size(self) -> int:
        return 2 * self.latent_size if self.use_information_bottleneck else self.latent_size

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.num_seeds))


FIELDS: dict[str, str] = {f.name: f.type for f in dataclasses.fields(PearlConfig)}
# fields a resumed run may change: they extend or re-schedule a run, or rescue a diverged one
# (learning rates keep every array's shape), without changing what was collected so far
RESUME_MUTABLE = ("num_iterations", "eval_every", "checkpoint_every", "keep_checkpoints",
                  "policy_lr", "qf_lr", "vf_lr", "context_lr", "alpha_lr")


# --- values as a user types them ---------------------------------------------------------------

def format_value(value) -> str:
    """A value as a user would type it, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(f"{k}={format_value(v)}" for k, v in value) if _is_pairs(value) else str(value)
    return str(value).replace("\n", "\\n")


def _is_pairs(value) -> bool:
    return all(isinstance(p, tuple) and len(p) == 2 for p in value)


def fail(name: str, value, why: str):
    raise ConfigError(f"--{name}={format_value(value)}: {why}")


# --- types and ranges ----------------------------------------------------------------------------

def _type_ok(kind: str, value) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "int | None"):
        if value is None:
            return kind != "int"
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


TYPE_WORDS = {"bool": "a boolean", "int": "an integer", "int | None": "an integer or none",
              "float": "a finite number", "float | None": "a finite number or none",
              "str": "a string", "tuple": "a tuple of (name, value) pairs"}


def _positive(v): return v is None or v > 0
def _non_negative(v): return v >= 0


_POSITIVE_INT = ("max_path_length", "latent_size", "net_size", "encoder_size", "meta_batch",
                 "batch_size", "embedding_batch_size", "num_iterations", "num_initial_steps",
                 "num_tasks_sample", "num_train_steps_per_itr", "num_evals", "num_steps_per_eval",
                 "eval_every", "checkpoint_every", "keep_checkpoints", "num_seeds")
_NON_NEGATIVE_INT = ("num_steps_prior", "num_steps_posterior", "num_extra_rl_steps_posterior",
                     "num_exp_traj_eval", "rl_buffer_capacity", "enc_buffer_capacity")
_POSITIVE_FLOAT = ("reward_scale", "policy_lr", "qf_lr", "vf_lr", "context_lr", "alpha_lr")
_NON_NEGATIVE_FLOAT = ("kl_lambda", "policy_mean_reg_weight", "policy_std_reg_weight",
                       "policy_pre_activation_weight")
INIT_SCHEMES = ("rlkit", "flax")
SAC_VARIANTS = ("v1", "twin_q")
# field -> (predicate, what is allowed)
RANGES: dict[str, tuple] = {
    **{n: (_positive, "must be a positive integer") for n in _POSITIVE_INT},
    **{n: (_non_negative, "must be a non-negative integer") for n in _NON_NEGATIVE_INT},
    **{n: (_positive, "must be > 0") for n in _POSITIVE_FLOAT},
    **{n: (_non_negative, "must be >= 0") for n in _NON_NEGATIVE_FLOAT},
    "discount": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "soft_target_tau": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "seed": (lambda v: 0 <= v < 2**32, "must be an integer in [0, 2**32)"),
    "init_scheme": (lambda v: v in INIT_SCHEMES, f"must be one of: {', '.join(INIT_SCHEMES)}"),
    "sac_variant": (lambda v: v in SAC_VARIANTS, f"must be one of: {', '.join(SAC_VARIANTS)}"),
    "task": (lambda v: v in envs.names(), f"unknown task; valid: {', '.join(envs.names())}"),
}


# --- the check -----------------------------------------------------------------------------------

def validate(config: PearlConfig, given=()) -> PearlConfig:
    """Check types, ranges and cross-field contradictions; return the config with the horizon
    resolved (`max_path_length` None -> the family's), or raise ConfigError (one line).

    `given` names the fields the user set: a contradiction is reported on one of those, since
    that is the flag to change. Reads env classes, builds no env.
    """
    for name, kind in FIELDS.items():
        value = getattr(config, name)
        if not _type_ok(kind, value):
            fail(name, value, f"must be {TYPE_WORDS[kind]}")
        if name in RANGES and not RANGES[name][0](value):
            fail(name, value, RANGES[name][1])
    if config.seed + config.num_seeds > 2**32:
        fail("num_seeds", config.num_seeds, f"seeds {config.seed} .. {config.seed + config.num_seeds - 1} "
             "must stay below 2**32")
    _check_env_kwargs(config)
    family = envs.env_class(config.task)
    if config.max_path_length is None:
        config = config.replace(max_path_length=int(family.max_path_length))
    c = config

    def contradiction(names, why):
        name = next((n for n in names if n in given), names[0])
        fail(name, getattr(c, name), why)

    if c.sparse_rewards and not family.has_sparse_reward:
        sparse = [t for t in envs.names() if envs.env_class(t).has_sparse_reward]
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
        fail("env_kwargs", kw, "must be a tuple of (name, value) pairs")
    names = [k for k, _ in kw]
    if names != sorted(set(names)):
        fail("env_kwargs", kw, "names must be unique and sorted (so equal configs hash equal)")
    allowed = envs.allowed_overrides(config.task) if kw else []
    for k, v in kw:
        if not isinstance(v, (bool, int, float, str)):
            fail(f"env.{k}", v, "must be a boolean, number or string")
        if k not in allowed:
            fail(f"env.{k}", v, f"not an override of {config.task}; allowed: {', '.join(allowed) or 'none'}")


# --- JSON (config.json in a run dir, and checkpoints) ----------------------------------------------

def to_json(config: PearlConfig) -> str:
    data = dataclasses.asdict(config)
    data["env_kwargs"] = dict(config.env_kwargs)
    return json.dumps(data, indent=2, sort_keys=True)


def from_json(text: str) -> PearlConfig:
    """Inverse of `to_json`; every field must be present (no silent defaults)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config json: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("config json: must be an object of PearlConfig fields")
    unknown = sorted(set(data) - set(FIELDS))
    missing = sorted(set(FIELDS) - set(data))
    if unknown:
        raise ConfigError(f"config json: unknown field(s) {', '.join(unknown)} (written by another "
                          "version of pearl-jax?)")
    if missing:
        raise ConfigError(f"config json: missing field(s) {', '.join(missing)} (written by another "
                          "version of pearl-jax?)")
    kw = data["env_kwargs"]
    if not isinstance(kw, dict):
        fail("env_kwargs", kw, "must be a JSON object in config json")
    data["env_kwargs"] = tuple(sorted(kw.items()))
    return PearlConfig(**data)
