"""The one small API every meta-RL task family implements.

A *task* is a pytree (a goal velocity, a direction, a goal position, a set of physics
parameters). The task set of a family is that pytree with a leading axis of `n_tasks`. The
task travels inside the env state, so `reset` and `step` are pure functions that `jit` and
`vmap` over a batch of *different* tasks: `jax.vmap(env.reset)(keys, tasks)`.

Conventions shared by all families
- Actions are in [-1, 1]^A; each env rescales them to its model's control range and clips.
- `terminated` is the env's own termination (a fall). The time limit (`max_path_length`) is a
  truncation and is handled by the caller (collection / evaluation), never by the env.
- `reset(key, task)` always draws fresh reset noise from `key`; nothing is cached.
- `info` always holds `sparse_reward` (0 where the family defines none) plus the family's
  reward terms, so every family has the same pytree structure within itself.
"""
from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Task = Any  # a pytree of arrays; a task *set* carries a leading task axis


@struct.dataclass
class EnvState:
    physics: Any  # mjx.Data for MuJoCo families, a position array for the point robots
    obs: jax.Array  # (O,)
    reward: jax.Array  # () dense reward of the last step (0 after reset)
    terminated: jax.Array  # () float32, 1.0 when the env itself ended the episode
    info: dict  # 'sparse_reward' and the family's reward terms, all scalars
    task: Task  # this env's task, carried so that step needs nothing else


class MetaEnv(abc.ABC):
    """A family of tasks sharing observation and action spaces."""

    name: str = ""
    max_path_length: int = 200  # the reference horizon for this family
    has_sparse_reward: bool = False  # info['sparse_reward'] is meaningful
    train_equals_test: bool = False  # cheetah-dir / ant-dir: both splits are the same tasks

    # --- task set (subclasses set _n_train and _n_test) -----------------------------------
    _n_train: int
    _n_test: int

    @property
    def n_train_tasks(self) -> int:
        return self._n_train

    @property
    def n_test_tasks(self) -> int:
        return self._n_test

    @property
    def n_tasks(self) -> int:
        if self.train_equals_test:
            return self.n_train_tasks
        return self.n_train_tasks + self.n_test_tasks

    @abc.abstractmethod
    def tasks(self) -> Task:
        """The whole deterministic task set, leading axis `n_tasks`."""

    def train_task_ids(self) -> np.ndarray:
        return np.arange(self.n_train_tasks, dtype=np.int32)

    def test_task_ids(self) -> np.ndarray:
        if self.train_equals_test:
            return np.arange(self.n_train_tasks, dtype=np.int32)
        return np.arange(self.n_train_tasks, self.n_tasks, dtype=np.int32)

    # --- dynamics -----------------------------------------------------------------------
    @abc.abstractmethod
    def reset(self, key: jax.Array, task: Task) -> EnvState: ...

    @abc.abstractmethod
    def step(self, state: EnvState, action: jax.Array) -> EnvState: ...

    # --- sizes, derived rather than hand-kept ----------------------------------------------
    @property
    def action_size(self) -> int:
        """MuJoCo families read it from their model; pure-JAX families override it."""
        return int(self.mj_model.nu)

    @property
    def observation_size(self) -> int:
        task0 = jax.tree.map(lambda x: x[0], self.tasks())
        shape = jax.eval_shape(self.reset, jax.random.key(0), task0)
        return int(shape.obs.shape[-1])


def task_at(tasks: Task, ids) -> Task:
    """Select tasks by id (a scalar or an index array) from a task set."""
    return jax.tree.map(lambda x: jnp.asarray(x)[ids], tasks)
