"""2-D point robot navigation (PEARL's point-robot and sparse-point-robot), pure JAX.

State = observation = position (2). The policy action in [-1, 1]^2 is rescaled by the
reference wrapper onto the env's action box [-0.1, 0.1]^2 (and clipped), then added to the
position. The dense reward, -||position - goal||, is computed after moving and is what `step`
returns (SAC's critic uses it). The sparse variant also reports
info['sparse_reward'] = 1 - distance inside the goal radius (distance <= 0.2), else 0; the
reference computes it as (dense reward masked by dense >= -radius) + 1 inside.

Task sets, each drawn from a fresh RandomState(1337) like the reference's global seed:
- dense: goals uniform in [-1, 1]^2, one (x, y) pair after another; start uniform in [-1, 1]^2
  at every reset;
- sparse: goals on the upper unit half circle at angles linspace(0, pi, n), rows shuffled;
  start at the origin.
The first `n_train` goals train, the last `n_test` test (disjoint).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import EnvState, MetaEnv

MAX_STEP = 0.1  # the reference action box is [-0.1, 0.1]^2


class PointRobot(MetaEnv):
    """Goal-reaching on the plane with a dense reward; the task is the goal position (2,)."""

    name = "point-robot"
    max_path_length = 20
    sparse = False  # fixed per class: the start state and the task set depend on it

    def __init__(self, n_train: int = 80, n_test: int = 20, goal_radius: float = 0.2):
        self._n_train, self._n_test = int(n_train), int(n_test)
        self.goal_radius = float(goal_radius)

    @property
    def action_size(self) -> int:
        return 2

    def tasks(self) -> jax.Array:
        rng = np.random.RandomState(1337)
        if self.sparse:
            angles = np.linspace(0.0, np.pi, num=self.n_tasks)
            goals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
            rng.shuffle(goals)
        else:
            goals = rng.uniform(-1.0, 1.0, size=(self.n_tasks, 2))
        return jnp.asarray(goals, jnp.float32)

    def _start(self, key: jax.Array) -> jax.Array:
        if self.sparse:  # a Python bool fixed at construction, not a traced value
            return jnp.zeros((2,), jnp.float32)
        return jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)

    def _sparse(self, distance: jax.Array) -> jax.Array:
        inside = distance <= self.goal_radius
        return jnp.where(inside, 1.0 - distance, 0.0) if self.sparse else jnp.zeros_like(distance)

    def reset(self, key: jax.Array, task) -> EnvState:
        pos = self._start(key)
        zero = jnp.zeros((), jnp.float32)
        info = {"sparse_reward": zero, "distance": jnp.linalg.norm(pos - task)}
        return EnvState(physics=pos, obs=pos, reward=zero, terminated=zero, info=info,
                        task=jnp.asarray(task, jnp.float32))

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        move = jnp.clip(MAX_STEP * jnp.asarray(action), -MAX_STEP, MAX_STEP)
        pos = state.physics + move
        distance = jnp.sqrt(jnp.sum(jnp.square(pos - state.task)))
        info = {"sparse_reward": self._sparse(distance), "distance": distance}
        return state.replace(physics=pos, obs=pos, reward=-distance,
                             terminated=jnp.zeros_like(distance), info=info)


class SparsePointRobot(PointRobot):
    """Goals on the upper half circle, start at the origin, and a sparse reward in the info."""

    name = "sparse-point-robot"
    has_sparse_reward = True
    sparse = True
