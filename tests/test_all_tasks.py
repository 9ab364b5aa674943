"""Every task's reference config builds, trains one tiny iteration and evaluates with finite numbers."""
import numpy as np
import pytest

import envs
from experiments.configs import apply_preset, get_config, task_names
from pearl_jax.config import validate
from pearl_jax.train import Trainer, seed_slice


# Few tasks and short paths keep the cost small: evaluation steps 3 x n_test envs at once, and
# the test session compiles without backend optimizations, so a humanoid step is slow. The
# families' own task counts are checked in the env tests; the protocol is unchanged.
FEW_TASKS = (("n_test", 2), ("n_train", 4))


@pytest.mark.slow  # nine Trainers, three compiled programs each
@pytest.mark.parametrize("task", task_names())
def test_task_config_runs_one_tiny_iteration(task):
    few = tuple((k, v) for k, v in FEW_TASKS if k in envs.allowed_overrides(task))
    config = validate(apply_preset(get_config(task), "tiny").replace(
        max_path_length=5, num_steps_per_eval=15, num_exp_traj_eval=2, env_kwargs=few))
    trainer = Trainer(config)
    env = envs.make(task, **dict(few))  # the family owns its task counts
    assert env.n_tasks <= 6
    assert trainer.n_train == env.n_train_tasks
    n_test = env.n_train_tasks if env.train_equals_test else env.n_test_tasks
    assert int(trainer.test_ids.shape[0]) == n_test

    state = trainer.init(trainer.seeds())
    assert int(state.iteration.shape[0]) == config.num_seeds  # a leading seed axis
    pool = int(seed_slice(state, 0).env_steps)
    # one path of 1 to max_path_length steps (it may end early) for every train task
    assert trainer.n_train <= pool <= 5 * trainer.n_train
    state, metrics = trainer.run_chunk(state, 1)
    seed0 = seed_slice(state, 0)
    assert int(seed0.iteration) == 1 and int(seed0.learner.step) == config.num_train_steps_per_itr
    assert int(seed0.env_steps) > pool
    for name, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), name
    ev = seed_slice(trainer.evaluate(state), 0)
    for name in ("AverageReturn_all_test_tasks", "AverageReturn_all_train_tasks", "AverageTrainReturn_all_train_tasks"):
        assert np.isfinite(float(ev[name])), name
    assert int(ev["Number of eval env steps"]) > 0
