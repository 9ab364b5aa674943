"""Meta-test protocol of the reference (docs/reference.md §4), with every task and run in parallel.

Online adaptation run, per (task, run): reset the belief to the prior; roll out whole
trajectories with deterministic actions until `num_steps_per_eval` transitions; trajectories
1..num_exp_traj_eval use independent prior draws of z, each later one a z drawn from the
posterior over ALL online context gathered so far in this run (sparse rewards in the context
where configured). The reported number is the return of the LAST trajectory, averaged over runs
and then tasks (`AverageReturn_all_test_tasks`, the paper's metric).

The test runs, the train-task runs and the off-policy-context diagnostic all share one rollout
(one copy of the physics in the compiled program); a per-env flag picks how z is chosen.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import task_at
from pearl_jax import buffers as buf
from pearl_jax import posterior
from pearl_jax.agent import Agent
from pearl_jax.collect import sample_encoder_context
from pearl_jax.rollout import NO_LIMIT, Rollout, empty_history, rollout, scan_length, trajectory_returns


def _posterior_of_history(agent: Agent, params, history, history_size):
    c = agent.config
    capacity = history.reward.shape[1]
    mask = jnp.arange(capacity)[None, :] < history_size[:, None]
    ctx = buf.context_from_transitions(history, c.use_next_obs_in_context, c.sparse_rewards)
    return agent.infer_posterior(params["encoder"], ctx, mask)


def _buffer_posterior(agent: Agent, params, enc_buffer, buffer_ids, key):
    ctx, mask = sample_encoder_context(agent, enc_buffer, key, buffer_ids, agent.config.embedding_batch_size)
    return agent.infer_posterior(params["encoder"], ctx, mask)


def evaluation_rollout(env, agent: Agent, params, tasks, key, offline=None, enc_buffer=None, buffer_ids=None,
                       axis_name=None):
    """Deterministic rollouts for E envs (tasks (E,)).

    Online envs follow the adaptation protocol above. Envs flagged `offline` (E,) instead run
    num_steps_per_eval // max_path_length trajectories, each on a fresh posterior from an
    `embedding_batch_size` context of the encoder buffer of `buffer_ids` (E,)
    (`AverageTrainReturn_all_train_tasks`). Returns per-trajectory returns (E, K), trajectories
    per env (E,), the final online posterior (mean, variance) and the env steps per env (E,).
    `axis_name`: the vmapped seed axis, if any.
    """
    c = agent.config
    out = protocol_rollout(env, agent, params, tasks, key, offline, enc_buffer, buffer_ids, axis_name)
    rewards = out.transitions.sparse_reward if c.sparse_rewards else out.transitions.reward
    returns = trajectory_returns(rewards, out.valid, out.traj_index, out.history.reward.shape[1])
    final = _posterior_of_history(agent, params, out.history, out.history_size)
    return returns, out.num_trajs[:, 0], final, jnp.sum(out.valid, axis=1)


def protocol_rollout(env, agent: Agent, params, tasks, key, offline=None, enc_buffer=None, buffer_ids=None,
                     axis_name=None, observe=None) -> Rollout:
    """The step-by-step record behind `evaluation_rollout` (same arguments): its `history` holds
    each online run's context in the order it was collected. `observe`: see `rollout`."""
    c = agent.config
    n = jax.tree.leaves(tasks)[0].shape[0]
    H = c.max_path_length
    n_offline_traj = max(c.num_steps_per_eval // H, 1)
    offline = jnp.zeros(n, bool) if offline is None else offline
    capacity = c.num_steps_per_eval + H - 1  # all online context of a run

    def choose(k, phase, traj_index, history, history_size):
        k_prior, k_post, k_ctx, k_off = jax.random.split(k, 4)
        mean, var = _posterior_of_history(agent, params, history, history_size)
        z = jnp.where(
            (traj_index < c.num_exp_traj_eval)[:, None],
            posterior.sample_z(k_prior, *posterior.prior(n, c.latent_size)),
            posterior.sample_z(k_post, mean, var),
        )
        if enc_buffer is not None:
            mean_b, var_b = _buffer_posterior(agent, params, enc_buffer, buffer_ids, k_ctx)
            z = jnp.where(offline[:, None], posterior.sample_z(k_off, mean_b, var_b), z)
        return z

    return rollout(
        env, agent, params["policy"], tasks, key,
        phase_steps=jnp.where(offline, n_offline_traj * H, c.num_steps_per_eval)[:, None],
        phase_trajs=jnp.where(offline, n_offline_traj, NO_LIMIT)[:, None],
        record=(True,), length=scan_length(max(c.num_steps_per_eval, n_offline_traj * H), H),
        max_path_length=H, deterministic=True, choose_z=choose,
        history=empty_history(n, capacity, agent.obs_size, agent.action_size),
        history_size=jnp.zeros(n, jnp.int32), axis_name=axis_name, observe=observe,
    )


def posterior_of_prefixes(agent: Agent, params, history, sizes):
    """The online belief given the first `sizes` (E, M) rows of each env's context `history`
    (a `protocol_rollout` history): (mean, variance), each (E, M, L). With sizes at trajectory
    ends, entry k is the belief the (k+1)-th trajectory's z is drawn from."""
    one = lambda size: _posterior_of_history(agent, params, history, size)
    return jax.vmap(one, in_axes=1, out_axes=1)(sizes)


def online_adaptation(env, agent: Agent, params, tasks, key):
    """Adaptation runs only: (returns (E, K), trajectories (E,), final posterior, total env steps)."""
    returns, num_trajs, final, steps = evaluation_rollout(env, agent, params, tasks, key)
    return returns, num_trajs, final, jnp.sum(steps)


def _last_return(returns, num_trajs):
    return jnp.take_along_axis(returns, (num_trajs - 1)[:, None], axis=1)[:, 0]


def make_evaluate(env, agent: Agent, all_tasks, train_ids, test_ids, axis_name=None):
    """Returns `evaluate(params, enc_buffer, key) -> dict of arrays` (jit it; vmap it over seeds
    with `axis_name`).

    Buffers are indexed by training-task id (train ids are 0..n_train-1)."""
    c = agent.config
    test_ids = jnp.asarray(test_ids)
    train_ids = jnp.asarray(train_ids)
    n_test = test_ids.shape[0]
    runs = c.num_evals

    def evaluate(params, enc_buffer, key):
        k_draw, k_roll = jax.random.split(key)
        # as many train tasks as test tasks, drawn with replacement (the reference's diagnostic)
        train_draw = jax.random.choice(k_draw, train_ids, (n_test,), replace=True)
        # [test runs | train runs | off-policy-context train runs]; runs-major within each block
        ids = jnp.concatenate([jnp.repeat(test_ids, runs), jnp.repeat(train_draw, runs), train_draw])
        n_online = 2 * n_test * runs
        offline = jnp.arange(ids.shape[0]) >= n_online
        buffer_ids = jnp.where(offline, ids, 0)
        returns, num_trajs, (z_mean, z_var), steps = evaluation_rollout(
            env, agent, params, task_at(all_tasks, ids), k_roll, offline, enc_buffer, buffer_ids, axis_name
        )
        test, train = slice(0, n_test * runs), slice(n_test * runs, n_online)
        last = _last_return(returns, num_trajs)
        off_ret = returns[n_online:].sum(axis=1) / jnp.maximum(num_trajs[n_online:], 1)
        return {
            "AverageReturn_all_test_tasks": jnp.mean(last[test].reshape(n_test, runs).mean(axis=1)),
            "AverageReturn_all_train_tasks": jnp.mean(last[train].reshape(n_test, runs).mean(axis=1)),
            "AverageTrainReturn_all_train_tasks": jnp.mean(off_ret),
            "Z mean eval": jnp.mean(jnp.abs(z_mean[n_test * runs - 1])),
            "Z variance eval": jnp.mean(z_var[n_test * runs - 1]),
            "Number of eval env steps": jnp.sum(steps),
            "online_test_returns": returns[test].reshape(n_test, runs, -1),
            "online_test_num_trajs": num_trajs[test].reshape(n_test, runs),
            "online_train_returns": returns[train].reshape(n_test, runs, -1),
            "online_train_num_trajs": num_trajs[train].reshape(n_test, runs),
        }

    return evaluate


def online_curve(returns: np.ndarray, num_trajs: np.ndarray) -> np.ndarray:
    """Mean return per trajectory index over runs then tasks, truncated to the fewest
    trajectories any run made (the reference's online curve)."""
    k = int(np.min(num_trajs))
    return np.asarray(returns)[..., :k].mean(axis=1).mean(axis=0)
