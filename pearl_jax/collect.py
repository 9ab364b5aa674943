"""Training-time data collection, the reference's phases (docs/reference.md §1.2-1.5), batched.

A *visit* is one draw of a training task in an iteration: clear its encoder buffer, collect a
prior phase (both buffers), a posterior phase (both buffers) and an extra RL-only posterior
phase, all three in one rollout. Visits of one iteration are independent (the policy does not
change between them, and a visit's context comes from its own, freshly cleared, encoder
buffer), so all of them roll out in parallel; `buffers.add_visits` then writes them in draw order, which keeps the reference's
outcome when a task is drawn twice. Inside a posterior phase the encoder buffer *is* the visit's
own data so far, so z is inferred from that local history rather than the global buffer.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pearl_jax import buffers as buf
from pearl_jax import posterior
from pearl_jax.agent import Agent
from pearl_jax.rollout import empty_history, rollout, scan_length


def prior_z(agent: Agent):
    """choose_z for prior phases: an independent N(0, I) draw per trajectory."""

    def choose(key, phase, traj_index, history, history_size):
        mean, var = posterior.prior(traj_index.shape[0], agent.config.latent_size)
        return posterior.sample_z(key, mean, var)

    return choose


def sample_encoder_context(agent: Agent, replay: buf.TaskReplay, key, task_ids, n: int):
    """A context batch (T, n, D) and its mask (None when unmasked) for the agent's encoder:
    unordered uniform draws for the MLP encoder, an ordered window for the LSTM."""
    c = agent.config
    args = (replay, key, task_ids, n, c.use_next_obs_in_context, c.sparse_rewards)
    if c.recurrent:
        return buf.sample_context_sequence(*args)
    return buf.sample_context(*args), None


def context_from_history(agent: Agent, key, history, history_size, n: int):
    """A context batch of n transitions drawn from each env's history, as from a buffer."""
    replay = buf.TaskReplay(data=history, insert_pos=history_size, size=history_size)
    return sample_encoder_context(agent, replay, key, jnp.arange(history_size.shape[0]), n)


def visit_z(agent: Agent, encoder_params):
    """choose_z for a visit: phase 0 (prior) draws from the prior; in the posterior phases the
    first trajectory also uses the prior (the belief is reset at every collection call) and later
    ones a z from an `embedding_batch_size` context drawn from the visit's encoder-buffer data."""

    def choose(key, phase, traj_index, history, history_size):
        k_ctx, k_z, k_prior = jax.random.split(key, 3)
        context, mask = context_from_history(agent, k_ctx, history, history_size, agent.config.embedding_batch_size)
        mean, var = agent.infer_posterior(encoder_params, context, mask)
        z_post = posterior.sample_z(k_z, mean, var)
        z_prior = prior_z(agent)(k_prior, phase, traj_index, history, history_size)
        use_prior = (phase == PRIOR) | (traj_index == 0) | (history_size == 0)
        return jnp.where(use_prior[:, None], z_prior, z_post)

    return choose


PRIOR, POSTERIOR, EXTRA_RL = 0, 1, 2  # the phases of a visit


def collect_initial_pool(env, agent: Agent, params, bufs: buf.Buffers, tasks, task_ids, key, axis_name=None):
    """Iteration 0: `num_initial_steps` prior-z transitions per training task, into both buffers.

    Returns (buffers, transitions collected). `axis_name`: the vmapped seed axis, if any."""
    c = agent.config
    n = task_ids.shape[0]
    out = rollout(
        env, agent, params["policy"], tasks, key,
        phase_steps=jnp.full((n, 1), c.num_initial_steps), record=(False,),
        length=scan_length(c.num_initial_steps, c.max_path_length), max_path_length=c.max_path_length,
        deterministic=False, choose_z=prior_z(agent),
        history=empty_history(n, 1, agent.obs_size, agent.action_size), history_size=jnp.zeros(n, jnp.int32),
        axis_name=axis_name,
    )
    enc = buf.add(bufs.enc, task_ids, out.transitions, out.valid)
    rl = buf.add(bufs.rl, task_ids, out.transitions, out.valid)
    return buf.Buffers(rl=rl, enc=enc), jnp.sum(out.valid)


def collect_visits(env, agent: Agent, params, bufs: buf.Buffers, tasks, task_ids, key, axis_name=None):
    """One iteration's collection for the drawn `task_ids` (K,), with `tasks` their task pytrees.

    The prior, posterior and RL-only phases of every visit run in one rollout; the first two
    go to both buffers (after clearing the encoder buffer), the last to the RL buffer only.
    Returns (buffers, transitions collected, the rollout, whose `phase` tells the phases apart).
    `axis_name`: the vmapped seed axis, if any.
    """
    c = agent.config
    k = task_ids.shape[0]
    steps = (c.num_steps_prior, c.num_steps_posterior, c.num_extra_rl_steps_posterior)
    out = rollout(
        env, agent, params["policy"], tasks, key,
        phase_steps=jnp.broadcast_to(jnp.asarray(steps), (k, 3)), record=(True, True, False),
        length=sum(scan_length(n, c.max_path_length) for n in steps), max_path_length=c.max_path_length,
        deterministic=False, choose_z=visit_z(agent, params["encoder"]),
        history=empty_history(k, bufs.enc.capacity, agent.obs_size, agent.action_size),
        history_size=jnp.zeros(k, jnp.int32), axis_name=axis_name,
    )
    enc_valid = out.valid & (out.phase != EXTRA_RL)
    rl_valid = out.valid & (out.phase == EXTRA_RL)
    bufs = buf.add_visits(bufs, task_ids, out.transitions, enc_valid, out.transitions, rl_valid)
    return bufs, jnp.sum(out.valid), out
