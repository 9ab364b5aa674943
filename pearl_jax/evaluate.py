"""Meta-test protocol of the reference (PEARL_SPEC section 4), with every task and run in parallel.

Online adaptation run, per (task, run): reset the belief to the prior; roll out whole
trajectories with deterministic actions until `num_steps_per_eval` transitions; trajectories
1..num_exp_traj_eval use independent prior draws of z, each later one a z drawn from the
posterior over ALL online context gathered so far in this run (sparse rewards in the context
where configured). The reported number is the return of the LAST trajectory, averaged over runs
and then tasks (`AverageReturn_all_test_tasks`, the paper's metric).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import task_at
from pearl_jax import buffers as buf
from pearl_jax import posterior
from pearl_jax.agent import Agent
from pearl_jax.collect import prior_z
from pearl_jax.rollout import empty_history, rollout, trajectory_returns


def _returns(agent: Agent, out, max_trajs: int):
    rewards = out.transitions.sparse_reward if agent.config.sparse_rewards else out.transitions.reward
    return trajectory_returns(rewards, out.valid, out.traj_index, max_trajs)


def _max_trajs(agent: Agent) -> int:
    # a run stops after the trajectory that reaches num_steps_per_eval; every trajectory has >= 1 step
    c = agent.config
    return c.num_steps_per_eval + c.max_path_length - 1


def online_adaptation(env, agent: Agent, params, tasks, key):
    """Adaptation runs for E envs (tasks (E,)). Returns per-trajectory returns (E, K), the
    number of trajectories per run (E,) and the final posterior (mean, variance) of each run;
    the run's env steps are `history_size` of the final posterior's context (all of them)."""
    c = agent.config
    n = jax.tree.leaves(tasks)[0].shape[0]
    capacity = c.num_steps_per_eval + c.max_path_length - 1  # all online context of a run
    draw_prior = prior_z(agent)

    def choose(k, traj_index, history, history_size):
        k_prior, k_post = jax.random.split(k)
        mask = jnp.arange(capacity)[None, :] < history_size[:, None]
        ctx = buf.context_from_transitions(history, c.use_next_obs_in_context, c.sparse_rewards)
        mean, var = agent.infer_posterior(params["encoder"], ctx, mask)
        z_post = posterior.sample_z(k_post, mean, var)
        z_prior = draw_prior(k_prior, traj_index, history, history_size)
        return jnp.where((traj_index < c.num_exp_traj_eval)[:, None], z_prior, z_post)

    out = rollout(
        env, agent, params["policy"], tasks, key,
        num_steps=c.num_steps_per_eval, max_path_length=c.max_path_length, deterministic=True,
        choose_z=choose, history=empty_history(n, capacity, agent.obs_size, agent.action_size),
        history_size=jnp.zeros(n, jnp.int32), record_history=True,
    )
    k_max = min(_max_trajs(agent), out.valid.shape[1])
    returns = _returns(agent, out, k_max)
    mask = jnp.arange(capacity)[None, :] < out.history_size[:, None]
    ctx = buf.context_from_transitions(out.history, c.use_next_obs_in_context, c.sparse_rewards)
    final = agent.infer_posterior(params["encoder"], ctx, mask)
    return returns, out.num_trajs, final, jnp.sum(out.history_size)


def offline_context_returns(env, agent: Agent, params, enc_buffer, tasks, task_ids, key):
    """`AverageTrainReturn_all_train_tasks`: num_steps_per_eval // max_path_length trajectories
    per task, each on a fresh posterior from an `embedding_batch_size` encoder-buffer context."""
    c = agent.config
    n_traj = max(c.num_steps_per_eval // c.max_path_length, 1)
    n = task_ids.shape[0]

    def choose(k, traj_index, history, history_size):
        k_ctx, k_z = jax.random.split(k)
        if c.recurrent:
            ctx, mask = buf.sample_context_sequence(enc_buffer, k_ctx, task_ids, c.embedding_batch_size,
                                                    c.use_next_obs_in_context, c.sparse_rewards)
        else:
            ctx, mask = buf.sample_context(enc_buffer, k_ctx, task_ids, c.embedding_batch_size,
                                           c.use_next_obs_in_context, c.sparse_rewards), None
        mean, var = agent.infer_posterior(params["encoder"], ctx, mask)
        return posterior.sample_z(k_z, mean, var)

    out = rollout(
        env, agent, params["policy"], tasks, key,
        num_steps=n_traj * c.max_path_length, max_path_length=c.max_path_length, deterministic=True,
        choose_z=choose, history=empty_history(n, 1, agent.obs_size, agent.action_size),
        history_size=jnp.zeros(n, jnp.int32), record_history=False, max_trajs=n_traj,
    )
    returns = _returns(agent, out, n_traj)
    return jnp.sum(returns, axis=1) / jnp.maximum(out.num_trajs, 1), jnp.sum(out.valid)


def _last_return(returns, num_trajs):
    return jnp.take_along_axis(returns, (num_trajs - 1)[:, None], axis=1)[:, 0]


def make_evaluate(env, agent: Agent, all_tasks, train_ids, test_ids):
    """Returns `evaluate(params, enc_buffer, key) -> dict of arrays` (jit it).

    Buffers are indexed by training-task id (train ids are 0..n_train-1)."""
    c = agent.config
    test_ids = jnp.asarray(test_ids)
    train_ids = jnp.asarray(train_ids)
    n_test = test_ids.shape[0]
    runs = c.num_evals

    def evaluate(params, enc_buffer, key):
        k_test, k_draw, k_train, k_offline = jax.random.split(key, 4)
        # test tasks: each task `num_evals` times (runs-major so a reshape groups by task)
        ids = jnp.repeat(test_ids, runs)
        test_ret, test_n, (z_mean, z_var), test_steps = online_adaptation(env, agent, params, task_at(all_tasks, ids), k_test)
        # as many train tasks as test tasks, drawn with replacement (the reference's diagnostic)
        train_draw = jax.random.choice(k_draw, train_ids, (n_test,), replace=True)
        ids_tr = jnp.repeat(train_draw, runs)
        train_ret, train_n, _, train_steps = online_adaptation(env, agent, params, task_at(all_tasks, ids_tr), k_train)
        offline, offline_steps = offline_context_returns(
            env, agent, params, enc_buffer, task_at(all_tasks, train_draw), train_draw, k_offline
        )
        last_test = _last_return(test_ret, test_n).reshape(n_test, runs)
        last_train = _last_return(train_ret, train_n).reshape(n_test, runs)
        return {
            "AverageReturn_all_test_tasks": jnp.mean(jnp.mean(last_test, axis=1)),
            "AverageReturn_all_train_tasks": jnp.mean(jnp.mean(last_train, axis=1)),
            "AverageTrainReturn_all_train_tasks": jnp.mean(offline),
            "Z mean eval": jnp.mean(jnp.abs(z_mean[-1])),
            "Z variance eval": jnp.mean(z_var[-1]),
            "Number of eval env steps": test_steps + train_steps + offline_steps,
            "online_test_returns": test_ret.reshape(n_test, runs, -1),
            "online_test_num_trajs": test_n.reshape(n_test, runs),
            "online_train_returns": train_ret.reshape(n_test, runs, -1),
            "online_train_num_trajs": train_n.reshape(n_test, runs),
        }

    return evaluate


def online_curve(returns: np.ndarray, num_trajs: np.ndarray) -> np.ndarray:
    """Mean return per trajectory index over runs then tasks, truncated to the fewest
    trajectories any run made (the reference's online curve)."""
    k = int(np.min(num_trajs))
    return np.asarray(returns)[..., :k].mean(axis=1).mean(axis=0)
