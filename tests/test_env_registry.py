"""Every registered task family: lookup errors, derived sizes, batched reset/step over 4 tasks."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import envs
from envs.base import MetaEnv
from tests.env_rollouts import B, T, batch_keys, family


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


# (observation, action) sizes of each family, as docs/envs.md and the README list them
SIZES = {"point-robot": (2, 2), "sparse-point-robot": (2, 2), "cheetah-vel": (20, 6),
         "cheetah-dir": (20, 6), "ant-dir": (27, 8), "ant-goal": (113, 8), "humanoid-dir": (376, 17),
         "walker-rand-params": (17, 6), "hopper-rand-params": (11, 3)}


def test_every_family_has_documented_sizes():
    assert sorted(SIZES) == sorted(envs.names())


@pytest.mark.parametrize("name", envs.names())
def test_every_family_builds_resets_and_steps_batched(name):
    fam = family(name)  # the batched programs the other env tests share
    env = fam.env
    assert isinstance(env, MetaEnv)
    ids = np.arange(B) % env.n_tasks  # two-task families repeat each task
    tasks = envs.task_at(env.tasks(), ids)
    assert len(set(ids.tolist())) >= min(2, env.n_tasks)
    s0, seq = fam.run(batch_keys(0), tasks, fam.random_actions(1))
    # the derived sizes are the sizes the functions produce, and the documented ones
    assert (env.observation_size, env.action_size) == SIZES[name]
    assert s0.obs.shape == (B, env.observation_size) and seq.obs.shape == (T, B, env.observation_size)
    if hasattr(env, "mj_model"):  # the action drives every actuator
        assert seq.physics.ctrl.shape == (T, B, env.action_size)
    assert seq.reward.shape == (T, B) and seq.terminated.shape == (T, B)
    assert "sparse_reward" in seq.info
    for leaf in jax.tree.leaves((seq.obs, seq.reward, seq.terminated, seq.info)):
        assert np.all(np.isfinite(np.asarray(leaf))), name
    # the train and test splits index into the task set
    assert np.max(env.train_task_ids()) < env.n_tasks and np.max(env.test_task_ids()) < env.n_tasks
