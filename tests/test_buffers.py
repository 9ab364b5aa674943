"""Buffers: ring semantics, masks, duplicate task ids, sampling support and uniformity, layouts,
sizing from the reference configs, and jit retrace counts."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pearl_jax import buffers as B
from pearl_jax.config import PearlConfig, validate

O, A = 3, 2


def rows(ids, task=0):
    """Recognisable transitions: obs = row id + 1 (all O entries), next_obs = -(row id + 1)."""
    ids = np.asarray(ids, np.float32)
    v = ids + 1.0
    return B.Transition(
        obs=jnp.asarray(np.repeat(v[..., None], O, -1)),
        action=jnp.asarray(np.repeat((v + 1000.0 * task)[..., None], A, -1)),
        reward=jnp.asarray(v * 10.0),
        sparse_reward=jnp.asarray(v * 100.0),
        terminal=jnp.asarray((ids % 3 == 0).astype(np.float32)),
        next_obs=jnp.asarray(-np.repeat(v[..., None], O, -1)),
    )


def replay(n_tasks=3, cap=8):
    return B.init_buffers(n_tasks, O, A, cap, 4).rl


def add1(r, task, ids, valid=None):
    batch = jax.tree.map(lambda x: x[None], rows(ids))
    valid = np.ones((1, len(ids)), bool) if valid is None else np.asarray(valid)[None]
    return B.add(r, jnp.array([task]), batch, jnp.asarray(valid))


def logical_obs(r, task):
    """Stored obs[.,0] of a task, oldest first, read through the ring by hand."""
    pos, size, cap = int(r.insert_pos[task]), int(r.size[task]), r.capacity
    return [float(r.data.obs[task, (pos - size + i) % cap, 0]) for i in range(size)]


def test_wraparound_overwrites_oldest_and_keeps_order():
    r = add1(replay(cap=8), 1, range(5))
    r = add1(r, 1, range(5, 11))  # 11 rows into 8
    assert int(r.size[1]) == 8 and int(r.insert_pos[1]) == 11 % 8
    assert logical_obs(r, 1) == [float(i + 1) for i in range(3, 11)]
    assert int(r.size[0]) == 0 and int(r.size[2]) == 0
    # more than a whole ring in one call: only the newest `cap` rows survive
    r = add1(r, 2, range(20))
    assert logical_obs(r, 2) == [float(i + 1) for i in range(12, 20)]


def test_clear_affects_only_given_task():
    r = add1(add1(replay(), 0, range(4)), 2, range(6))
    before = r
    r = B.clear(r, jnp.array([2]))
    assert r.size.tolist() == [4, 0, 0] and r.insert_pos.tolist() == [4, 0, 0]
    assert logical_obs(r, 0) == logical_obs(before, 0)
    r = add1(r, 2, [50, 51])
    assert logical_obs(r, 2) == [51.0, 52.0]


def test_valid_mask_skips_invalid_rows():
    r = add1(replay(), 0, range(6), [True, False, True, False, False, True])
    assert int(r.size[0]) == 3 and logical_obs(r, 0) == [1.0, 3.0, 6.0]
    r = add1(r, 0, range(6), [False] * 6)
    assert int(r.size[0]) == 3 and int(r.insert_pos[0]) == 3


def test_duplicate_task_ids_append_in_order():
    batch = rows(np.array([[0, 1, 2], [10, 11, 12], [20, 21, 22]]))
    valid = jnp.array([[True, True, False], [True, True, True], [True, False, True]])
    r = B.add(replay(cap=16), jnp.array([1, 0, 1]), batch, valid)
    assert logical_obs(r, 1) == [1.0, 2.0, 21.0, 23.0]
    assert logical_obs(r, 0) == [11.0, 12.0, 13.0]


def test_terminal_and_rewards_stored_as_given():
    r = add1(replay(cap=8), 0, range(6))
    np.testing.assert_array_equal(r.data.terminal[0, :6], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(r.data.reward[0, :6], 10.0 * np.arange(1, 7))
    np.testing.assert_array_equal(r.data.next_obs[0, :6, 1], -np.arange(1, 7))


def test_sampling_only_filled_rows_and_roughly_uniform():
    r = add1(replay(cap=8), 0, range(5))  # partly filled
    r = add1(r, 1, range(13))  # wrapped: rows 5..12 remain
    sample = jax.jit(B.sample_rl_batch, static_argnums=3)
    batch = sample(r, jax.random.key(0), jnp.array([0, 1, 0]), 4000)
    assert batch.obs.shape == (3, 4000, O) and batch.action.shape == (3, 4000, A)
    assert batch.reward.shape == batch.terminal.shape == (3, 4000)
    for t, task, written in [(0, 0, range(1, 6)), (1, 1, range(6, 14)), (2, 0, range(1, 6))]:
        obs = np.asarray(batch.obs[t, :, 0])
        assert set(obs.tolist()) == set(float(v) for v in written)  # every filled row, nothing else
        counts = np.array([np.sum(obs == v) for v in written])
        assert np.all(np.abs(counts / 4000 - 1 / len(written)) < 0.03)
        # fields of a sampled row belong together
        np.testing.assert_array_equal(np.asarray(batch.reward[t]), obs * 10)
        np.testing.assert_array_equal(np.asarray(batch.next_obs[t, :, 0]), -obs)


@pytest.mark.parametrize("use_next_obs", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_context_layout_and_reward_choice(use_next_obs, sparse):
    r = add1(replay(), 1, range(7))
    f = jax.jit(B.sample_context, static_argnums=(3, 4, 5))
    ctx = f(r, jax.random.key(1), jnp.array([1, 1]), 50, use_next_obs, sparse)
    d = B.context_dim(O, A, use_next_obs)
    assert d == (2 * O + A + 1 if use_next_obs else O + A + 1)
    assert ctx.shape == (2, 50, d) and ctx.dtype == jnp.float32
    v = np.asarray(ctx[..., 0])
    assert set(v.ravel().tolist()) <= set(float(i) for i in range(1, 8))
    np.testing.assert_array_equal(ctx[..., O], v)  # action of task 0 rows = id + 1
    np.testing.assert_array_equal(ctx[..., O + A], v * (100 if sparse else 10))
    if use_next_obs:
        np.testing.assert_array_equal(ctx[..., O + A + 1 :], -np.repeat(v[..., None], O, -1))


def test_context_from_transitions_matches_layout():
    t = rows(np.arange(4))
    ctx = B.context_from_transitions(t, True, False)
    np.testing.assert_array_equal(ctx[2], [3, 3, 3, 3, 3, 30, -3, -3, -3])


def test_sequence_is_consecutive_across_wrap():
    r = add1(replay(cap=8), 0, range(13))  # logical rows hold ids 5..12, ring wrapped
    r = add1(r, 1, range(3))  # fewer rows than the window
    f = jax.jit(B.sample_context_sequence, static_argnums=(3, 4, 5))
    starts = set()
    for s in range(40):
        ctx, mask = f(r, jax.random.key(s), jnp.array([0, 1]), 5, False, False)
        assert ctx.shape == (2, 5, O + A + 1) and mask.shape == (2, 5)
        seq = np.asarray(ctx[0, :, 0])
        assert mask[0].all() and np.all(np.diff(seq) == 1) and 6 <= seq[0] <= 9
        starts.add(seq[0])
        np.testing.assert_array_equal(mask[1], [False, False, True, True, True])
        np.testing.assert_array_equal(ctx[1, :, 0], [0, 0, 1, 2, 3])
    assert starts == {6.0, 7.0, 8.0, 9.0}  # every valid start, including ones crossing the wrap


def test_add_visits_reference_order():
    bufs = B.init_buffers(2, O, A, 32, 8)
    bufs = B.add_visits(
        bufs, jnp.array([0, 1]), rows(np.full((2, 2), 90)), jnp.ones((2, 2), bool),
        rows(np.full((2, 1), 90)), jnp.ones((2, 1), bool),
    )
    enc = rows(np.array([[0, 1], [2, 3], [4, 5]]))
    extra = rows(np.array([[10], [11], [12]]))
    ones = lambda s: jnp.ones(s, bool)
    bufs = B.add_visits(bufs, jnp.array([0, 1, 0]), enc, ones((3, 2)), extra, ones((3, 1)))
    assert logical_obs(bufs.enc, 0) == [5.0, 6.0]  # second visit's data only
    assert logical_obs(bufs.enc, 1) == [3.0, 4.0]
    assert logical_obs(bufs.rl, 0) == [91.0, 91.0, 91.0, 1.0, 2.0, 11.0, 5.0, 6.0, 13.0]
    assert int(B.total_size(bufs.rl)) == 9 + 6


def reference(**kw):
    return validate(PearlConfig().replace(**kw))


def test_capacities_from_reference_configs():
    cheetah_vel = reference()  # defaults are cheetah-vel
    rl, enc = B.buffer_capacities(cheetah_vel, 100)
    assert (rl, enc) == (2199 + 59 * 1398, 2199)
    assert 27_000 < rl < 100_000  # above the mean collected (~27k), far below 1e6
    point = reference(max_path_length=20, num_initial_steps=200,
                      num_steps_prior=200, num_extra_rl_steps_posterior=200)
    assert B.buffer_capacities(point, 80) == (219 + 69 * 438, 219)
    sparse_point = point.replace(num_tasks_sample=10, num_steps_prior=100,
                                 num_steps_posterior=900, num_extra_rl_steps_posterior=0)
    rl, enc = B.buffer_capacities(sparse_point, 80)
    assert enc == 119 + 919 and rl < 1e6
    cheetah_dir = reference(num_steps_prior=1000, num_extra_rl_steps_posterior=1000)
    assert B.buffer_capacities(cheetah_dir, 2)[0] == 1_000_000  # capped, FIFO like the reference
    n = B.buffers_nbytes(100, 20, 6, *B.buffer_capacities(cheetah_vel, 100))
    assert n == 100 * (84681 + 2199) * 49 * 4 + 2 * 2 * 100 * 4  # data + int32 counters
    small = B.init_buffers(2, O, A, 5, 3)
    assert B.tree_nbytes(small) == 2 * 8 * (2 * O + A + 3) * 4 + 4 * 2 * 4


def test_visit_margin_is_safe_by_simulation():
    rng = np.random.default_rng(0)
    visits = rng.binomial(2500, 0.01, size=200_000)
    assert visits.max() <= 59  # the visit bound behind cheetah-vel's rl capacity


def test_add_and_sample_trace_once_per_shape():
    traces = {"add": 0, "sample": 0, "ctx": 0}

    @jax.jit
    def add_fn(r, ids, batch, valid):
        traces["add"] += 1
        return B.add(r, ids, batch, valid)

    @functools.partial(jax.jit, static_argnums=3)
    def sample_fn(r, key, ids, n):
        traces["sample"] += 1
        return B.sample_rl_batch(r, key, ids, n)

    @functools.partial(jax.jit, static_argnums=(3, 4, 5))
    def ctx_fn(r, key, ids, n, use_next_obs, sparse):
        traces["ctx"] += 1
        return B.sample_context(r, key, ids, n, use_next_obs, sparse)

    r = replay(cap=8)
    for i in range(4):
        batch = rows(np.arange(6).reshape(2, 3) + 10 * i)
        r = add_fn(r, jnp.array([i % 3, 2]), batch, jnp.ones((2, 3), bool))
        sample_fn(r, jax.random.key(i), jnp.array([0, 2]), 16)
        ctx_fn(r, jax.random.key(i), jnp.array([0, 2]), 8, False, True)
    assert traces == {"add": 1, "sample": 1, "ctx": 1}
    assert int(r.size[2]) == 8 and int(B.total_size(r)) == 8 + 6 + 3


def test_shape_mismatch_is_caught():
    bad = jax.tree.map(lambda x: x[None], rows(range(4)))
    with pytest.raises(AssertionError):
        B.add(replay(), jnp.array([0, 1]), bad, jnp.ones((1, 4), bool))


def test_fresh_buffers_can_be_donated():
    bufs = B.init_buffers(2, O, A, 8, 4)
    step = jax.jit(lambda b, batch: b.replace(rl=B.add(b.rl, jnp.array([0]), batch, jnp.ones((1, 3), bool))),
                   donate_argnums=0)
    bufs = step(bufs, jax.tree.map(lambda x: x[None], rows(range(3))))
    assert bufs.rl.size.tolist() == [3, 0]
