"""Half-cheetah velocity and direction tasks (PEARL's cheetah-vel and cheetah-dir) in MJX.

Dynamics are gym's HalfCheetah: gymnasium's half_cheetah.xml, timestep 0.01, frame skip 5
(dt 0.05), Euler integration, Newton solver. The observation (20) follows the reference:
qpos[1:] (8), qvel (9), then the torso position. The reference reads it with mujoco-py's
`get_body_com('torso')`, which in gym returns `data.xpos` of the body frame (not the centre of
mass `xipos`). After a step that value is the one MuJoCo computed in the *last substep's*
forward pass, i.e. the kinematics of the state before the final integration; `mjx.step` has the
same order (forward, then integrate), so reading `data.xpos` after the step reproduces it.

The reference control cost is 0.05 * ||a||^2 with `a` the action after the wrapper's rescale
and clip. The cheetah's ctrlrange is [-1, 1] on every motor, so that is the policy action
clipped to [-1, 1].

Solver iterations: under `vmap` MJX always runs the full iteration count, so MuJoCo's defaults
(100 Newton iterations, 50 line-search steps) make a batched step slow. The defaults here,
iterations 4 and ls_iterations 8, give the same trajectories as the defaults in MuJoCo C (the
Newton solve has converged); iterations 1 / ls_iterations 4 (brax's choice) is about twice as
fast at 128 envs but leaves the contact solve unconverged: one-step forward-velocity errors up to
about 3 m/s at hard contacts and trajectories that leave MuJoCo's at the first foot strike.
Measured in docs/envs.md; checked in tests/test_physics_fidelity.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import EnvState, MetaEnv
from envs.mjx_common import SolverSettings, load_gym_model, mjx, physics_step, reset_data, scale_action

CTRL_COST_WEIGHT = 0.05  # reference: 0.5 * 1e-1
RESET_NOISE = 0.1  # gym HalfCheetah: qpos + U(-0.1, 0.1), qvel + 0.1 * N(0, 1)


class _HalfCheetahBase(MetaEnv):
    """Shared physics, observation and control cost; subclasses define the task reward."""

    max_path_length = 200
    frame_skip = 5

    def __init__(self, iterations: int = 4, ls_iterations: int = 8):
        self.settings = SolverSettings(iterations=iterations, ls_iterations=ls_iterations)
        self.mj_model = load_gym_model("half_cheetah.xml", self.settings)
        self.model = mjx.put_model(self.mj_model)
        self.dt = float(self.mj_model.opt.timestep) * self.frame_skip
        self._torso = self.mj_model.body("torso").id
        self._init_qpos = jnp.asarray(self.mj_model.qpos0, jnp.float32)
        self._ctrlrange = jnp.asarray(self.mj_model.actuator_ctrlrange, jnp.float32)

    def _obs(self, data: mjx.Data) -> jax.Array:
        return jnp.concatenate([data.qpos[1:], data.qvel, data.xpos[self._torso]])

    def _task_reward(self, forward_vel: jax.Array, task) -> jax.Array:
        raise NotImplementedError

    def reset(self, key: jax.Array, task) -> EnvState:
        kq, kv = jax.random.split(key)
        nq, nv = self.mj_model.nq, self.mj_model.nv
        qpos = self._init_qpos + jax.random.uniform(kq, (nq,), minval=-RESET_NOISE, maxval=RESET_NOISE)
        qvel = RESET_NOISE * jax.random.normal(kv, (nv,))
        data = reset_data(self.model, qpos, qvel)
        zero = jnp.zeros((), jnp.float32)
        info = {"sparse_reward": zero, "forward_vel": zero, "reward_forward": zero, "reward_ctrl": zero}
        return EnvState(physics=data, obs=self._obs(data), reward=zero, terminated=zero, info=info,
                        task=jnp.asarray(task, jnp.float32))

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        ctrl = scale_action(action, self._ctrlrange)
        x_before = state.physics.qpos[0]
        data = physics_step(self.model, state.physics, ctrl, self.frame_skip)
        forward_vel = (data.qpos[0] - x_before) / self.dt
        reward_forward = self._task_reward(forward_vel, state.task)
        reward_ctrl = -CTRL_COST_WEIGHT * jnp.sum(jnp.square(ctrl))
        info = {"sparse_reward": jnp.zeros_like(forward_vel), "forward_vel": forward_vel,
                "reward_forward": reward_forward, "reward_ctrl": reward_ctrl}
        return state.replace(physics=data, obs=self._obs(data), reward=reward_forward + reward_ctrl,
                             terminated=jnp.zeros_like(forward_vel), info=info)


class HalfCheetahVel(_HalfCheetahBase):
    """Run at a target velocity: reward -|v - v_goal| - 0.05 ||a||^2.

    Task set: 130 velocities from np.random.seed(1337); np.random.uniform(0, 3, 130) (the
    reference docstring says [0, 2], its code draws [0, 3]); the first 100 train, the last 30 test.
    """

    name = "cheetah-vel"

    def __init__(self, n_train: int = 100, n_test: int = 30, iterations: int = 4, ls_iterations: int = 8):
        super().__init__(iterations=iterations, ls_iterations=ls_iterations)
        self._n_train, self._n_test = int(n_train), int(n_test)

    def tasks(self) -> jax.Array:
        # a private RandomState seeded like the reference's global np.random.seed(1337)
        rng = np.random.RandomState(1337)
        return jnp.asarray(rng.uniform(0.0, 3.0, size=(self.n_tasks,)), jnp.float32)

    def _task_reward(self, forward_vel, task):
        return -jnp.abs(forward_vel - task)


class HalfCheetahDir(_HalfCheetahBase):
    """Run forwards (+1) or backwards (-1): reward dir * v - 0.05 ||a||^2; train = test = both."""

    name = "cheetah-dir"
    train_equals_test = True
    _n_train = _n_test = 2

    def tasks(self) -> jax.Array:
        return jnp.asarray([-1.0, 1.0], jnp.float32)  # reference order: directions = [-1, 1]

    def _task_reward(self, forward_vel, task):
        return task * forward_vel
