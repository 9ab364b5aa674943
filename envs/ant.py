"""Ant task families: Ant-Fwd-Back / random directions (ant-dir) and Ant-Goal-2D (ant-goal).

Model: gymnasium's ant.xml as shipped (gear 150, RK4, timestep 0.01, frame_skip 5 -> dt 0.05),
with the constraint-solver iteration counts set explicitly: 6 / 6 by default. brax's 1 / 4 is
faster but changed a 50-step random-action return by about 2x its size in MuJoCo C, while 6 / 6
matches the converged solver (100 / 50) to print precision (docs/envs_locomotion.md).

Contact forces. Both reference rewards penalise `clip(cfrc_ext, -1, 1)` and ant-goal observes
it. MuJoCo fills `cfrc_ext` only inside `mj_rnePostConstraint`; MuJoCo 1.50 (the version the
reference's conda env pins) called it on every step, MuJoCo >= 2.0 does not, so on MuJoCo 2.x
the reference saw zeros. MJX computes it with `mjx.rne_postconstraint` from the solver's
contact forces, so `contact_forces=True` (default) gives the MuJoCo-1.50 semantics and
`False` the all-zero MuJoCo-2.x semantics.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from envs.base import EnvState, MetaEnv
from envs.mjx_common import SolverSettings, load_gym_model, mjx, physics_step, reset_data, scale_action

# Task sets of the reference are unseeded; these fixed seeds make ours reproducible.
ANT_DIR_SEED = 1337
ANT_GOAL_SEED = 1337


def external_forces(model: mjx.Model, data: mjx.Data, enabled: bool) -> jax.Array:
    """Per-body external (contact) wrench `cfrc_ext` (nbody, 6), or zeros when disabled.

    `enabled` is a Python bool fixed at construction, so the choice costs nothing when off.
    """
    if not enabled:
        return jnp.zeros((model.nbody, 6), data.qpos.dtype)
    return mjx.rne_postconstraint(model, data)._impl.cfrc_ext


@struct.dataclass
class DirectionTask:
    angle: jax.Array  # () radians; the goal direction is (cos, sin)


@struct.dataclass
class GoalTask:
    goal: jax.Array  # (2,) target torso xy position


class _AntBase(MetaEnv):
    """Shared ant model, reset and physics; subclasses define tasks, reward and observation."""

    frame_skip = 5

    def __init__(self, iterations: int = 6, ls_iterations: int = 6, contact_forces: bool = True,
                 integrator: str = "RK4"):
        mj_model = load_gym_model("ant.xml", SolverSettings(iterations, ls_iterations))
        if integrator.upper() != "RK4":  # fidelity knob: the reference integrates with RK4
            mj_model.opt.integrator = getattr(mujoco.mjtIntegrator, f"mjINT_{integrator.upper()}")
        self.mj_model = mj_model
        self.model = mjx.put_model(mj_model)
        self.contact_forces = bool(contact_forces)
        self.dt = float(mj_model.opt.timestep) * self.frame_skip
        self._torso = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_BODY, "torso")
        self._ctrlrange = jnp.asarray(mj_model.actuator_ctrlrange)

    def _obs(self, data: mjx.Data, cfrc: jax.Array) -> jax.Array:
        raise NotImplementedError

    def reset(self, key: jax.Array, task) -> EnvState:
        """gym's ant reset: qpos0 + U(-0.1, 0.1), qvel 0.1 * N(0, 1)."""
        k1, k2 = jax.random.split(key)
        m = self.model
        qpos = m.qpos0 + jax.random.uniform(k1, (m.nq,), minval=-0.1, maxval=0.1)
        qvel = 0.1 * jax.random.normal(k2, (m.nv,))
        data = reset_data(m, qpos, qvel)
        zero = jnp.zeros(())
        cfrc = external_forces(m, data, self.contact_forces)
        info = {k: zero for k in self._info_keys}
        return EnvState(data, self._obs(data, cfrc), zero, zero, info, task)

    def _advance(self, state: EnvState, action: jax.Array):
        """Step the physics; returns (data, ctrl, torso xy before, torso xy after, cfrc_ext)."""
        ctrl = scale_action(action, self._ctrlrange)
        before = state.physics.xpos[self._torso, :2]
        data = physics_step(self.model, state.physics, ctrl, self.frame_skip)
        cfrc = external_forces(self.model, data, self.contact_forces)
        return data, ctrl, before, data.xpos[self._torso, :2], cfrc

    @staticmethod
    def _contact_cost(cfrc: jax.Array) -> jax.Array:
        return 0.5e-3 * jnp.sum(jnp.square(jnp.clip(cfrc, -1.0, 1.0)))


class AntDir(_AntBase):
    """Run in a goal direction; reward = velocity . (cos, sin) - ctrl - contact + 1 (survive).

    forward_backward=True: the paper's Ant-Fwd-Back, tasks {0, pi}, train = test.
    forward_backward=False: `n_tasks` angles U[0, 2pi) from numpy seed ANT_DIR_SEED (the reference
    HEAD config: 2 tasks, unseeded), also train = test as in the reference config.
    """

    name = "ant-dir"
    train_equals_test = True
    _info_keys = ("sparse_reward", "reward_run", "reward_ctrl", "reward_contact", "reward_survive")

    def __init__(self, forward_backward: bool = True, n_tasks: int = 2, iterations: int = 6,
                 ls_iterations: int = 6, contact_forces: bool = True, integrator: str = "RK4"):
        super().__init__(iterations, ls_iterations, contact_forces, integrator)
        self.forward_backward = bool(forward_backward)
        if self.forward_backward:
            self._angles = np.array([0.0, np.pi], np.float32)
        else:
            self._angles = np.random.RandomState(ANT_DIR_SEED).uniform(0.0, 2 * np.pi, n_tasks)
            self._angles = self._angles.astype(np.float32)
        self._n_train = self._n_test = len(self._angles)  # train = test

    def tasks(self) -> DirectionTask:
        return DirectionTask(angle=jnp.asarray(self._angles))

    def _obs(self, data, cfrc):
        return jnp.concatenate([data.qpos[2:], data.qvel])

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        data, ctrl, before, after, cfrc = self._advance(state, action)
        angle = state.task.angle
        direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        run = jnp.dot((after - before) / self.dt, direction)
        ctrl_cost = 0.5 * jnp.sum(jnp.square(ctrl))
        contact_cost = self._contact_cost(cfrc)
        survive = jnp.ones(())
        reward = run - ctrl_cost - contact_cost + survive
        z = data.qpos[2]
        finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))
        alive = finite & (z >= 0.2) & (z <= 1.0)
        info = {"sparse_reward": jnp.zeros(()), "reward_run": run, "reward_ctrl": -ctrl_cost,
                "reward_contact": -contact_cost, "reward_survive": survive}
        return state.replace(physics=data, obs=self._obs(data, cfrc), reward=reward,
                             terminated=1.0 - alive.astype(jnp.float32), info=info)


class AntGoal(_AntBase):
    """Reach a 2-D goal in a disc of radius 3; reward = -L1 distance - ctrl - contact; no end.

    Goals r (cos a, sin a), a ~ U[0, 2pi), r = 3 sqrt(U[0, 1]) drawn from numpy seed
    ANT_GOAL_SEED (the reference is unseeded): 150 train, then 30 test.
    """

    name = "ant-goal"
    _info_keys = ("sparse_reward", "reward_goal", "reward_ctrl", "reward_contact")

    def __init__(self, n_train: int = 150, n_test: int = 30, iterations: int = 6,
                 ls_iterations: int = 6, contact_forces: bool = True, integrator: str = "RK4"):
        super().__init__(iterations, ls_iterations, contact_forces, integrator)
        self._n_train, self._n_test = int(n_train), int(n_test)
        rng = np.random.RandomState(ANT_GOAL_SEED)
        n = self._n_train + self._n_test
        a = rng.uniform(0.0, 2 * np.pi, n)
        r = 3.0 * np.sqrt(rng.uniform(0.0, 1.0, n))
        self._goals = np.stack([r * np.cos(a), r * np.sin(a)], -1).astype(np.float32)

    def tasks(self) -> GoalTask:
        return GoalTask(goal=jnp.asarray(self._goals))

    def _obs(self, data, cfrc):
        return jnp.concatenate([data.qpos, data.qvel, jnp.clip(cfrc, -1.0, 1.0).reshape(-1)])

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        data, ctrl, _, after, cfrc = self._advance(state, action)
        goal_reward = -jnp.sum(jnp.abs(after - state.task.goal))
        ctrl_cost = 0.1 * jnp.sum(jnp.square(ctrl))
        contact_cost = self._contact_cost(cfrc)
        reward = goal_reward - ctrl_cost - contact_cost
        info = {"sparse_reward": jnp.zeros(()), "reward_goal": goal_reward,
                "reward_ctrl": -ctrl_cost, "reward_contact": -contact_cost}
        return state.replace(physics=data, obs=self._obs(data, cfrc), reward=reward,
                             terminated=jnp.zeros(()), info=info)
