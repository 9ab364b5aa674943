"""Walker-2D-Params and Hopper-Params: one morphology, per-task physics parameters.

Models: gymnasium's walker2d.xml (feet friction 0.9 / 1.9, as old gym) and hopper.xml, RK4, with
opt.timestep set to 0.004 and frame_skip 4 (dt 0.016, the reference's rand_param_envs values).
Solver iterations 4 / 4: within 0.2% of the converged solver's return, where 1 / 4 was 10-90% off.

A task is a batch of model fields: the four varied arrays (body_mass, body_inertia, dof_damping,
geom_friction; elementwise factors 1.5**U(-3,3), 1.5**U(-3,3), 1.3**U(-3,3), 1.5**U(-3,3)) plus
the derived constants MJX reads that depend on them. MuJoCo's mj_setConst derives
body_invweight0 and dof_invweight0 (contact / limit softness scaling in MJX's constraint rows)
from the masses and inertias; it also changes body_subtreemass, dof_M0, actuator_acc0 and camera
offsets, which MJX's dynamics do not read for these models. The task set is built once on the
host with MuJoCo C (copy, scale, mj_setConst, read), so under `vmap` only these fields carry a
batch axis, and `step` never recomputes anything.
"""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from envs.base import EnvState, MetaEnv
from envs.mjx_common import SolverSettings, load_gym_model, mjx, physics_step, reset_data, scale_action

WALKER_SEED = 1337  # the reference's task sets are unseeded
HOPPER_SEED = 1338


@struct.dataclass
class PhysicsTask:
    body_mass: jax.Array  # (nbody,)
    body_inertia: jax.Array  # (nbody, 3)
    dof_damping: jax.Array  # (nv,)
    geom_friction: jax.Array  # (ngeom, 3)
    body_invweight0: jax.Array  # (nbody, 2) derived by mj_setConst
    dof_invweight0: jax.Array  # (nv,) derived by mj_setConst


VARIED = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
DERIVED = ("body_invweight0", "dof_invweight0")
LOG_BASE = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


def model_with(mj_model: mujoco.MjModel, fields: dict) -> mujoco.MjModel:
    """A copy of `mj_model` with `fields` (name -> array) set and derived constants recomputed."""
    out = copy.copy(mj_model)
    for name, value in fields.items():
        getattr(out, name)[:] = value
    mujoco.mj_setConst(out, mujoco.MjData(out))
    return out


def scaled_model(mj_model: mujoco.MjModel, factors: dict) -> mujoco.MjModel:
    """A copy of `mj_model` with the varied fields multiplied and derived constants recomputed."""
    return model_with(mj_model, {k: getattr(mj_model, k) * f for k, f in factors.items()})


def sample_tasks(mj_model: mujoco.MjModel, n: int, seed: int, log_scale_limit: float = 3.0):
    """`n` tasks stacked into one PhysicsTask, drawn in the reference's order per task."""
    rng = np.random.RandomState(seed)
    rows = []
    for _ in range(n):
        factors = {k: LOG_BASE[k] ** rng.uniform(-log_scale_limit, log_scale_limit,
                                                  getattr(mj_model, k).shape) for k in VARIED}
        m = scaled_model(mj_model, factors)
        rows.append({k: np.array(getattr(m, k), np.float32) for k in VARIED + DERIVED})
    return PhysicsTask(**{k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]})


def nominal_task(mj_model: mujoco.MjModel) -> PhysicsTask:
    return PhysicsTask(**{k: jnp.asarray(getattr(mj_model, k), jnp.float32) for k in VARIED + DERIVED})


class _RandParamsEnv(MetaEnv):
    """Shared planar-walker logic: reward (x_after - x_before)/dt + 1 - 1e-3 |a|^2."""

    xml: str = ""
    seed: int = 0
    frame_skip = 4
    timestep = 0.004
    _info_keys = ("sparse_reward", "reward_run", "reward_ctrl", "reward_alive")

    def __init__(self, n_train: int = 40, n_test: int = 10, iterations: int = 4,
                 ls_iterations: int = 4, integrator: str = "RK4"):
        mj_model = load_gym_model(self.xml, SolverSettings(iterations, ls_iterations))
        mj_model.opt.timestep = self.timestep
        if integrator.upper() != "RK4":  # fidelity knob: the reference integrates with RK4
            mj_model.opt.integrator = getattr(mujoco.mjtIntegrator, f"mjINT_{integrator.upper()}")
        self.mj_model = mj_model
        self.model = mjx.put_model(mj_model)
        self.dt = self.timestep * self.frame_skip
        self._ctrlrange = jnp.asarray(mj_model.actuator_ctrlrange)
        self._n_train, self._n_test = int(n_train), int(n_test)
        self._tasks = sample_tasks(mj_model, self._n_train + self._n_test, self.seed)

    def tasks(self) -> PhysicsTask:
        return self._tasks

    def mj_model_for_task(self, task: PhysicsTask) -> mujoco.MjModel:
        """The host MjModel one (unbatched) task steps: its varied fields, then mj_setConst.

        For checks against MuJoCo C; the derived fields it recomputes from the task's float32
        values agree with the task's stored ones to float32 rounding.
        """
        return model_with(self.mj_model, {k: np.asarray(getattr(task, k), np.float64) for k in VARIED})

    def model_for(self, task: PhysicsTask) -> mjx.Model:
        """The MJX model with this task's fields; only these leaves are batched under vmap."""
        return self.model.replace(**{k: getattr(task, k) for k in VARIED + DERIVED})

    def _obs(self, data: mjx.Data) -> jax.Array:
        return jnp.concatenate([data.qpos[1:], jnp.clip(data.qvel, -10.0, 10.0)])

    def _alive(self, data: mjx.Data) -> jax.Array:
        raise NotImplementedError

    def reset(self, key: jax.Array, task: PhysicsTask) -> EnvState:
        """qpos0 + U(-0.005, 0.005), qvel U(-0.005, 0.005), as the reference."""
        k1, k2 = jax.random.split(key)
        m = self.model_for(task)
        qpos = m.qpos0 + jax.random.uniform(k1, (m.nq,), minval=-0.005, maxval=0.005)
        qvel = jax.random.uniform(k2, (m.nv,), minval=-0.005, maxval=0.005)
        data = reset_data(m, qpos, qvel)
        zero = jnp.zeros(())
        info = {k: zero for k in self._info_keys}
        return EnvState(data, self._obs(data), zero, zero, info, task)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        ctrl = scale_action(action, self._ctrlrange)
        x_before = state.physics.qpos[0]
        data = physics_step(self.model_for(state.task), state.physics, ctrl, self.frame_skip)
        run = (data.qpos[0] - x_before) / self.dt
        ctrl_cost = 1e-3 * jnp.sum(jnp.square(ctrl))
        alive_bonus = jnp.ones(())
        reward = run + alive_bonus - ctrl_cost
        info = {"sparse_reward": jnp.zeros(()), "reward_run": run, "reward_ctrl": -ctrl_cost,
                "reward_alive": alive_bonus}
        alive = self._alive(data)
        return state.replace(physics=data, obs=self._obs(data), reward=reward,
                             terminated=1.0 - alive.astype(jnp.float32), info=info)


class WalkerRandParams(_RandParamsEnv):
    """Walker2d; ends unless 0.8 < height < 2.0 and -1 < torso angle < 1. Obs 17."""

    name = "walker-rand-params"
    xml = "walker2d.xml"
    seed = WALKER_SEED

    def _alive(self, data):
        height, angle = data.qpos[1], data.qpos[2]
        return (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)


class HopperRandParams(_RandParamsEnv):
    """Hopper; ends unless finite, |qpos[2:], qvel| < 100, height > 0.7, |angle| < 0.2. Obs 11."""

    name = "hopper-rand-params"
    xml = "hopper.xml"
    seed = HOPPER_SEED

    def _alive(self, data):
        s = jnp.concatenate([data.qpos, data.qvel])
        height, angle = data.qpos[1], data.qpos[2]
        return (jnp.all(jnp.isfinite(s)) & jnp.all(jnp.abs(s[2:]) < 100.0) & (height > 0.7)
                & (jnp.abs(angle) < 0.2))
