"""The reference configuration of every task, and reduced presets.

Each entry of `REFERENCE` is the oyster HEAD config of one task after merging its json over
`configs/default.py` (docs/reference.md §5.3, Tables A-D); `PearlConfig`'s own
defaults are the values common to all tasks, so only what differs is written here. The task
set and horizon are not repeated: they belong to the task's env class.
"""
from __future__ import annotations

import dataclasses

from pearl_jax.config import ConfigError, PearlConfig


def _ref(task: str, **values) -> PearlConfig:
    """A task's reference config: the task's own facts (horizon, task counts, sparse reward)
    stay with its env class; only hyperparameters are written here."""
    return PearlConfig(task=task, **values)


# Tables B-D, per task. Fields left out take PearlConfig's common defaults:
# num_initial_steps 2000, num_tasks_sample 5, prior/posterior/extra 400/0/600, meta_batch 16,
# num_train_steps_per_itr 2000, batch 256, embedding batch 100, reward_scale 5, kl 0.1,
# discount 0.99, num_evals 1, num_steps_per_eval 600, num_exp_traj_eval 2.
REFERENCE: dict[str, PearlConfig] = {
    "cheetah-dir": _ref(
        "cheetah-dir",
        num_steps_prior=1000, num_extra_rl_steps_posterior=1000,
        meta_batch=4, embedding_batch_size=256, num_evals=4,
    ),
    "cheetah-vel": _ref("cheetah-vel"),
    "ant-dir": _ref(
        "ant-dir",
        meta_batch=4, num_train_steps_per_itr=4000, embedding_batch_size=256, num_evals=4,
    ),
    "ant-goal": _ref(
        "ant-goal",
        meta_batch=10, num_train_steps_per_itr=4000, embedding_batch_size=256, kl_lambda=1.0,
    ),
    "humanoid-dir": _ref(
        "humanoid-dir", num_train_steps_per_itr=4000, embedding_batch_size=256,
    ),
    "walker-rand-params": _ref(
        "walker-rand-params",
        use_next_obs_in_context=True,
        meta_batch=10, num_train_steps_per_itr=4000, num_evals=2,
    ),
    "hopper-rand-params": _ref(
        "hopper-rand-params",
        use_next_obs_in_context=True,
        meta_batch=10, num_train_steps_per_itr=4000, num_evals=2,
    ),
    "point-robot": _ref(
        "point-robot",
        num_initial_steps=200, num_steps_prior=200, num_extra_rl_steps_posterior=200,
        num_train_steps_per_itr=1000, embedding_batch_size=64, reward_scale=100.0,
        num_evals=2, num_steps_per_eval=60,
        num_exp_traj_eval=1,  # the reference default; the json does not set it (docs/reference.md §4.3)
    ),
    "sparse-point-robot": _ref(
        "sparse-point-robot",
        sparse_rewards=True,
        num_initial_steps=200, num_tasks_sample=10,
        num_steps_prior=100, num_steps_posterior=900, num_extra_rl_steps_posterior=0,
        num_train_steps_per_itr=1000, embedding_batch_size=1024, reward_scale=100.0,
        kl_lambda=1.0, discount=0.9,
        num_evals=2, num_steps_per_eval=400, num_exp_traj_eval=5,
    ),
}


# --- presets: REDUCED settings, not the reference. Each is a flat dict of field overrides
# applied over any task's reference config. They leave the task set, horizon and the
# evaluation protocol alone, so a preset run is still evaluated exactly like the reference.

CPU_SMALL: dict[str, object] = {
    # REDUCED, not the reference: small networks, fewer and faster-learning gradient steps, so
    # that point-robot learns within minutes on a 2-core CPU (tests/test_learning.py).
    "net_size": 64,
    "encoder_size": 64,
    "num_iterations": 40,
    "num_train_steps_per_itr": 250,
    "meta_batch": 16,
    "batch_size": 128,
    "policy_lr": 1e-3,
    "qf_lr": 1e-3,
    "vf_lr": 1e-3,
    "context_lr": 1e-3,
    "eval_every": 5,
    "checkpoint_every": 10,
}

# Goal: exercise every code path in tests in seconds; learns nothing.
TINY: dict[str, object] = {
    "net_size": 8,
    "encoder_size": 8,
    "num_iterations": 2,
    "num_train_steps_per_itr": 3,
    "meta_batch": 2,
    "batch_size": 8,
    "embedding_batch_size": 8,
    # collection always completes trajectories, so each of these is one trajectory
    "num_initial_steps": 1,
    "num_tasks_sample": 2,
    "num_steps_prior": 1,
    "num_steps_posterior": 1,
    "num_extra_rl_steps_posterior": 1,
    "num_evals": 1,
    "eval_every": 1,
    "checkpoint_every": 1,
}

PRESETS: dict[str, dict[str, object]] = {"cpu-small": CPU_SMALL, "tiny": TINY}


def task_names() -> list[str]:
    return list(REFERENCE)


def get_config(task: str) -> PearlConfig:
    """The reference config of `task` (horizon left to the env: `validate` resolves it);
    unknown names list the valid ones."""
    if task not in REFERENCE:
        raise ConfigError(f"--task={task}: unknown task; valid: {', '.join(REFERENCE)}")
    return REFERENCE[task]


def apply_preset(config: PearlConfig, name: str) -> PearlConfig:
    """`config` with the named preset's overrides applied."""
    if name not in PRESETS:
        raise ConfigError(f"--preset={name}: unknown preset; valid: {', '.join(PRESETS)}")
    return dataclasses.replace(config, **PRESETS[name])
