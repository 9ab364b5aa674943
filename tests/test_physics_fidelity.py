"""MJX against MuJoCo C on the same model with identical options.

`rollout_errors` is the generic check: any MJX family whose state.physics is an `mjx.Data` and
that exposes `mj_model` (the MjModel it put on device, solver options included) and
`frame_skip` is covered by `test_env_matches_mujoco_c`, which is parametrized over every
registered MuJoCo family whose module exists. Families with per-task physics (rand-params)
expose `mj_model_for_task(task)` to name the model a task steps; without it a rand-params task
would be compared against the nominal model.

Contact dynamics are chaotic and MJX runs in float32 against MuJoCo's float64, so trajectories
part eventually. With a converged solver (the cheetah's iterations 4 / ls 8) the cheetah stays
within 2e-3 in qvel for 10 env steps and 1.3e-2 for 20 (12 sequences); with iterations 1 /
ls 4 two of 12 sequences already differ by more than 0.5 in qvel at step 5, at the first foot
strike. The tolerance below holds over the first `N_STEPS` env steps of an episode.

The ant is compared with an elliptic friction cone on both sides (`fidelity_env`). With the
default pyramidal cone the friction pyramid is oriented by the contact's tangent frame, and for
capsule-plane contacts MJX 3.17 and MuJoCo C choose different tangents when the capsule is steep
(MJX falls back to a fixed axis when the capsule axis projected on the plane is shorter than
0.5; MuJoCo C keeps the projected axis, measured 0.25 on an ant's lower leg). That rotates the ant's
friction pyramid by about 45 degrees at most foot contacts: one-step qvel differences of 1e-2 to
0.5 at the contact steps with a converged solver (100 / 50) and Euler alike, from the first floor
contact (env step 3). It is a deterministic contact-model difference, not float32 chaos and not
the solver or integrator. An elliptic cone with isotropic friction (the ant's mu = 1 in both
tangents) does not depend on the tangent frame, so everything else of the ant's step (RK4, gear,
solver settings, control scaling, reset) is checked there: qvel within 2.1e-3 over 20 env steps,
3 sequences. docs/envs_locomotion.md records the difference. The planar walkers (cheetah,
walker, hopper) have the capsule axis in the x-z plane, where both tangent choices give the same
pyramid, and the humanoid's contacts are frictionless (condim 1).
"""
from __future__ import annotations

import copy
import functools
import importlib.util

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

import envs
from envs import _REGISTRY
from envs.mjx_common import gym_asset_path

N_STEPS = 10  # env steps compared (50 physics steps for the cheetah)
N_SEQUENCES = 2  # random action sequences (and reset keys) per family
QPOS_TOL = 1e-3
QVEL_TOL = 1e-2

# families whose default pyramidal cone meets MJX's other capsule-plane tangent frame (see above)
ELLIPTIC_FOR_COMPARISON = {"ant-dir", "ant-goal"}


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


_ROLLOUTS: dict = {}


def _compiled_rollout(env):
    """One jitted reset + scan(step) per env object: a single compile per family."""
    if id(env) not in _ROLLOUTS:
        def rollout(key, task, actions):
            state = env.reset(key, task)

            def body(s, a):
                s = env.step(s, a)
                return s, (s.physics.qpos, s.physics.qvel)

            _, (qpos, qvel) = jax.lax.scan(body, state, actions)
            return state.physics.qpos, state.physics.qvel, qpos, qvel

        _ROLLOUTS[id(env)] = (env, jax.jit(rollout))  # env kept alive so its id stays unique
    return _ROLLOUTS[id(env)][1]


def rollout_errors(env, task, actions: np.ndarray, key, mj_model=None) -> tuple[np.ndarray, np.ndarray]:
    """Per env step max |qpos| and |qvel| differences between env.step (MJX) and MuJoCo C.

    MuJoCo C steps `mj_model` if given, else `env.mj_model_for_task(task)` where the family has
    per-task physics, else `env.mj_model`.
    """
    if mj_model is None:
        mj_model = env.mj_model_for_task(task) if hasattr(env, "mj_model_for_task") else env.mj_model
    qpos0, qvel0, mjx_qpos, mjx_qvel = _compiled_rollout(env)(key, task, jnp.asarray(actions, jnp.float32))
    ctrls = scale_action_np(actions, mj_model.actuator_ctrlrange)
    c_qpos, c_qvel = mujoco_c_rollout(mj_model, env.frame_skip, np.asarray(qpos0, np.float64),
                                      np.asarray(qvel0, np.float64), ctrls)
    return np.abs(np.asarray(mjx_qpos) - c_qpos).max(1), np.abs(np.asarray(mjx_qvel) - c_qvel).max(1)


@functools.lru_cache(maxsize=None)
def fidelity_env(name: str):
    """The family as registered; for the ant both models switched to an elliptic cone (see top)."""
    env = envs.make(name)
    if name in ELLIPTIC_FOR_COMPARISON:
        assert env.mj_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL  # the env's own default
        env.mj_model.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
        env.model = mjx.put_model(env.mj_model)
    return env


def _mujoco_families() -> list[str]:
    """Registered families backed by MJX whose module exists now (others land later)."""
    out = []
    for name, (module, _, _) in _REGISTRY.items():
        if module != "envs.point_robot" and importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


@pytest.mark.parametrize("name", _mujoco_families())
def test_env_matches_mujoco_c(name):
    env = fidelity_env(name)
    tasks = env.tasks()
    task = jax.tree.map(lambda x: x[0], tasks)
    rng = np.random.RandomState(0)
    for seed in range(N_SEQUENCES):
        actions = rng.uniform(-1.0, 1.0, size=(N_STEPS, env.action_size))
        qpos_err, qvel_err = rollout_errors(env, task, actions, jax.random.key(seed))
        assert qpos_err.max() < QPOS_TOL, (name, seed, qpos_err)
        assert qvel_err.max() < QVEL_TOL, (name, seed, qvel_err)


def test_rand_params_model_for_task_is_the_task():
    """MuJoCo C's model for a task carries the task's fields (and its derived constants)."""
    from envs.rand_params import DERIVED, VARIED

    env = fidelity_env("hopper-rand-params")
    task = jax.tree.map(lambda x: x[3], env.tasks())
    m = env.mj_model_for_task(task)
    for k in VARIED:
        np.testing.assert_array_equal(getattr(m, k), np.asarray(getattr(task, k), np.float64))
    for k in DERIVED:
        np.testing.assert_allclose(getattr(m, k), np.asarray(getattr(task, k)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(m.body_mass, env.mj_model.body_mass)  # not the nominal model
    assert env.mj_model.body_mass[1] == mujoco.MjModel.from_xml_path(
        gym_asset_path("hopper.xml")).body_mass[1]  # and the nominal model is left alone


def test_cheetah_solver_settings_reach_the_device_model():
    from envs.half_cheetah import HalfCheetahVel

    env = HalfCheetahVel(iterations=3, ls_iterations=7)
    assert env.mj_model.opt.iterations == 3 and env.model.opt.iterations == 3
    assert env.mj_model.opt.ls_iterations == 7 and env.model.opt.ls_iterations == 7
    assert envs.make("cheetah-vel").model.opt.iterations == 4  # the documented default


@pytest.mark.parametrize("name", ["cheetah-dir", "walker-rand-params"])
def test_comparison_detects_a_different_model(name):
    """The check must be able to fail: a heavier gravity in MuJoCo C is caught, and for a
    rand-params family so is comparing a task against the nominal model."""
    env = fidelity_env(name)  # the compiled rollout is shared with test_env_matches_mujoco_c
    task = jax.tree.map(lambda x: x[1], env.tasks())
    right = env.mj_model_for_task(task) if hasattr(env, "mj_model_for_task") else env.mj_model
    heavier = copy.copy(right)  # a full copy: the env's own model is left alone
    heavier.opt.gravity[2] = -12.0
    actions = np.zeros((N_STEPS, env.action_size))
    _, qvel_err = rollout_errors(env, task, actions, jax.random.key(0), mj_model=heavier)
    assert qvel_err.max() > QVEL_TOL
    if hasattr(env, "mj_model_for_task"):
        _, qvel_err = rollout_errors(env, task, actions, jax.random.key(0), mj_model=env.mj_model)
        assert qvel_err.max() > QVEL_TOL
