"""Meta-training: the run state, one meta-iteration, and chunks of iterations in `lax.scan`.

Everything a resumed run needs is in `RunState`; every function here is pure in it, so a run is
a function of (config, key): `Trainer(config).init(key)` then `run_chunk` any number of times
gives the same result however the iterations are split into chunks. Python only loops over
chunks (to evaluate, log and checkpoint; see experiments/run.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

import envs as env_registry
from envs.base import task_at
from pearl_jax import buffers as buf
from pearl_jax.agent import Agent, TrainState
from pearl_jax.collect import collect_initial_pool, collect_visits, sample_encoder_context
from pearl_jax.config import PearlConfig
from pearl_jax.evaluate import make_evaluate
from pearl_jax.losses import make_update


@struct.dataclass
class RunState:
    learner: TrainState  # parameters, targets, optimiser states, update key, gradient steps
    buffers: buf.Buffers  # RL and encoder buffers of every training task
    key: jax.Array  # collection and batch sampling
    eval_key: jax.Array  # evaluation draws, folded with the iteration: evaluating never
    #                      consumes training randomness, so eval frequency cannot change training
    iteration: jax.Array  # completed meta-iterations (int32)
    env_steps: jax.Array  # training transitions collected so far, initial pool included (int32)


class Trainer:
    """Static pieces of a run (env, agent, task set, compiled functions) built from a config."""

    def __init__(self, config: PearlConfig, env=None):
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
        self._evaluate = make_evaluate(self.env, self.agent, self.tasks, self.train_ids, self.test_ids)
        self.init = jax.jit(self._init)
        self.run_chunk = jax.jit(self._run_chunk, static_argnums=1, donate_argnums=0)
        self.evaluate = jax.jit(self._evaluate_state)

    # --- building the state ----------------------------------------------------------------
    def _init(self, key: jax.Array) -> RunState:
        """Fresh networks and buffers, then the initial pool (iteration 0's collection)."""
        k_learner, k_pool, k_run, k_eval = jax.random.split(key, 4)
        learner = self.agent.init(k_learner)
        bufs = buf.init_buffers(
            self.n_train, self.agent.obs_size, self.agent.action_size, self.rl_capacity, self.enc_capacity
        )
        bufs, steps = collect_initial_pool(
            self.env, self.agent, learner.params, bufs, task_at(self.tasks, self.train_ids), self.train_ids, k_pool
        )
        zero = jnp.zeros((), jnp.int32)
        return RunState(learner, bufs, k_run, k_eval, zero, steps.astype(jnp.int32))

    # --- one meta-iteration ------------------------------------------------------------------
    def sample_meta_batch(self, bufs: buf.Buffers, key):
        """meta_batch task ids with replacement, each with its own RL batch and context batch."""
        c = self.config
        k_ids, k_rl, k_ctx = jax.random.split(key, 3)
        ids = jax.random.randint(k_ids, (c.meta_batch,), 0, self.n_train)
        batch = buf.sample_rl_batch(bufs.rl, k_rl, ids, c.batch_size)
        context, mask = sample_encoder_context(self.agent, bufs.enc, k_ctx, ids, c.embedding_batch_size)
        return batch, context, mask

    def _gradient_steps(self, learner: TrainState, bufs: buf.Buffers):
        def one(learner, _):
            key, k_batch, k_update = jax.random.split(learner.key, 3)
            batch, context, mask = self.sample_meta_batch(bufs, k_batch)
            learner, metrics = self.update(learner.replace(key=key), batch, context, k_update, mask)
            return learner, metrics

        learner, metrics = jax.lax.scan(one, learner, None, length=self.config.num_train_steps_per_itr)
        # the reference logs the first training step of the iteration
        return learner, jax.tree.map(lambda m: m[0], metrics)

    def _iteration(self, state: RunState, _=None):
        c = self.config
        key, k_draw, k_collect = jax.random.split(state.key, 3)
        drawn = jax.random.choice(k_draw, self.train_ids, (c.num_tasks_sample,), replace=True)
        bufs, collected, _ = collect_visits(
            self.env, self.agent, state.learner.params, state.buffers, task_at(self.tasks, drawn), drawn, k_collect
        )
        learner, metrics = self._gradient_steps(state.learner, bufs)
        state = state.replace(
            learner=learner, buffers=bufs, key=key,
            iteration=state.iteration + 1, env_steps=state.env_steps + collected.astype(jnp.int32),
        )
        return state, metrics

    def _run_chunk(self, state: RunState, num_iterations: int):
        """`num_iterations` meta-iterations in one scan; returns the state and stacked metrics."""
        return jax.lax.scan(self._iteration, state, None, length=num_iterations)

    # --- evaluation --------------------------------------------------------------------------
    def _evaluate_state(self, state: RunState):
        key = jax.random.fold_in(state.eval_key, state.iteration)
        return self._evaluate(state.learner.params, state.buffers.enc, key)
