"""Vectorised rollouts with the reference's trajectory semantics, for collection and evaluation.

E environments (each with its own task) step together in one `lax.scan` over a fixed number of
steps. Each env runs complete trajectories back to back (a trajectory ends on termination or at
`max_path_length`) and starts a new one only while it has collected fewer than `num_steps`
transitions (and fewer than `max_trajs` trajectories), so the count may exceed `num_steps` by
up to one trajectory, exactly like the reference sampler. Steps after an env has stopped are
computed but marked invalid; S = num_steps + max_path_length - 1 steps cover every case.

z is fixed within a trajectory and chosen at its start by `choose_z(key, traj_index, history,
history_size)`, where `history` is a per-env Transition array of what this rollout (and the
caller's earlier phases) recorded so far. Resets and z choices run under a `lax.cond` on "any
env starts a trajectory", so the encoder is not evaluated on every step.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from pearl_jax.agent import Agent
from pearl_jax.buffers import Transition


@struct.dataclass
class Rollout:
    transitions: Transition  # (E, S, ...)
    valid: jax.Array  # (E, S) bool: the step belongs to a collected trajectory
    traj_index: jax.Array  # (E, S) int32: which trajectory of this rollout the step belongs to
    num_trajs: jax.Array  # (E,) int32 completed trajectories
    history: Transition  # (E, Hc, ...) the caller's history plus the rows recorded here
    history_size: jax.Array  # (E,) int32


def empty_history(num_envs: int, capacity: int, obs_size: int, action_size: int) -> Transition:
    z = lambda *shape: jnp.zeros((num_envs, capacity) + shape, jnp.float32)
    return Transition(z(obs_size), z(action_size), z(), z(), z(), z(obs_size))


def _select(mask, new, old):
    """Per-env choice between two pytrees with a leading env axis."""

    def pick(n, o):
        return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def rollout(
    env,
    agent: Agent,
    policy_params,
    tasks,
    key: jax.Array,
    *,
    num_steps: int,
    max_path_length: int,
    deterministic: bool,
    choose_z: Callable,
    history: Transition,
    history_size: jax.Array,
    record_history: bool,
    max_trajs: int | None = None,
) -> Rollout:
    num_envs = history_size.shape[0]
    hist_cap = history.reward.shape[1]
    steps = num_steps + max_path_length - 1
    if max_trajs is not None:
        steps = min(steps, max_trajs * max_path_length)
    traj_limit = jnp.iinfo(jnp.int32).max if max_trajs is None else max_trajs
    env_ids = jnp.arange(num_envs)

    key, k0 = jax.random.split(key)
    env_state = jax.vmap(env.reset)(jax.random.split(k0, num_envs), tasks)  # placeholder until reset
    carry = dict(
        env_state=env_state,
        z=jnp.zeros((num_envs, agent.config.latent_size)),
        count=jnp.zeros(num_envs, jnp.int32),
        trajs=jnp.zeros(num_envs, jnp.int32),
        t=jnp.zeros(num_envs, jnp.int32),
        need_start=jnp.ones(num_envs, bool),
        active=jnp.zeros(num_envs, bool),
        history=history,
        history_size=history_size.astype(jnp.int32),
    )

    def body(c, step_key):
        k_reset, k_z, k_act = jax.random.split(step_key, 3)
        starting = c["need_start"] & (c["count"] < num_steps) & (c["trajs"] < traj_limit)

        def begin(state_z):
            state, z = state_z
            fresh = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs), tasks)
            new_z = choose_z(k_z, c["trajs"], c["history"], c["history_size"])
            return _select(starting, fresh, state), _select(starting, new_z, z)

        env_state, z = jax.lax.cond(
            jnp.any(starting), begin, lambda s: s, (c["env_state"], c["z"])
        )
        active = jnp.where(c["need_start"], starting, c["active"])
        t = jnp.where(starting, 0, c["t"])

        action = agent.act(policy_params, k_act, env_state.obs, z, deterministic)
        nxt = jax.vmap(env.step)(env_state, action)
        trans = Transition(
            obs=env_state.obs,
            action=action,
            reward=nxt.reward,
            sparse_reward=nxt.info["sparse_reward"],
            terminal=nxt.terminated,
            next_obs=nxt.obs,
        )
        traj_end = (nxt.terminated > 0) | (t + 1 >= max_path_length)
        hist, hsize = c["history"], c["history_size"]
        if record_history:
            slot = jnp.where(active, hsize, hist_cap)  # out of range: dropped
            hist = jax.tree.map(lambda h, x: h.at[env_ids, slot].set(x, mode="drop"), hist, trans)
            hsize = jnp.minimum(hsize + active, hist_cap)
        new_c = dict(
            env_state=nxt,
            z=z,
            count=c["count"] + active,
            trajs=c["trajs"] + (active & traj_end),
            t=t + 1,
            need_start=active & traj_end,
            active=active,
            history=hist,
            history_size=hsize,
        )
        return new_c, (trans, active, c["trajs"])

    carry, (trans, valid, traj_index) = jax.lax.scan(body, carry, jax.random.split(key, steps))
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # (S, E, ...) -> (E, S, ...)
    return Rollout(
        transitions=jax.tree.map(swap, trans),
        valid=swap(valid),
        traj_index=swap(traj_index),
        num_trajs=carry["trajs"],
        history=carry["history"],
        history_size=carry["history_size"],
    )


def trajectory_returns(rewards: jax.Array, valid: jax.Array, traj_index: jax.Array, max_trajs: int):
    """Undiscounted return of each trajectory: (E, S) step arrays -> (E, max_trajs)."""
    r = jnp.where(valid, rewards, 0.0)
    per_env = lambda x, ids: jax.ops.segment_sum(x, ids, num_segments=max_trajs)
    return jax.vmap(per_env)(r, traj_index)
