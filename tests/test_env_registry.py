"""Every registered task family: lookup errors, derived sizes, batched reset/step over 4 tasks."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import envs
from envs.base import MetaEnv


def test_unknown_name_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        envs.make("cheetah-velocity")
    msg = str(err.value)
    assert "cheetah-velocity" in msg
    assert all(name in msg for name in envs.names())


def test_unknown_override_names_it_and_lists_allowed_ones():
    with pytest.raises(ValueError) as err:
        envs.make("point-robot", goal_radious=0.3)
    msg = str(err.value)
    assert "goal_radious" in msg and "goal_radius" in msg
    with pytest.raises(ValueError):  # a fixed constructor argument is not an override
        envs.make("point-robot", sparse=True)


def test_known_override_takes_effect():
    env = envs.make("sparse-point-robot", goal_radius=0.3, n_train=10, n_test=5)
    assert env.goal_radius == 0.3 and env.n_tasks == 15 and np.asarray(env.tasks()).shape == (15, 2)


def test_names_are_stable_and_unique():
    names = envs.names()
    assert len(names) == len(set(names)) and names == envs.names()


@pytest.mark.parametrize("name", envs.names())
def test_every_family_builds_resets_and_steps_batched(name):
    env = envs.make(name)
    assert isinstance(env, MetaEnv)
    n = 4
    ids = np.arange(n) % env.n_tasks  # two-task families repeat each task
    tasks = envs.task_at(env.tasks(), ids)
    assert len(set(ids.tolist())) >= min(2, env.n_tasks)
    # sizes are derived from the functions themselves, not hand-kept
    task0 = jax.tree.map(lambda x: x[0], env.tasks())
    assert env.observation_size == jax.eval_shape(env.reset, jax.random.key(0), task0).obs.shape[-1]
    assert env.action_size > 0

    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), n), tasks)
    actions = jax.random.uniform(jax.random.key(1), (n, env.action_size), minval=-1.0, maxval=1.0)
    state = jax.jit(jax.vmap(env.step))(state, actions)
    assert state.obs.shape == (n, env.observation_size)
    assert state.reward.shape == (n,) and state.terminated.shape == (n,)
    assert "sparse_reward" in state.info
    for leaf in jax.tree.leaves((state.obs, state.reward, state.terminated, state.info)):
        assert np.all(np.isfinite(np.asarray(leaf))), name
    # the train and test splits index into the task set
    assert np.max(env.train_task_ids()) < env.n_tasks and np.max(env.test_task_ids()) < env.n_tasks
