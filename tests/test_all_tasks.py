"""Every task's reference config builds, trains one tiny iteration and evaluates with finite numbers."""
import jax
import numpy as np
import pytest

from experiments.cli import validate
from experiments.configs import apply_preset, get_config, task_names
from pearl_jax.train import Trainer


@pytest.mark.parametrize("task", task_names())
def test_task_config_runs_one_tiny_iteration(task):
    reference = get_config(task)
    # short paths keep the CPU cost of the MuJoCo families small; the protocol is unchanged
    config = apply_preset(reference, "tiny").replace(max_path_length=5, num_steps_per_eval=15, num_exp_traj_eval=2)
    validate(config)
    trainer = Trainer(config)
    assert trainer.n_train == reference.n_train_tasks
    assert int(trainer.test_ids.shape[0]) == reference.n_eval_tasks
    state = trainer.init(jax.random.key(0))
    pool = int(state.env_steps)
    assert 1 <= pool <= 5 * reference.n_train_tasks  # one (possibly terminated) path per task
    state, metrics = trainer.run_chunk(state, 1)
    assert int(state.iteration) == 1 and int(state.learner.step) == config.num_train_steps_per_itr
    assert int(state.env_steps) > pool
    for name, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), name
    ev = trainer.evaluate(state)
    for name in ("AverageReturn_all_test_tasks", "AverageReturn_all_train_tasks", "AverageTrainReturn_all_train_tasks"):
        assert np.isfinite(float(ev[name])), name
    assert int(ev["Number of eval env steps"]) > 0
