"""A trained policy read back from its run directory, and one meta-test adaptation run of it.

The pictures (`plot --posterior`, `render`) start here: the batch config at the top of RUN_DIR
rebuilds the Trainer, the newest checkpoint that reads back intact is restored read-only (the
run directory is never written, so this works while the run is still training), and one seed's
slice is kept. The adaptation run is the evaluation protocol's own rollout
(`pearl_jax.evaluate.protocol_rollout`) on one test task, recorded step by step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

import envs
from experiments import rundir
from experiments.results import ResultsError
from pearl_jax.checkpoint import Checkpointer, CheckpointError
from pearl_jax.config import ConfigError, PearlConfig, from_json
from pearl_jax.evaluate import posterior_of_prefixes, protocol_rollout
from pearl_jax.train import RunState, Trainer, seed_slice

POINT_TASKS = ("point-robot", "sparse-point-robot")  # no MuJoCo model: drawn by `plot --posterior`
ADAPTATION_KEY = 0  # the adaptation run's random draws (prior z, posterior z, reset noise)


class TrainedError(ResultsError):
    """A run whose policy cannot be read back; its str is one line naming the value."""


def read_config(run_dir: str) -> PearlConfig:
    """The batch config of the run in `run_dir` (its top config.json)."""
    try:
        rundir.seed_dirs(run_dir)
    except rundir.NotARunError as exc:
        raise TrainedError(str(exc)) from None
    path = os.path.join(run_dir, rundir.CONFIG)
    parent = os.path.dirname(os.path.normpath(os.path.abspath(run_dir)))
    if not os.path.isfile(path):
        raise TrainedError(f"{run_dir}: no {rundir.CONFIG} at its top (a multi-seed run keeps its batch "
                           "config there; pass the run directory itself)")
    try:
        with open(path) as f:
            config = from_json(f.read())
    except (OSError, ValueError, ConfigError) as exc:
        raise TrainedError(f"{path}: unreadable run config ({' '.join(str(exc).split())})") from None
    if (config.num_seeds == 1 and not os.path.isdir(rundir.checkpoint_dir(run_dir))
            and os.path.isdir(rundir.checkpoint_dir(parent)) and os.path.isfile(os.path.join(parent, rundir.CONFIG))):
        raise TrainedError(f"{run_dir}: one seed of the multi-seed run {parent}, whose checkpoints hold every "
                           f"seed; pass {parent} --seed {config.seed}")
    return config


def pick_seed(config: PearlConfig, seed: int | None, run_dir: str) -> int:
    """`seed` checked against the run's seeds; None gives the first."""
    if seed is None:
        return config.seed
    if seed not in config.seeds:
        raise TrainedError(f"--seed={seed}: not a seed of {run_dir}; its seeds: "
                           + ", ".join(str(s) for s in config.seeds))
    return seed


def check_task_index(config: PearlConfig, task_id: int) -> int:
    """`task_id` checked as an index into the run's test tasks (0 .. n_test - 1)."""
    n = envs.make(config.task, **dict(config.env_kwargs)).n_test_tasks
    if not 0 <= task_id < n:
        raise TrainedError(f"--task-id={task_id}: indexes the {n} test tasks of {config.task}; "
                           f"allowed 0..{n - 1}")
    return task_id


@dataclass(frozen=True)
class Trained:
    """One seed of a trained run: the static pieces and that seed's state."""

    run_dir: str
    seed: int
    trainer: Trainer  # built from the batch config (all seeds)
    state: RunState  # this seed's slice (no seed axis)
    iteration: int  # of the restored checkpoint

    @property
    def config(self) -> PearlConfig:
        return self.trainer.config


def load(run_dir: str, seed: int | None = None, config: PearlConfig | None = None) -> Trained:
    """The newest readable checkpoint of `run_dir`, restored read-only, sliced to `seed`
    (default: the run's first seed). `config`: the run's config when already read."""
    config = read_config(run_dir) if config is None else config
    seed = pick_seed(config, seed, run_dir)
    where = rundir.checkpoint_dir(run_dir)
    if not os.path.isdir(where) or not _steps(where):
        raise TrainedError(f"{run_dir}: no checkpoint yet (the run writes one every checkpoint_every="
                           f"{config.checkpoint_every} iterations, in {rundir.CHECKPOINTS}/)")
    trainer = Trainer(config)
    target = lambda stored: trainer.abstract_state(int(jax.tree.leaves(stored)[0].shape[0]))
    try:
        ckpt = Checkpointer(where, keep=config.keep_checkpoints, read_only=True)
        try:
            step, state, meta = ckpt.restore_newest_readable(target=target)
        finally:
            ckpt.close()
    except CheckpointError as exc:
        raise TrainedError(f"{run_dir}: {str(exc).splitlines()[0]}") from None
    state = seed_slice(state, config.seeds.index(seed))
    return Trained(run_dir, seed, trainer, state, int(meta.get("iteration", step)))


def _steps(directory: str) -> list[str]:
    """Finished checkpoint steps (numbered sub-directories), without opening Orbax."""
    return [n for n in os.listdir(directory) if n.isdigit() and os.path.isdir(os.path.join(directory, n))]


@dataclass(frozen=True)
class AdaptationRun:
    """One meta-test adaptation run, its valid steps in the order they were taken."""

    task_index: int  # index into the test tasks
    task: Any  # the task pytree (a goal position for the point robots)
    obs: np.ndarray  # (S, O) observation each step acted on
    next_obs: np.ndarray  # (S, O) observation after the step
    reward: np.ndarray  # (S,) the reward the protocol counts (sparse where configured)
    traj_index: np.ndarray  # (S,) 0-based trajectory of each step
    observed: Any  # (S, ...) what `observe` kept of each step's env state, or None
    num_exploration: int  # trajectories 0 .. num_exploration-1 drew z from the prior
    belief_mean: np.ndarray  # (K+1, L) the belief after 0..K trajectories (row 0: the prior)
    belief_var: np.ndarray  # (K+1, L)

    @property
    def num_trajs(self) -> int:
        return self.belief_mean.shape[0] - 1

    def returns(self) -> np.ndarray:
        """(K,) return of each trajectory."""
        return np.bincount(self.traj_index, weights=self.reward, minlength=self.num_trajs)


def adaptation_run(trained: Trained, task_index: int, observe: Callable | None = None) -> AdaptationRun:
    """Test task `task_index`'s adaptation run under the evaluation protocol (one run, the fixed
    draw ADAPTATION_KEY), with the belief after each of its trajectories."""
    tr, c = trained.trainer, trained.config
    task_index = check_task_index(c, task_index)
    task = jax.tree.map(lambda x: x[tr.test_ids[task_index]][None], tr.tasks)
    params = trained.state.learner.params

    record = jax.jit(lambda params, task, key: protocol_rollout(tr.env, tr.agent, params, task, key, observe=observe))
    out = jax.device_get(record(params, task, jax.random.key(ADAPTATION_KEY)))
    valid, traj = np.asarray(out.valid[0]), np.asarray(out.traj_index[0])
    k = int(out.num_trajs[0, 0])
    ends = np.array([[np.sum(valid & (traj < j)) for j in range(k + 1)]], np.int32)  # context rows
    mean, var = jax.device_get(_beliefs(tr.agent, params, out.history, ends))  # after j trajectories
    rewards = out.transitions.sparse_reward if c.sparse_rewards else out.transitions.reward
    return AdaptationRun(
        task_index=task_index, task=jax.tree.map(lambda x: np.asarray(x[0]), task),
        obs=np.asarray(out.transitions.obs[0])[valid], next_obs=np.asarray(out.transitions.next_obs[0])[valid],
        reward=np.asarray(rewards[0])[valid],
        traj_index=traj[valid],
        observed=None if out.observed is None else jax.tree.map(lambda x: np.asarray(x[0])[valid], out.observed),
        num_exploration=min(c.num_exp_traj_eval, k),
        belief_mean=np.asarray(mean[0]), belief_var=np.asarray(var[0]),
    )


_beliefs = jax.jit(posterior_of_prefixes, static_argnums=0)

