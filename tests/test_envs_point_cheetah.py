"""Point robots and half-cheetahs: shapes under jit(vmap), rewards from first principles, task sets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from tests.env_rollouts import B, T, batch_keys, family

NAMES = ["point-robot", "sparse-point-robot", "cheetah-vel", "cheetah-dir"]


def batch_of_tasks(env):
    ids = np.arange(B) % env.n_tasks  # cheetah-dir has 2 tasks: each appears twice
    return envs.task_at(env.tasks(), ids)


@pytest.mark.parametrize("name", NAMES)
def test_batched_reset_and_step(name):
    fam = family(name)
    env, tasks = fam.env, batch_of_tasks(fam.env)
    _, seq = fam.run(batch_keys(0), tasks, fam.random_actions(1))
    obs_size = {"point-robot": 2, "sparse-point-robot": 2}.get(name, 20)
    assert env.observation_size == obs_size and seq.obs.shape == (T, B, obs_size)
    assert env.action_size == (2 if "point" in name else 6)
    assert seq.reward.shape == (T, B) and seq.terminated.shape == (T, B)
    for leaf in jax.tree.leaves((seq.obs, seq.reward, seq.info)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_array_equal(np.asarray(seq.task[-1]), np.asarray(tasks))
    assert env.max_path_length == (20 if "point" in name else 200)


@pytest.mark.parametrize("name", NAMES)
def test_reset_draws_fresh_noise(name):
    fam = family(name)
    s = fam.reset(batch_keys(3), envs.task_at(fam.env.tasks(), np.zeros(B, int)))  # one task
    if name == "sparse-point-robot":  # the reference always starts at the origin
        np.testing.assert_array_equal(np.asarray(s.obs), 0.0)
    else:
        assert not np.allclose(np.asarray(s.obs[0]), np.asarray(s.obs[1]))


# --- half-cheetah --------------------------------------------------------------------------


def cheetah_rollout(name):
    """(env, tasks, actions (T, B, 6), x before each step (T, B), per-step states)."""
    fam = family(name)
    tasks = batch_of_tasks(fam.env)
    actions = fam.random_actions(8)
    s0, seq = fam.run(batch_keys(7), tasks, actions)
    x = np.asarray(seq.physics.qpos[..., 0], np.float64)
    x_before = np.concatenate([np.asarray(s0.physics.qpos[None, :, 0], np.float64), x[:-1]])
    return fam.env, tasks, np.asarray(actions, np.float64), x_before, seq


@pytest.mark.parametrize("name", ["cheetah-vel", "cheetah-dir"])
def test_cheetah_reward_from_physics_state(name):
    env, tasks, actions, x_before, seq = cheetah_rollout(name)
    goal = np.asarray(tasks, np.float64)
    assert len(set(goal.tolist())) >= 2  # the batch really mixes tasks
    for t in range(T):
        state, a = jax.tree.map(lambda x: x[t], seq), actions[t]
        x_after = np.asarray(state.physics.qpos[:, 0], np.float64)
        vel = (x_after - x_before[t]) / 0.05  # dt = timestep 0.01 x frame skip 5
        ctrl = 0.05 * np.sum(a**2, axis=1)
        expected = (-np.abs(vel - goal) if name == "cheetah-vel" else goal * vel) - ctrl
        np.testing.assert_allclose(np.asarray(state.reward), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(state.info["forward_vel"]), vel, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(state.info["reward_ctrl"]), -ctrl, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(state.info["sparse_reward"]), 0.0)
        # each element is scored against its own task, not its neighbour's
        other = np.roll(goal, 1)
        wrong = (-np.abs(vel - other) if name == "cheetah-vel" else other * vel) - ctrl
        assert np.abs(np.asarray(state.reward) - wrong).max() > 1e-3


def test_cheetah_observation_layout():
    env, _, _, _, seq = cheetah_rollout("cheetah-vel")
    state = jax.tree.map(lambda x: x[0], seq)
    qpos, qvel, obs = (np.asarray(x) for x in (state.physics.qpos, state.physics.qvel, state.obs))
    np.testing.assert_array_equal(obs[:, :8], qpos[:, 1:])
    np.testing.assert_array_equal(obs[:, 8:17], qvel)
    torso = env.mj_model.body("torso").id
    np.testing.assert_array_equal(obs[:, 17:], np.asarray(state.physics.xpos[:, torso]))


def test_cheetah_never_terminates():
    fam = family("cheetah-dir")
    state = fam.reset(batch_keys(11), batch_of_tasks(fam.env))
    terminated, rewards = [], []
    for k in range(100 // T):  # 100 steps through the shared T-step program
        state, seq = fam.roll(state, fam.random_actions(12 + k))
        terminated.append(seq.terminated)
        rewards.append(seq.reward)
    assert float(jnp.max(jnp.stack(terminated))) == 0.0 and bool(jnp.all(jnp.isfinite(jnp.stack(rewards))))


def test_cheetah_task_sets_match_reference_draw():
    vel = envs.make("cheetah-vel")
    np.random.seed(1337)  # the reference seeds the global RNG, then draws all 130 at once
    expected = np.random.uniform(0.0, 3.0, size=(130,))
    np.testing.assert_allclose(np.asarray(vel.tasks()), expected, rtol=1e-6)
    assert (vel.n_train_tasks, vel.n_test_tasks, vel.n_tasks) == (100, 30, 130)
    assert set(vel.train_task_ids()).isdisjoint(vel.test_task_ids())
    assert sorted([*vel.train_task_ids(), *vel.test_task_ids()]) == list(range(130))
    np.testing.assert_array_equal(np.asarray(vel.tasks()), np.asarray(vel.tasks()))  # deterministic

    d = envs.make("cheetah-dir")
    np.testing.assert_array_equal(np.asarray(d.tasks()), [-1.0, 1.0])
    assert d.train_equals_test and d.n_tasks == 2
    np.testing.assert_array_equal(d.train_task_ids(), d.test_task_ids())


# --- point robots --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["point-robot", "sparse-point-robot"])
def test_point_robot_analytic_step(name):
    fam = family(name)
    tasks = batch_of_tasks(fam.env)
    state = fam.reset(batch_keys(5), tasks)
    start = np.asarray(state.obs, np.float64)
    actions = np.array([[1.0, -1.0], [0.5, 0.25], [3.0, -7.0], [0.0, 0.0]], np.float32)  # row 2 clips
    _, seq = fam.roll(state, jnp.broadcast_to(actions, (T, B, 2)))
    for t in range(T):  # the same action every step: the point moves on a straight line
        moved = start + 0.1 * (t + 1) * np.clip(actions, -1.0, 1.0)
        np.testing.assert_allclose(np.asarray(seq.obs[t]), moved, atol=1e-5)
        dist = np.linalg.norm(moved - np.asarray(tasks), axis=1)
        np.testing.assert_allclose(np.asarray(seq.reward[t]), -dist, atol=1e-5)
    assert not np.any(np.asarray(seq.terminated))


def test_sparse_reward_inside_and_outside_the_goal_radius():
    fam = family("sparse-point-robot")
    goal = np.array([0.0, 1.0], np.float32)
    tasks = jnp.asarray(np.tile(goal, (B, 1)))
    state = fam.reset(batch_keys(0), tasks)
    # place each point so that after each step of zero action it sits at distance 0.05, 0.15,
    # 0.25, 0.6 from the goal
    targets = np.array([[0.0, 0.95], [0.15, 1.0], [0.0, 0.75], [0.6, 1.0]], np.float32)
    state = state.replace(physics=jnp.asarray(targets), obs=jnp.asarray(targets))
    _, seq = fam.roll(state, jnp.zeros((T, B, 2)))
    dist = np.array([0.05, 0.15, 0.25, 0.6])
    np.testing.assert_allclose(np.asarray(seq.reward[0]), -dist, atol=1e-6)
    np.testing.assert_allclose(np.asarray(seq.info["sparse_reward"][0]), [0.95, 0.85, 0.0, 0.0], atol=1e-6)
    assert fam.env.has_sparse_reward and not envs.make("point-robot").has_sparse_reward


def test_point_robot_task_sets_match_reference_draw():
    dense = envs.make("point-robot")
    np.random.seed(1337)  # the reference draws x then y, one goal after another
    expected = np.array([[np.random.uniform(-1.0, 1.0), np.random.uniform(-1.0, 1.0)] for _ in range(100)])
    np.testing.assert_allclose(np.asarray(dense.tasks()), expected, rtol=1e-6)

    sparse = envs.make("sparse-point-robot")
    np.random.seed(1337)
    angles = np.linspace(0, np.pi, num=100)
    goals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.random.shuffle(goals)
    np.testing.assert_allclose(np.asarray(sparse.tasks()), goals, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sparse.tasks()), axis=1), 1.0, atol=1e-6)
    assert np.all(np.asarray(sparse.tasks())[:, 1] >= -1e-6)

    for env in (dense, sparse):
        assert (env.n_train_tasks, env.n_test_tasks, env.n_tasks) == (80, 20, 100)
        train, test = env.train_task_ids(), env.test_task_ids()
        assert set(train).isdisjoint(test) and len(train) + len(test) == 100
        t = np.asarray(env.tasks())
        assert not (set(map(tuple, t[train])) & set(map(tuple, t[test])))  # different goals too
