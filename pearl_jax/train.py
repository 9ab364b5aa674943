"""Meta-training: the run state, one meta-iteration, and chunks of iterations in `lax.scan`,
for a batch of seeds at once.

Everything a resumed run needs is in `RunState`. Each function below is first written for ONE
seed and pure in its state; the public ones (`init`, `run_chunk`, `evaluate`) are those
functions under `jit(vmap(...))` over a leading seed axis. A single-seed run is the batch of
one, so there is one code path. Seed s of an N-seed batch is the same run as a batch of one
with seed s: the same task draws, data and evaluation draws, and parameters equal up to float32
reduction order. A run is a function of (config, seeds): `init(seeds)` then `run_chunk` any
number of times gives the same result however the iterations are split into chunks.

Placement (pearl_jax/placement.py) is an argument, not a second trainer: given a mesh, the
seed axis is laid out over its `seed` devices and, optionally, each gradient step's meta-batch
over its `task` devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

import envs as env_registry
from envs.base import task_at
from pearl_jax import buffers as buf
from pearl_jax import placement
from pearl_jax.agent import Agent, TrainState
from pearl_jax.collect import collect_initial_pool, collect_visits, sample_encoder_context
from pearl_jax.config import PearlConfig, validate
from pearl_jax.evaluate import make_evaluate
from pearl_jax.losses import make_update

SEED_AXIS = placement.SEED_AXIS


@struct.dataclass
class RunState:
    learner: TrainState  # parameters, targets, optimiser states, update key, gradient steps
    buffers: buf.Buffers  # RL and encoder buffers of every training task
    key: jax.Array  # collection and batch sampling
    eval_key: jax.Array  # evaluation draws, folded with the iteration: evaluating never
    #                      consumes training randomness, so eval frequency cannot change training
    iteration: jax.Array  # completed meta-iterations (int32)
    env_steps: jax.Array  # this seed's training transitions so far, initial pool included (int32:
    #                       the largest reference run collects ~11.5M; sums over seeds are in Python)


class Trainer:
    """Static pieces of a run (env, agent, task set, compiled functions) built from a config.

    `mesh`: a (seed, task) mesh from `placement.make_mesh`, or None for the default device.
    The batch holds `slots` seeds: the config's `num_seeds` rounded up to the mesh's seed axis
    (extra slots are phantom copies of the first seed; see `real`).
    """

    def __init__(self, config: PearlConfig, env=None, mesh=None):
        config = validate(config)
        self.env = env if env is not None else env_registry.make(config.task, **dict(config.env_kwargs))
        self.tasks = self.env.tasks()
        self.train_ids = jnp.asarray(self.env.train_task_ids())
        self.test_ids = jnp.asarray(self.env.test_task_ids())
        self.n_train = int(self.train_ids.shape[0])
        self.rl_capacity, self.enc_capacity = buf.buffer_capacities(config, self.n_train)
        # the resolved sizes become part of the config a run saves (and resumes with)
        self.config = config.replace(rl_buffer_capacity=self.rl_capacity, enc_buffer_capacity=self.enc_capacity)
        self.agent = Agent(self.config, self.env.observation_size, self.env.action_size)
        self.update = make_update(self.agent)
        self._evaluate = make_evaluate(self.env, self.agent, self.tasks, self.train_ids, self.test_ids, SEED_AXIS)
        self.mesh = mesh
        self.slots = placement.seed_slots(self.config.num_seeds, mesh)
        self._split_tasks = placement.task_constraint(mesh)

        self.init = self.per_seed(self._init)
        self.run_chunk = self.per_seed(self._run_chunk, in_axes=(0, None), static_argnums=1, donate_argnums=0)
        self.evaluate = self.per_seed(self._evaluate_state)

    def per_seed(self, fn, in_axes=0, **jit_kwargs):
        """`fn` written for one seed, as one jitted function over the batch's seed slots (laid
        out over the mesh's seed axis when there is a mesh). Benchmarks time pieces this way."""
        batched = jax.vmap(fn, in_axes=in_axes, axis_name=SEED_AXIS,
                           spmd_axis_name=None if self.mesh is None else SEED_AXIS)
        if self.mesh is not None:
            jit_kwargs["out_shardings"] = placement.batch_sharding(self.mesh)
        return jax.jit(batched, **jit_kwargs)

    # --- the batch --------------------------------------------------------------------------
    @property
    def real(self) -> slice:
        """The slots that hold the config's seeds (the rest are phantoms)."""
        return slice(0, self.config.num_seeds)

    def seeds(self) -> jax.Array:
        """uint32 seeds of every slot, laid out over the mesh: the argument of `init`."""
        c = self.config
        return placement.global_array(placement.seed_values(c.seed, c.num_seeds, self.slots), self.mesh)

    def abstract_state(self, slots: int | None = None) -> RunState:
        """Shapes, dtypes and shardings of the batched state, without computing it; with
        `slots`, of a batch of that many slots (a checkpoint written on another device count).
        Traced from `_fresh`, which has `init`'s shapes without its rollout to trace (tens of
        seconds for an MJX task)."""
        slots = self.slots if slots is None else slots
        fresh = jax.vmap(lambda seed: self._fresh(seed)[0], axis_name=SEED_AXIS)
        out = jax.eval_shape(fresh, jax.ShapeDtypeStruct((slots,), jnp.uint32))
        if self.mesh is None:
            return out
        d = self.mesh.shape[placement.SEED_AXIS]
        # an uneven count cannot be split: keep whole copies instead
        spec = placement.PartitionSpec(placement.SEED_AXIS if slots % d == 0 else None)
        sharding = placement.NamedSharding(self.mesh, spec)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), out)

    def fit_slots(self, state: RunState) -> RunState:
        """A batch of any slot count (>= num_seeds) refitted to this trainer's slots: the real
        seeds kept, phantoms re-made as copies of the first seed."""
        have = int(jax.tree.leaves(state)[0].shape[0])
        if have == self.slots:
            return state
        index = np.concatenate([np.arange(self.config.num_seeds), np.zeros(self.slots - self.config.num_seeds, int)])
        shard = {} if self.mesh is None else {"out_shardings": placement.batch_sharding(self.mesh)}
        return jax.jit(lambda s: jax.tree.map(lambda x: x[index], s), **shard)(state)

    # --- building the state (one seed) -----------------------------------------------------
    def _fresh(self, seed: jax.Array) -> tuple[RunState, jax.Array]:
        """Fresh networks, empty buffers and keys (and the initial pool's key): `_init` before
        it collects anything, with the same shapes."""
        key = jax.random.key(seed)
        k_learner, k_pool, k_run, k_eval = jax.random.split(key, 4)
        learner = self.agent.init(k_learner)
        bufs = buf.init_buffers(
            self.n_train, self.agent.obs_size, self.agent.action_size, self.rl_capacity, self.enc_capacity
        )
        zero = lambda: jnp.zeros((), jnp.int32)  # distinct arrays: each leaf may be donated
        return RunState(learner, bufs, k_run, k_eval, zero(), zero()), k_pool

    def _init(self, seed: jax.Array) -> RunState:
        """Fresh networks and buffers, then the initial pool (iteration 0's collection)."""
        state, k_pool = self._fresh(seed)
        bufs, steps = collect_initial_pool(
            self.env, self.agent, state.learner.params, state.buffers, task_at(self.tasks, self.train_ids),
            self.train_ids, k_pool, SEED_AXIS,
        )
        return state.replace(buffers=bufs, env_steps=steps.astype(jnp.int32))

    # --- one meta-iteration (one seed) -----------------------------------------------------------
    def sample_meta_batch(self, bufs: buf.Buffers, key):
        """meta_batch task ids with replacement, each with its own RL batch and context batch."""
        c = self.config
        k_ids, k_rl, k_ctx = jax.random.split(key, 3)
        ids = jax.random.randint(k_ids, (c.meta_batch,), 0, self.n_train)
        batch = buf.sample_rl_batch(bufs.rl, k_rl, ids, c.batch_size)
        context, mask = sample_encoder_context(self.agent, bufs.enc, k_ctx, ids, c.embedding_batch_size)
        if self._split_tasks is not None:  # data parallel over the meta-batch
            batch, context, mask = self._split_tasks((batch, context, mask))
        return batch, context, mask

    def gradient_steps(self, learner: TrainState, bufs: buf.Buffers):
        """One iteration's `num_train_steps_per_itr` updates; metrics of the first one (the
        step the reference logs)."""
        def one(learner, _):
            key, k_batch, k_update = jax.random.split(learner.key, 3)
            batch, context, mask = self.sample_meta_batch(bufs, k_batch)
            learner, metrics = self.update(learner.replace(key=key), batch, context, k_update, mask)
            return learner, metrics

        learner, metrics = jax.lax.scan(one, learner, None, length=self.config.num_train_steps_per_itr)
        return learner, jax.tree.map(lambda m: m[0], metrics)

    def collect(self, state: RunState, k_draw, k_collect):
        """One iteration's task draws and visits: (buffers, transitions collected)."""
        c = self.config
        drawn = jax.random.choice(k_draw, self.train_ids, (c.num_tasks_sample,), replace=True)
        bufs, collected, _ = collect_visits(
            self.env, self.agent, state.learner.params, state.buffers, task_at(self.tasks, drawn), drawn,
            k_collect, SEED_AXIS,
        )
        return bufs, collected

    def _iteration(self, state: RunState, _=None):
        key, k_draw, k_collect = jax.random.split(state.key, 3)
        bufs, collected = self.collect(state, k_draw, k_collect)
        learner, metrics = self.gradient_steps(state.learner, bufs)
        state = state.replace(
            learner=learner, buffers=bufs, key=key,
            iteration=state.iteration + 1, env_steps=state.env_steps + collected.astype(jnp.int32),
        )
        return state, metrics

    def _run_chunk(self, state: RunState, num_iterations: int):
        """`num_iterations` meta-iterations in one scan; returns the state and stacked metrics."""
        return jax.lax.scan(self._iteration, state, None, length=num_iterations)

    # --- evaluation (one seed) -------------------------------------------------------------------
    def _evaluate_state(self, state: RunState):
        key = jax.random.fold_in(state.eval_key, state.iteration)
        return self._evaluate(state.learner.params, state.buffers.enc, key)


def seed_slice(tree, index):
    """One slot (or a slice of slots) of a batched pytree, e.g. one seed's state or metrics."""
    return jax.tree.map(lambda x: x[index], tree)


def host_values(tree):
    """A batched pytree of small arrays (metrics, counters) as numpy on this process, gathered
    from every process when the seed axis spans several."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.device_get(tree)
