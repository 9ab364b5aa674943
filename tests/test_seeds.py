"""Seeds as a batch: seed s of an N-seed program is the single-seed run with seed s.

Measured on this CPU (tiny point-robot config): task draws, keys, counters and the initial pool
are identical; parameters after 1 and 3 iterations differ by at most ~1e-7 (float32 reduction
order of batched vs unbatched matmuls). The bounds below leave a factor of ~10-50 over that.
"""
import jax
import numpy as np
import pytest

from experiments import progress, run
from pearl_jax import placement
from pearl_jax.train import Trainer, host_values, seed_slice
from tests.tiny import tiny_config

SEEDS = (5, 6)


def _host(tree):
    """numpy copies (typed keys as key data), so later donated steps cannot touch them."""
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return jax.tree.map(lambda x: np.array(jax.random.key_data(x) if is_key(x) else x), tree)


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _trajectory(trainer, seeds, iterations=(1, 3)):
    """Host copies of the state at init and after each count in `iterations`, plus evaluations."""
    state = trainer.init(placement.global_array(np.asarray(seeds, np.uint32), None))
    out = {0: _host(state)}
    done = 0
    for target in iterations:
        while done < target:
            state, _ = trainer.run_chunk(state, 1)
            done += 1
        out[target] = _host(state)
        out[f"eval{target}"] = _host(trainer.evaluate(state))
    return out


@pytest.fixture(scope="module")
def batch_and_singles():
    batch = Trainer(tiny_config(seed=SEEDS[0], num_seeds=len(SEEDS)))
    assert batch.slots == len(SEEDS) and np.array_equal(np.asarray(batch.seeds()), SEEDS)
    single = Trainer(tiny_config(num_seeds=1))  # one program serves every single seed
    return _trajectory(batch, SEEDS), [_trajectory(single, [s]) for s in SEEDS]


def test_seed_s_of_a_batch_is_the_single_seed_run(batch_and_singles):
    batch, singles = batch_and_singles
    for i, one in enumerate(singles):
        b = {k: seed_slice(v, i) for k, v in batch.items()}
        s = {k: seed_slice(v, 0) for k, v in one.items()}
        # same randomness: keys, counters, and the initial pool (no learning has happened yet)
        for when in (0, 1, 3):
            np.testing.assert_array_equal(b[when].key, s[when].key)
            np.testing.assert_array_equal(b[when].eval_key, s[when].eval_key)
            np.testing.assert_array_equal(b[when].learner.key, s[when].learner.key)
            assert int(b[when].env_steps) == int(s[when].env_steps)
            np.testing.assert_array_equal(b[when].buffers.rl.size, s[when].buffers.rl.size)
            np.testing.assert_array_equal(b[when].buffers.enc.insert_pos, s[when].buffers.enc.insert_pos)
        jax.tree.map(np.testing.assert_array_equal, b[0], s[0])
        # learning: equal up to float32 reduction order, after one iteration and after three
        assert _max_diff(b[1].learner.params, s[1].learner.params) < 5e-6
        assert _max_diff(b[3].learner.params, s[3].learner.params) < 5e-6
        assert _max_diff(b[3].buffers, s[3].buffers) < 5e-5  # data collected by those policies
        for key in ("AverageReturn_all_test_tasks", "AverageTrainReturn_all_train_tasks"):
            np.testing.assert_allclose(b["eval3"][key], s["eval3"][key], rtol=1e-4, atol=1e-4)


def test_seeds_of_a_batch_are_different_runs(batch_and_singles):
    batch, _ = batch_and_singles
    a, b = seed_slice(batch[3], 0), seed_slice(batch[3], 1)
    assert not np.array_equal(a.key, b.key)
    assert _max_diff(a.learner.params, b.learner.params) > 1e-3


def test_a_diverged_seed_does_not_touch_the_others():
    """NaN parameters in one seed: the other seed's run is unchanged, and the run names the
    diverged seed alone."""
    trainer = Trainer(tiny_config(seed=SEEDS[0], num_seeds=len(SEEDS)))
    clean = trainer.init(trainer.seeds())
    poisoned = jax.tree.map(lambda x: x.copy(), clean)  # a copy: run_chunk donates its input
    poisoned = poisoned.replace(learner=poisoned.learner.replace(params=jax.tree.map(
        lambda p: p.at[1].set(np.nan), poisoned.learner.params)))
    clean, m_clean = trainer.run_chunk(clean, 1)
    poisoned, m_poisoned = trainer.run_chunk(poisoned, 1)
    jax.tree.map(np.testing.assert_array_equal, _host(seed_slice(clean, 0)), _host(seed_slice(poisoned, 0)))
    metrics = host_values(m_poisoned)
    bad = run._non_finite_seeds(metrics, list(SEEDS))
    assert [seed for seed, _ in bad] == [SEEDS[1]] and "QF Loss" in bad[0][1]
    assert run._non_finite_seeds(host_values(m_clean), list(SEEDS)) == []


def test_progress_line_shows_mean_and_range_over_seeds():
    assert progress.format_returns(np.array([-3.0, -1.0, -2.0])) == "-2.00 [-3.00, -1.00] over 3 seeds"
    assert progress.format_returns(np.array([-1.5])) == "-1.50"
    assert progress.format_returns(None) == "n/a"
    # env steps are a curve's x axis: per seed, never the sum over the batch
    assert progress.format_env_steps([96000, 96000, 96000]) == "96,000 per seed"
    assert progress.format_env_steps([1200]) == "1,200"
    assert progress.format_env_steps([90, 110]) == "100 per seed (mean; 90 to 110)"


def test_phantom_slots_pad_to_the_seed_axis():
    values = placement.seed_values(7, 3, 4)
    assert values.dtype == np.uint32 and values.tolist() == [7, 8, 9, 7]
    assert placement.seed_values(2**32 - 2, 2, 2).tolist() == [2**32 - 2, 2**32 - 1]
    assert placement.seed_slots(3, None) == 3
    with pytest.raises(placement.PlacementError, match="--task_shards=3: must divide the 1 visible"):
        placement.make_mesh(3)
