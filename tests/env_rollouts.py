"""Batched env rollouts compiled once per family, and the MuJoCo C reference they are checked against.

Compiling MJX physics dominates the env tests, so every env test file steps a family through
the same two programs: `Family.reset` (vmap of reset over B envs) and `Family.roll` (a T-step
lax.scan of vmap(step)). Keys, tasks and actions are arguments, never constants, so one compile
serves every test of a family in a process, and JAX's persistent cache (tests/conftest.py)
serves the same program to the other test files and worker processes.
"""
from __future__ import annotations

from types import SimpleNamespace

import jax
import mujoco
import numpy as np

import envs

B, T = 4, 10  # envs per batch and env steps per rollout, the same in every env test

_FAMILIES: dict = {}


class Family:
    """One env with its compiled batched reset and T-step rollout."""

    def __init__(self, env):
        self.env = env
        self.name = env.name
        self.reset = jax.jit(jax.vmap(env.reset))

        def roll(state, actions):
            """(last state, per-step states with a leading T axis) of (T, B, A) actions."""
            return jax.lax.scan(lambda s, a: (jax.vmap(env.step)(s, a),) * 2, state, actions)

        self.roll = jax.jit(roll)

    def run(self, keys, tasks, actions, qpos_edit=None):
        """(start state, per-step states); `qpos_edit` changes the start qpos (MuJoCo families)."""
        s0 = self.reset(keys, tasks)
        if qpos_edit is not None:
            s0 = s0.replace(physics=s0.physics.replace(qpos=qpos_edit(s0.physics.qpos)))
        return s0, self.roll(s0, actions)[1]

    def tasks(self, ids):
        return envs.task_at(self.env.tasks(), np.asarray(ids))

    def random_actions(self, seed: int):
        """(T, B, A) uniform actions, different for every env of the batch."""
        return jax.random.uniform(jax.random.key(seed), (T, B, self.env.action_size), minval=-1, maxval=1)


class PhysicsOnly:
    """Reset + T steps in one program that returns only the physics (`.physics` of the start
    and of every step). Rewards, observations and the task drop out of the compiled program,
    so families that share a model and its stepping (ant-dir, ant-goal) share one compile."""

    def __init__(self, env):
        self.env, self.name = env, env.name

        def physics(keys, tasks, actions):
            s0 = jax.vmap(env.reset)(keys, tasks)

            def body(s, a):
                s = jax.vmap(env.step)(s, a)
                return s, s.physics

            return s0.physics, jax.lax.scan(body, s0, actions)[1]

        self._physics = jax.jit(physics)

    tasks = Family.tasks
    random_actions = Family.random_actions

    def run(self, keys, tasks, actions, qpos_edit=None):
        if qpos_edit is not None:
            raise ValueError("PhysicsOnly starts from the reset state")
        p0, seq = self._physics(keys, tasks, actions)
        return SimpleNamespace(physics=p0), SimpleNamespace(physics=seq)


def family(name: str) -> Family:
    """The registered family `name` with its programs, built once per process."""
    if name not in _FAMILIES:
        _FAMILIES[name] = Family(envs.make(name))
    return _FAMILIES[name]


def batch_keys(seed: int):
    """B reset keys."""
    return jax.random.split(jax.random.key(seed), B)


# --- MuJoCo C -------------------------------------------------------------------------------
def scale_action_np(action: np.ndarray, ctrlrange: np.ndarray) -> np.ndarray:
    """The reference wrapper's rescale of [-1, 1] onto the control range, then clip (numpy)."""
    low, high = ctrlrange[:, 0], ctrlrange[:, 1]
    return np.clip(low + (action + 1.0) * 0.5 * (high - low), low, high)


def c_rollout(mj_model, frame_skip: int, qpos0, qvel0, ctrls) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo C from (qpos0, qvel0), holding each ctrl row for frame_skip steps: (T, nq), (T, nv)."""
    data = mujoco.MjData(mj_model)
    data.qpos[:], data.qvel[:] = qpos0, qvel0
    mujoco.mj_forward(mj_model, data)
    qpos, qvel = [], []
    for ctrl in ctrls:
        data.ctrl[:] = ctrl
        mujoco.mj_step(mj_model, data, nstep=frame_skip)
        qpos.append(data.qpos.copy())
        qvel.append(data.qvel.copy())
    return np.array(qpos), np.array(qvel)


def rollout_errors(fam: Family, keys, tasks, actions, mj_models, qpos_edit=None) -> tuple[np.ndarray, np.ndarray]:
    """Max |qpos| and |qvel| differences per env step, (T, B), between the family's batched MJX
    rollout and MuJoCo C stepping `mj_models[i]` from element i's start state."""
    s0, seq = fam.run(keys, tasks, actions, qpos_edit)
    a = np.asarray(actions, np.float64)
    qpos_err, qvel_err = [], []
    for i, mj_model in enumerate(mj_models):
        ctrls = scale_action_np(a[:, i], mj_model.actuator_ctrlrange)
        c_qpos, c_qvel = c_rollout(mj_model, fam.env.frame_skip, np.asarray(s0.physics.qpos[i], np.float64),
                                   np.asarray(s0.physics.qvel[i], np.float64), ctrls)
        qpos_err.append(np.abs(np.asarray(seq.physics.qpos[:, i]) - c_qpos).max(1))
        qvel_err.append(np.abs(np.asarray(seq.physics.qvel[:, i]) - c_qvel).max(1))
    return np.stack(qpos_err, 1), np.stack(qvel_err, 1)
