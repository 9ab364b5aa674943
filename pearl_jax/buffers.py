"""Per-task replay storage: the RL buffer and the encoder buffer, as one preallocated pytree.

PEARL keeps two FIFO buffers per training task (docs/reference.md §1.1, §1.5): the RL buffer holds
everything ever collected in the task; the encoder buffer holds only the latest visit's prior
(and posterior) data, or the initial pool, and is cleared each time the task is re-selected.
Here both are ring buffers with a leading task axis, so every operation is a pure, jittable
function of fixed shapes. Terminal transitions are stored like any other (docs/reference.md §6);
`terminal` marks env termination only, never a time-limit end.

Logical row i of a task (0 = oldest) lives at physical row (insert_pos - size + i) % capacity.
After `clear` the task restarts at physical row 0, so its filled rows are always either
[0, size) or the whole ring.
"""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pearl_jax.config import PearlConfig

REFERENCE_CAPACITY = 1_000_000  # the reference's replay_buffer_size per task and buffer


@struct.dataclass
class Transition:
    """One transition, or a batch of them with leading axes (...)."""

    obs: jax.Array  # (..., O)
    action: jax.Array  # (..., A)
    reward: jax.Array  # (...) dense env reward
    sparse_reward: jax.Array  # (...) info['sparse_reward'], 0 where the env has none
    terminal: jax.Array  # (...) 1.0 on env termination only (not on time-limit ends)
    next_obs: jax.Array  # (..., O)


@struct.dataclass
class TaskReplay:
    """A ring buffer per task: data leaves are (n_tasks, capacity, ...)."""

    data: Transition
    insert_pos: jax.Array  # int32[n_tasks], physical row the next transition goes to
    size: jax.Array  # int32[n_tasks], number of filled rows (<= capacity)

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[1]

    @property
    def n_tasks(self) -> int:
        return self.data.reward.shape[0]


@struct.dataclass
class Buffers:
    """Both buffers of every training task; `enc` is the smaller one."""

    rl: TaskReplay
    enc: TaskReplay


# ----------------------------------------------------------------------------------------------
# sizing


def _phase_max(n_steps: int, max_path_length: int) -> int:
    # Collection stops only after a complete trajectory once >= n_steps were gathered, so a
    # phase can end with up to max_path_length - 1 extra rows (fewer when episodes terminate).
    return 0 if n_steps <= 0 else n_steps + max_path_length - 1


def buffer_capacities(
    config: PearlConfig, n_train_tasks: int, sigmas: float = 6.0, extra_visits: int = 4
) -> tuple[int, int]:
    """(rl_capacity, enc_capacity) per task, sized to what a run collects, not to 1e6 rows.

    A non-zero config.rl_buffer_capacity / enc_buffer_capacity is used as given.

    enc: the larger of the initial pool and one visit's prior + posterior phases.
    rl:  initial pool + V visits x (prior + posterior + extra-RL phases), where V bounds the
         binomial number of visits of one task, Bin(num_iterations * num_tasks_sample,
         1 / n_train_tasks), by mean + `sigmas` std + `extra_visits`. Every phase is counted
         at its worst case, nominal + max_path_length - 1.
    Both are capped at the reference's 1e6; a task that still overflows drops its oldest rows
    (FIFO), as the reference does.

    cheetah-vel (100 tasks, 500 iters x 5 visits, 2000 / 400 / 0 / 600 steps, paths of 200):
    enc = 2199, rl = 2199 + 59 x 1398 = 84,681 (mean data per task ~27k); 20-dim obs and
    6-dim actions make 196 bytes a row, so ~1.7 GB for all 100 tasks instead of the
    reference's 2 x 1e6 float64 rows per task. point-robot: enc = 219, rl = 30,441.
    """
    if config.rl_buffer_capacity > 0 and config.enc_buffer_capacity > 0:
        return config.rl_buffer_capacity, config.enc_buffer_capacity
    mpl = config.max_path_length
    initial = _phase_max(config.num_initial_steps, mpl)
    enc_visit = _phase_max(config.num_steps_prior, mpl) + _phase_max(config.num_steps_posterior, mpl)
    rl_visit = enc_visit + _phase_max(config.num_extra_rl_steps_posterior, mpl)
    draws = config.num_iterations * config.num_tasks_sample
    p = 1.0 / n_train_tasks
    mean, std = draws * p, math.sqrt(draws * p * (1.0 - p))
    visits = min(draws, math.ceil(mean + sigmas * std) + extra_visits)
    rl = min(REFERENCE_CAPACITY, initial + visits * rl_visit)
    enc = min(REFERENCE_CAPACITY, max(initial, enc_visit))
    return config.rl_buffer_capacity or max(rl, 1), config.enc_buffer_capacity or max(enc, 1)


def init_buffers(
    n_tasks: int, obs_dim: int, act_dim: int, rl_capacity: int, enc_capacity: int
) -> Buffers:
    """Zero-filled, empty buffers (float32 data, int32 counters)."""

    def replay(cap: int) -> TaskReplay:
        z = lambda *tail: jnp.zeros((n_tasks, cap, *tail), jnp.float32)
        data = Transition(z(obs_dim), z(act_dim), z(), z(), z(), z(obs_dim))
        # distinct arrays for every leaf: a shared one could not be donated to a jitted step
        counter = lambda: jnp.zeros((n_tasks,), jnp.int32)
        return TaskReplay(data=data, insert_pos=counter(), size=counter())

    return Buffers(rl=replay(rl_capacity), enc=replay(enc_capacity))


def tree_nbytes(tree) -> int:
    """Bytes held by a pytree of arrays or of jax.ShapeDtypeStruct."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def buffers_nbytes(n_tasks: int, obs_dim: int, act_dim: int, rl_capacity: int, enc_capacity: int) -> int:
    """Bytes `init_buffers` would allocate, computed without allocating."""
    shapes = jax.eval_shape(
        lambda: init_buffers(n_tasks, obs_dim, act_dim, rl_capacity, enc_capacity)
    )
    return tree_nbytes(shapes)


# ----------------------------------------------------------------------------------------------
# writing


def _check_batch(replay: TaskReplay, batch: Transition, lead: tuple[int, ...]) -> None:
    o, a = replay.data.obs.shape[-1], replay.data.action.shape[-1]
    chex.assert_shape([batch.obs, batch.next_obs], (*lead, o))
    chex.assert_shape(batch.action, (*lead, a))
    chex.assert_shape([batch.reward, batch.sparse_reward, batch.terminal], lead)


def _add_one(replay: TaskReplay, task: jax.Array, rows: Transition, valid: jax.Array) -> TaskReplay:
    """Append the valid rows (S,) of `rows` to one task's ring with a single scatter."""
    cap = replay.capacity
    n_valid = jnp.sum(valid, dtype=jnp.int32)
    offset = jnp.cumsum(valid, dtype=jnp.int32) - 1  # rank of each valid row among the valid
    # If one call brings more than `cap` rows only the newest `cap` survive; dropping the older
    # ones here keeps scatter indices unique (duplicate indices would have no defined winner).
    keep = valid & (offset >= n_valid - cap)
    pos = replay.insert_pos[task]
    idx = jnp.where(keep, (pos + offset) % cap, cap)  # cap is out of bounds: dropped
    data = jax.tree.map(
        lambda buf, x: buf.at[task, idx].set(x.astype(buf.dtype), mode="drop"), replay.data, rows
    )
    return TaskReplay(
        data=data,
        insert_pos=replay.insert_pos.at[task].set((pos + n_valid) % cap),
        size=replay.size.at[task].set(jnp.minimum(replay.size[task] + n_valid, cap)),
    )


def add(replay: TaskReplay, task_ids: jax.Array, batch: Transition, valid: jax.Array) -> TaskReplay:
    """Append batch[k]'s valid rows to task task_ids[k]'s ring, for k = 0..K-1 in order.

    task_ids: int[K] (duplicates allowed: a later k appends after an earlier one);
    batch: Transition with leading (K, S); valid: bool[K, S] (collection pads with invalid rows).
    A full ring overwrites its oldest rows (FIFO).
    """
    chex.assert_rank(task_ids, 1)
    chex.assert_rank(valid, 2)
    chex.assert_equal(task_ids.shape[0], valid.shape[0])
    _check_batch(replay, batch, valid.shape)

    def step(r, xs):
        task, rows, v = xs
        return _add_one(r, task, rows, v), None

    replay, _ = jax.lax.scan(step, replay, (task_ids.astype(jnp.int32), batch, valid.astype(bool)))
    return replay


def clear(replay: TaskReplay, task_ids: jax.Array) -> TaskReplay:
    """Empty the given tasks (data rows are left in place; they are unreachable once size is 0)."""
    chex.assert_rank(task_ids, 1)
    return replay.replace(
        insert_pos=replay.insert_pos.at[task_ids].set(0), size=replay.size.at[task_ids].set(0)
    )


def add_visits(
    buffers: Buffers,
    task_ids: jax.Array,
    enc_batch: Transition,
    enc_valid: jax.Array,
    rl_batch: Transition,
    rl_valid: jax.Array,
) -> Buffers:
    """Record K task visits of one iteration (docs/reference.md §1.3 A), in order.

    Per visit k: clear the task's encoder buffer, add enc_batch[k] (prior + posterior phases,
    (K, S1, ...)) to both buffers, then rl_batch[k] (extra RL phase, (K, S2, ...)) to the RL
    buffer only. With a task drawn twice, its encoder buffer ends with the later visit only.
    """
    chex.assert_rank(task_ids, 1)

    def step(b, xs):
        task, eb, ev, rb, rv = xs
        one = lambda x: x[None]
        tid = one(task)
        enc = add(clear(b.enc, tid), tid, jax.tree.map(one, eb), one(ev))
        rl = add(b.rl, tid, jax.tree.map(one, eb), one(ev))
        rl = add(rl, tid, jax.tree.map(one, rb), one(rv))
        return Buffers(rl=rl, enc=enc), None

    buffers, _ = jax.lax.scan(step, buffers, (task_ids, enc_batch, enc_valid, rl_batch, rl_valid))
    return buffers


def total_size(replay: TaskReplay) -> jax.Array:
    """Filled rows over all tasks (int32 scalar)."""
    return jnp.sum(replay.size)


# ----------------------------------------------------------------------------------------------
# reading


def _physical(replay: TaskReplay, task_ids: jax.Array, logical: jax.Array) -> jax.Array:
    """Map logical rows (0 = oldest), int[T, N], of tasks int[T] to physical ring rows."""
    pos, size = replay.insert_pos[task_ids], replay.size[task_ids]
    return (pos[:, None] - size[:, None] + logical) % replay.capacity


def _gather(replay: TaskReplay, task_ids: jax.Array, rows: jax.Array) -> Transition:
    return jax.tree.map(lambda buf: buf[task_ids[:, None], rows], replay.data)


def _uniform_rows(replay: TaskReplay, key: jax.Array, task_ids: jax.Array, n: int) -> jax.Array:
    chex.assert_rank(task_ids, 1)
    size = jnp.maximum(replay.size[task_ids], 1)  # an empty task yields a stale row: don't sample one
    logical = jax.random.randint(key, (task_ids.shape[0], n), 0, size[:, None])
    return _physical(replay, task_ids, logical)


def sample_rl_batch(replay: TaskReplay, key: jax.Array, task_ids: jax.Array, batch_size: int) -> Transition:
    """Uniform, with replacement, over each task's filled rows: Transition with leading (T, B)."""
    return _gather(replay, task_ids, _uniform_rows(replay, key, task_ids, batch_size))


def context_dim(obs_dim: int, act_dim: int, use_next_obs: bool) -> int:
    return obs_dim + act_dim + 1 + (obs_dim if use_next_obs else 0)


def context_from_transitions(t: Transition, use_next_obs: bool, sparse: bool) -> jax.Array:
    """Encoder input [obs, action, reward(, next_obs)] (..., D); reward is raw (no reward_scale),
    the sparse one when `sparse`; terminals are never part of the context (docs/reference.md §1.6)."""
    reward = t.sparse_reward if sparse else t.reward
    parts = [t.obs, t.action, reward[..., None]] + ([t.next_obs] if use_next_obs else [])
    return jnp.concatenate(parts, axis=-1).astype(jnp.float32)


def sample_context(
    replay: TaskReplay, key: jax.Array, task_ids: jax.Array, n: int, use_next_obs: bool, sparse: bool
) -> jax.Array:
    """Unordered context: n transitions per task, uniform with replacement. float32[T, n, D]."""
    t = _gather(replay, task_ids, _uniform_rows(replay, key, task_ids, n))
    return context_from_transitions(t, use_next_obs, sparse)


def sample_context_sequence(
    replay: TaskReplay, key: jax.Array, task_ids: jax.Array, n: int, use_next_obs: bool, sparse: bool
) -> tuple[jax.Array, jax.Array]:
    """Ordered context for the recurrent encoder: (context float32[T, n, D], mask bool[T, n]).

    Each task gets n consecutive rows in insertion order (oldest first), starting at a start
    drawn uniformly from [0, size - n]. A window may span trajectory (and visit) boundaries.
    A task holding fewer than n rows returns all its rows, right-aligned: the first n - size
    positions are zeros with mask False, so the last position is always the newest row drawn
    (an LSTM reading its last output sees real data; a masked scan skips the padding).
    """
    chex.assert_rank(task_ids, 1)
    size = replay.size[task_ids]
    start = jax.random.randint(key, size.shape, 0, jnp.maximum(size - n, 0) + 1)
    pad = jnp.maximum(n - size, 0)
    steps = jnp.arange(n)[None, :]
    mask = steps >= pad[:, None]
    logical = jnp.clip(start[:, None] + steps - pad[:, None], 0, jnp.maximum(size - 1, 0)[:, None])
    t = _gather(replay, task_ids, _physical(replay, task_ids, logical))
    ctx = context_from_transitions(t, use_next_obs, sparse)
    return ctx * mask[..., None], mask
