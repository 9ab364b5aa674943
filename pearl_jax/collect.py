"""Training-time data collection, exactly the reference's phases (PEARL_SPEC 1.2-1.5), batched.

A *visit* is one draw of a training task in an iteration: clear its encoder buffer, collect a
prior phase (both buffers), a posterior phase (both buffers) and an extra RL-only posterior
phase. Visits of one iteration are independent (the policy does not change between them, and a
visit's context comes from its own, freshly cleared, encoder buffer), so all of them roll out in
parallel; `buffers.add_visits` then writes them in draw order, which keeps the reference's
outcome when a task is drawn twice. Inside a posterior phase the encoder buffer *is* the visit's
own data so far, so z is inferred from that local history rather than the global buffer.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pearl_jax import buffers as buf
from pearl_jax import posterior
from pearl_jax.agent import Agent
from pearl_jax.rollout import Rollout, empty_history, rollout


def prior_z(agent: Agent):
    """choose_z for prior phases: an independent N(0, I) draw per trajectory."""

    def choose(key, traj_index, history, history_size):
        mean, var = posterior.prior(traj_index.shape[0], agent.config.latent_size)
        return posterior.sample_z(key, mean, var)

    return choose


def context_from_history(agent: Agent, key, history, history_size, n: int):
    """A context batch of n transitions drawn from each env's history, as from a buffer.

    Unordered uniform draws for the MLP encoder; an ordered window (with mask) for the LSTM.
    """
    c = agent.config
    replay = buf.TaskReplay(data=history, insert_pos=history_size, size=history_size)
    ids = jnp.arange(history_size.shape[0])
    if c.recurrent:
        return buf.sample_context_sequence(replay, key, ids, n, c.use_next_obs_in_context, c.sparse_rewards)
    return buf.sample_context(replay, key, ids, n, c.use_next_obs_in_context, c.sparse_rewards), None


def posterior_z_from_history(agent: Agent, encoder_params):
    """choose_z for posterior phases: the first trajectory of a phase uses the prior (the belief
    is reset at every collection call); later ones a z from an `embedding_batch_size` context
    drawn from the visit's encoder-buffer data."""

    def choose(key, traj_index, history, history_size):
        k_ctx, k_z, k_prior = jax.random.split(key, 3)
        context, mask = context_from_history(agent, k_ctx, history, history_size, agent.config.embedding_batch_size)
        mean, var = agent.infer_posterior(encoder_params, context, mask)
        z_post = posterior.sample_z(k_z, mean, var)
        z_prior = prior_z(agent)(k_prior, traj_index, history, history_size)
        use_prior = (traj_index == 0) | (history_size == 0)
        return jnp.where(use_prior[:, None], z_prior, z_post)

    return choose


def _phase(env, agent, params, tasks, key, num_steps, choose_z, history, history_size, record):
    return rollout(
        env, agent, params["policy"], tasks, key,
        num_steps=num_steps, max_path_length=agent.config.max_path_length, deterministic=False,
        choose_z=choose_z, history=history, history_size=history_size, record_history=record,
    )


def _concat(a: Rollout, b: Rollout):
    cat = lambda x, y: jnp.concatenate([x, y], axis=1)
    return jax.tree.map(cat, a.transitions, b.transitions), cat(a.valid, b.valid)


def collect_initial_pool(env, agent: Agent, params, bufs: buf.Buffers, tasks, task_ids, key):
    """Iteration 0: `num_initial_steps` prior-z transitions per training task, into both buffers.

    Returns (buffers, transitions collected)."""
    c = agent.config
    n = task_ids.shape[0]
    hist = empty_history(n, 1, agent.obs_size, agent.action_size)
    out = _phase(env, agent, params, tasks, key, c.num_initial_steps, prior_z(agent), hist,
                 jnp.zeros(n, jnp.int32), record=False)
    enc = buf.add(bufs.enc, task_ids, out.transitions, out.valid)
    rl = buf.add(bufs.rl, task_ids, out.transitions, out.valid)
    return buf.Buffers(rl=rl, enc=enc), jnp.sum(out.valid)


def collect_visits(env, agent: Agent, params, bufs: buf.Buffers, tasks, task_ids, key):
    """One iteration's collection for the drawn `task_ids` (K,), with `tasks` their task pytrees.

    Returns (buffers, transitions collected, phase rollouts for inspection)."""
    c = agent.config
    k = task_ids.shape[0]
    k_prior, k_post, k_extra = jax.random.split(key, 3)
    _, enc_capacity = bufs.rl.capacity, bufs.enc.capacity
    history = empty_history(k, enc_capacity, agent.obs_size, agent.action_size)
    size = jnp.zeros(k, jnp.int32)
    post_z = posterior_z_from_history(agent, params["encoder"])
    phases = {}
    if c.num_steps_prior > 0:
        phases["prior"] = _phase(env, agent, params, tasks, k_prior, c.num_steps_prior,
                                 prior_z(agent), history, size, record=True)
        history, size = phases["prior"].history, phases["prior"].history_size
    if c.num_steps_posterior > 0:
        phases["posterior"] = _phase(env, agent, params, tasks, k_post, c.num_steps_posterior,
                                     post_z, history, size, record=True)
        history, size = phases["posterior"].history, phases["posterior"].history_size
    if c.num_extra_rl_steps_posterior > 0:
        phases["extra"] = _phase(env, agent, params, tasks, k_extra, c.num_extra_rl_steps_posterior,
                                 post_z, history, size, record=False)

    enc_phases = [phases[p] for p in ("prior", "posterior") if p in phases]
    if len(enc_phases) == 2:
        enc_batch, enc_valid = _concat(*enc_phases)
    else:
        enc_batch, enc_valid = enc_phases[0].transitions, enc_phases[0].valid
    if "extra" in phases:
        rl_batch, rl_valid = phases["extra"].transitions, phases["extra"].valid
    else:  # nothing RL-only: one masked-out row keeps the shapes static
        rl_batch = jax.tree.map(lambda x: x[:, :1], enc_batch)
        rl_valid = jnp.zeros((k, 1), bool)
    bufs = buf.add_visits(bufs, task_ids, enc_batch, enc_valid, rl_batch, rl_valid)
    collected = jnp.sum(enc_valid) + jnp.sum(rl_valid)
    return bufs, collected, phases
