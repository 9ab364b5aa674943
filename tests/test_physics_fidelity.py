"""MJX against MuJoCo C on the same model with identical options.

`rollout_errors` is the generic check: any MJX family whose state.physics is an `mjx.Data` and
that exposes `mj_model` (the MjModel it put on device, solver options included) and
`frame_skip` is covered by `test_env_matches_mujoco_c`, which is parametrized over every
registered MuJoCo family whose module exists. Families with per-task physics can expose
`mj_model_for_task(task)` to name the model a task steps.

Contact dynamics are chaotic and MJX runs in float32 against MuJoCo's float64, so trajectories
part eventually. With a converged solver (the cheetah's iterations 4 / ls 8) the cheetah stays
within 2e-3 in qvel for 10 env steps and 1.3e-2 for 20 (12 sequences); with iterations 1 /
ls 4 two of 12 sequences already differ by more than 0.5 in qvel at step 5, at the first foot
strike. The tolerance below holds over the first `N_STEPS` env steps of an episode.
"""
from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs import _REGISTRY
from envs.mjx_common import gym_asset_path

N_STEPS = 10  # env steps compared (50 physics steps for the cheetah)
QPOS_TOL = 1e-3
QVEL_TOL = 1e-2


def mujoco_c_rollout(mj_model, frame_skip: int, qpos0, qvel0, ctrls) -> tuple[np.ndarray, np.ndarray]:
    """Step MuJoCo C from (qpos0, qvel0) holding each ctrl for frame_skip steps; (T, nq), (T, nv)."""
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


def scale_action_np(action: np.ndarray, ctrlrange: np.ndarray) -> np.ndarray:
    """The reference wrapper's rescale of [-1, 1] onto the control range, then clip (in numpy)."""
    low, high = ctrlrange[:, 0], ctrlrange[:, 1]
    return np.clip(low + (action + 1.0) * 0.5 * (high - low), low, high)


_JIT_CACHE: dict = {}


def _jitted(env):
    """One compiled reset/step per env object (compiling MJX takes seconds)."""
    key = id(getattr(env, "model", env))
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = (jax.jit(env.reset), jax.jit(env.step))
    return _JIT_CACHE[key]


def rollout_errors(env, task, actions: np.ndarray, key) -> tuple[np.ndarray, np.ndarray]:
    """Per env step max |qpos| and |qvel| differences between env.step (MJX) and MuJoCo C."""
    mj_model = env.mj_model_for_task(task) if hasattr(env, "mj_model_for_task") else env.mj_model
    reset, step = _jitted(env)
    state = reset(key, task)
    qpos0, qvel0 = np.asarray(state.physics.qpos, np.float64), np.asarray(state.physics.qvel, np.float64)
    mjx_qpos, mjx_qvel = [], []
    for a in actions:
        state = step(state, jnp.asarray(a, jnp.float32))
        mjx_qpos.append(np.asarray(state.physics.qpos))
        mjx_qvel.append(np.asarray(state.physics.qvel))
    ctrls = scale_action_np(actions, mj_model.actuator_ctrlrange)
    c_qpos, c_qvel = mujoco_c_rollout(mj_model, env.frame_skip, qpos0, qvel0, ctrls)
    return np.abs(np.array(mjx_qpos) - c_qpos).max(1), np.abs(np.array(mjx_qvel) - c_qvel).max(1)


def _mujoco_families() -> list[str]:
    """Registered families backed by MJX whose module exists now (others land later)."""
    out = []
    for name, (module, _, _) in _REGISTRY.items():
        if module != "envs.point_robot" and importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


@pytest.mark.parametrize("name", _mujoco_families())
def test_env_matches_mujoco_c(name):
    env = envs.make(name)
    tasks = env.tasks()
    task = jax.tree.map(lambda x: x[0], tasks)
    rng = np.random.RandomState(0)
    for seed in range(2):
        actions = rng.uniform(-1.0, 1.0, size=(N_STEPS, env.action_size))
        qpos_err, qvel_err = rollout_errors(env, task, actions, jax.random.key(seed))
        assert qpos_err.max() < QPOS_TOL, (name, seed, qpos_err)
        assert qvel_err.max() < QVEL_TOL, (name, seed, qvel_err)


def test_cheetah_solver_settings_reach_the_device_model():
    from envs.half_cheetah import HalfCheetahVel

    env = HalfCheetahVel(iterations=3, ls_iterations=7)
    assert env.mj_model.opt.iterations == 3 and env.model.opt.iterations == 3
    assert env.mj_model.opt.ls_iterations == 7 and env.model.opt.ls_iterations == 7
    assert envs.make("cheetah-vel").model.opt.iterations == 4  # the documented default


def test_comparison_detects_a_different_model():
    """The check must be able to fail: a heavier gravity in MuJoCo C is caught."""
    env = envs.make("cheetah-dir")
    task = env.tasks()[1]
    other = mujoco.MjModel.from_xml_path(gym_asset_path("half_cheetah.xml"))
    other.opt.iterations, other.opt.ls_iterations = 4, 8
    other.opt.gravity[2] = -12.0

    class Wrong:
        def __getattr__(self, attr):
            return getattr(env, attr)

        def mj_model_for_task(self, task):
            return other

    actions = np.zeros((N_STEPS, env.action_size))
    qpos_err, qvel_err = rollout_errors(Wrong(), task, actions, jax.random.key(0))
    assert qvel_err.max() > QVEL_TOL
