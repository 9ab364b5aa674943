"""Humanoid-Direc-2D (humanoid-dir): walk in a goal direction in the plane.

Model: gymnasium's humanoid.xml (RK4, timestep 0.003, frame_skip 5 -> dt 0.015, 17 motors with
ctrl range +-0.4). Its solver is PGS, which MJX lacks, so it is switched in code to `solver`
(Newton by default) with explicit iteration counts: 4 / 4 matches the xml's PGS-50 return to
0.02% over 50 random-action steps, where 1 / 4 is 11% off (docs/envs_locomotion.md). Contact forces (`cfrc_ext`, 84 observation slots and the impact cost) follow the ant's
`contact_forces` switch: True = MuJoCo-1.50 semantics (computed), False = MuJoCo-2.x zeros.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.ant import DirectionTask, external_forces
from envs.base import EnvState, MetaEnv
from envs.mjx_common import SolverSettings, load_gym_model, mjx, physics_step, reset_data, scale_action

HUMANOID_DIR_SEED = 1337  # the reference draws its 130 directions unseeded


def mass_center(model: mjx.Model, data: mjx.Data) -> jax.Array:
    """Mass-weighted mean of the bodies' COM positions, xy (gym's mass_center)."""
    mass = model.body_mass[:, None]
    return (jnp.sum(mass * data.xipos, 0) / jnp.sum(mass))[:2]


class HumanoidDir(MetaEnv):
    """reward = 0.25 * dcom . (cos, sin) / opt.timestep - 0.1 |ctrl|^2 - min(0.5e-6 |cfrc|^2, 10) + 5.

    The division by the physics timestep (not dt) is gym Humanoid-v2's, kept as in the reference.
    Terminates when the root height leaves [1, 2].
    """

    name = "humanoid-dir"
    frame_skip = 5
    _info_keys = ("sparse_reward", "reward_run", "reward_ctrl", "reward_impact", "reward_alive")

    def __init__(self, n_train: int = 100, n_test: int = 30, solver: str = "Newton",
                 iterations: int = 4, ls_iterations: int = 4, contact_forces: bool = True):
        mj_model = load_gym_model("humanoid.xml", SolverSettings(iterations, ls_iterations, solver))
        self.mj_model = mj_model
        self.model = mjx.put_model(mj_model)
        self.contact_forces = bool(contact_forces)
        self.dt = float(mj_model.opt.timestep) * self.frame_skip
        self._ctrlrange = jnp.asarray(mj_model.actuator_ctrlrange)
        self._n_train, self._n_test = int(n_train), int(n_test)
        rng = np.random.RandomState(HUMANOID_DIR_SEED)
        self._angles = rng.uniform(0.0, 2 * np.pi, self._n_train + self._n_test).astype(np.float32)

    def tasks(self) -> DirectionTask:
        return DirectionTask(angle=jnp.asarray(self._angles))

    def _obs(self, data: mjx.Data, cfrc: jax.Array) -> jax.Array:
        """376 = qpos[2:] 22, qvel 23, cinert 14x10, cvel 14x6, qfrc_actuator 23, cfrc_ext 14x6."""
        return jnp.concatenate([
            data.qpos[2:], data.qvel, data._impl.cinert.reshape(-1), data.cvel.reshape(-1),
            data.qfrc_actuator, cfrc.reshape(-1),
        ])

    def reset(self, key: jax.Array, task: DirectionTask) -> EnvState:
        """gym's humanoid reset: qpos0 + U(-0.01, 0.01), qvel U(-0.01, 0.01)."""
        k1, k2 = jax.random.split(key)
        m = self.model
        qpos = m.qpos0 + jax.random.uniform(k1, (m.nq,), minval=-0.01, maxval=0.01)
        qvel = jax.random.uniform(k2, (m.nv,), minval=-0.01, maxval=0.01)
        data = reset_data(m, qpos, qvel)
        cfrc = external_forces(m, data, self.contact_forces)
        zero = jnp.zeros(())
        info = {k: zero for k in self._info_keys}
        return EnvState(data, self._obs(data, cfrc), zero, zero, info, task)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        m = self.model
        ctrl = scale_action(action, self._ctrlrange)
        before = mass_center(m, state.physics)
        data = physics_step(m, state.physics, ctrl, self.frame_skip)
        after = mass_center(m, data)
        cfrc = external_forces(m, data, self.contact_forces)
        angle = state.task.angle
        direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        run = 0.25 * jnp.dot(after - before, direction) / m.opt.timestep
        ctrl_cost = 0.1 * jnp.sum(jnp.square(data.ctrl))
        impact_cost = jnp.minimum(0.5e-6 * jnp.sum(jnp.square(cfrc)), 10.0)
        alive = 5.0 * jnp.ones(())
        reward = run - ctrl_cost - impact_cost + alive
        z = data.qpos[2]
        fell = (z < 1.0) | (z > 2.0)
        info = {"sparse_reward": jnp.zeros(()), "reward_run": run, "reward_ctrl": -ctrl_cost,
                "reward_impact": -impact_cost, "reward_alive": alive}
        return state.replace(physics=data, obs=self._obs(data, cfrc), reward=reward,
                             terminated=fell.astype(jnp.float32), info=info)
