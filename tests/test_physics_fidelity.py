"""MJX against MuJoCo C on the same model with identical options.

`test_env_matches_mujoco_c` covers every registered MuJoCo family: the family's shared batched
rollout (tests/env_rollouts.py: B envs, T env steps, B different reset states and action
sequences) against MuJoCo C stepping each element's model from the same reset state. Families
with per-task physics (rand-params) expose `mj_model_for_task(task)` to name the model a task
steps; without it a rand-params task would be compared against the nominal model.

Contact dynamics are chaotic and MJX runs in float32 against MuJoCo's float64, so trajectories
part eventually. With a converged solver (the cheetah's iterations 4 / ls 8) the cheetah stays
within 2e-3 in qvel for 10 env steps and 1.3e-2 for 20 (12 sequences); with iterations 1 /
ls 4 two of 12 sequences already differ by more than 0.5 in qvel at step 5, at the first foot
strike. The tolerances below hold over the first T env steps of an episode.

The ant is compared with an elliptic friction cone on both sides (`fidelity_family`). With the
default pyramidal cone the friction pyramid is oriented by the contact's tangent frame, and for
capsule-plane contacts MJX 3.17 and MuJoCo C choose different tangents when the capsule is steep
(MJX falls back to a fixed axis when the capsule axis projected on the plane is shorter than
0.5; MuJoCo C keeps the projected axis, measured 0.25 on an ant's lower leg). That rotates the ant's
friction pyramid by about 45 degrees at most foot contacts: one-step qvel differences of 1e-2 to
0.5 at the contact steps with a converged solver (100 / 50) and Euler alike, from the first floor
contact (env step 3). It is a deterministic contact-model difference, not float32 chaos and not
the solver or integrator. An elliptic cone with isotropic friction (the ant's mu = 1 in both
tangents) does not depend on the tangent frame, so everything else of the ant's step (RK4, gear,
solver settings, control scaling, reset) is checked there. docs/envs_locomotion.md records the
difference. The planar walkers (cheetah, walker, hopper) have the capsule axis in the x-z plane,
where both tangent choices give the same pyramid.
The humanoid's geoms default to condim 1, but a contact takes the larger condim of its two
geoms and the floor's is 3, so its foot contacts have friction. Its feet are spheres, and for
sphere-plane contacts MJX and MuJoCo C choose the same tangent frame (first tangent (0, 1, 0) on
the floor), so the humanoid is compared with its own pyramidal cone, feet on the floor from the
first step (`START_DROP`): qvel within 6e-5 over 10 env steps, where switching MuJoCo C to an
elliptic cone moves qvel by 0.1 to 5.6 from the same states.
"""
from __future__ import annotations

import copy

import jax
import mujoco
import numpy as np
import pytest
from mujoco import mjx

import envs
from envs.mjx_common import gym_asset_path
from tests.env_rollouts import B, T, PhysicsOnly, batch_keys, family, rollout_errors

QPOS_TOL = 1e-3
QVEL_TOL = 1e-2

# families whose default pyramidal cone meets MJX's other capsule-plane tangent frame (see above)
ELLIPTIC_FOR_COMPARISON = {"ant-dir", "ant-goal"}
# the humanoid's feet start 10 cm above the floor: lowered, they touch it from the first step
START_DROP = {"humanoid-dir": 0.1}
MUJOCO_FAMILIES = [n for n in envs.names() if not n.endswith("point-robot")]
_ELLIPTIC: dict = {}


def fidelity_family(name: str):
    """The family as registered (its programs shared with the other env tests); for the ant a
    copy with an elliptic cone on both sides (see top), physics only, so that ant-dir and
    ant-goal (one model, one step) compile it once."""
    if name not in ELLIPTIC_FOR_COMPARISON:
        return family(name)
    if name not in _ELLIPTIC:
        env = envs.make(name)
        assert env.mj_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL  # the env's own default
        env.mj_model.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
        env.model = mjx.put_model(env.mj_model)
        _ELLIPTIC[name] = PhysicsOnly(env)
    return _ELLIPTIC[name]


def c_models(env, tasks) -> list:
    """The MjModel each batch element steps: its task's (rand-params), else the env's own."""
    if not hasattr(env, "mj_model_for_task"):
        return [env.mj_model] * B
    return [env.mj_model_for_task(jax.tree.map(lambda x: x[i], tasks)) for i in range(B)]


@pytest.mark.parametrize("name", MUJOCO_FAMILIES)
def test_env_matches_mujoco_c(name):
    fam = fidelity_family(name)
    tasks = fam.tasks(np.arange(B) % fam.env.n_tasks)
    actions = fam.random_actions(0)  # B different sequences from B reset states
    edit = START_DROP.get(name)
    edit = None if edit is None else (lambda q: q.at[:, 2].add(-START_DROP[name]))
    _, seq = fam.run(batch_keys(0), tasks, actions, edit)
    con = seq.physics._impl.contact  # the comparison covers contacts with friction
    assert np.any((np.asarray(con.dist) < 0) & (np.asarray(con.dim) == 3)), name
    qpos_err, qvel_err = rollout_errors(fam, batch_keys(0), tasks, actions, c_models(fam.env, tasks), edit)
    print(f"{name}: max qpos err {qpos_err.max():.2e}, max qvel err {qvel_err.max():.2e}")
    assert qpos_err.max() < QPOS_TOL, (name, qpos_err)
    assert qvel_err.max() < QVEL_TOL, (name, qvel_err)


def test_rand_params_model_for_task_is_the_task():
    """MuJoCo C's model for a task carries the task's fields (and its derived constants)."""
    from envs.rand_params import DERIVED, VARIED

    env = envs.make("hopper-rand-params")
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
    fam = fidelity_family(name)  # the same compiled rollout as test_env_matches_mujoco_c
    tasks = fam.tasks(np.arange(1, B + 1) % fam.env.n_tasks)
    right = c_models(fam.env, tasks)[0]
    heavier = copy.copy(right)  # a full copy: the env's own model is left alone
    heavier.opt.gravity[2] = -12.0
    actions = np.zeros((T, B, fam.env.action_size), np.float32)
    qpos_err, qvel_err = rollout_errors(fam, batch_keys(0), tasks, actions, [right])
    assert qpos_err.max() < QPOS_TOL and qvel_err.max() < QVEL_TOL  # the right model agrees
    _, qvel_err = rollout_errors(fam, batch_keys(0), tasks, actions, [heavier])
    assert qvel_err.max() > QVEL_TOL
    if hasattr(fam.env, "mj_model_for_task"):
        _, qvel_err = rollout_errors(fam, batch_keys(0), tasks, actions, [fam.env.mj_model])
        assert qvel_err.max() > QVEL_TOL
