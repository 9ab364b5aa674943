"""Vectorised rollouts with the reference's trajectory semantics, for collection and evaluation.

E environments (each with its own task) step together in one `lax.scan`. Each env works through
a sequence of *phases* (e.g. prior, posterior, RL-only posterior for a training visit). Within a
phase it runs complete trajectories back to back (a trajectory ends on termination or at
`max_path_length`) and starts a new one only while it has collected fewer than the phase's step
quota (and fewer than its trajectory limit), so a phase may exceed its quota by up to one
trajectory, exactly like the reference sampler; then the env moves to its next phase. Steps
after an env has finished its last phase are computed but marked invalid. Running all phases in
one scan keeps a single copy of the physics in the compiled program.

z is fixed within a trajectory and chosen at its start by
`choose_z(key, phase, traj_index, history, history_size)` (per-env arrays; `traj_index` counts
trajectories within the phase), where `history` is a per-env Transition array of what the
recording phases (and the caller) gathered so far. Resets and z choices run under a `lax.cond`
on "any env starts a trajectory", so the encoder is not evaluated on every step.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from pearl_jax.agent import Agent
from pearl_jax.buffers import Transition


@struct.dataclass
class Rollout:
    transitions: Transition  # (E, S, ...)
    valid: jax.Array  # (E, S) bool: the step belongs to a collected trajectory
    phase: jax.Array  # (E, S) int32: the phase the step belongs to
    traj_index: jax.Array  # (E, S) int32: trajectory index within its phase
    num_trajs: jax.Array  # (E, P) int32 completed trajectories per phase
    history: Transition  # (E, Hc, ...) the caller's history plus the rows recorded here
    history_size: jax.Array  # (E,) int32
    observed: Any = None  # (E, S, ...) `observe(state)` of each step's env state, if asked for


def empty_history(num_envs: int, capacity: int, obs_size: int, action_size: int) -> Transition:
    z = lambda *shape: jnp.zeros((num_envs, capacity) + shape, jnp.float32)
    return Transition(z(obs_size), z(action_size), z(), z(), z(), z(obs_size))


def scan_length(max_steps: int, max_path_length: int, max_trajs: int | None = None) -> int:
    """Steps that cover one phase of at most `max_steps` quota (and `max_trajs` trajectories)."""
    if max_steps <= 0:
        return 0
    n = max_steps + max_path_length - 1
    return n if max_trajs is None else min(n, max_trajs * max_path_length)


def _select(mask, new, old):
    """Per-env choice between two pytrees with a leading env axis."""

    def pick(n, o):
        return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


NO_LIMIT = jnp.iinfo(jnp.int32).max


def rollout(
    env,
    agent: Agent,
    policy_params,
    tasks,
    key: jax.Array,
    *,
    phase_steps,
    length: int,
    max_path_length: int,
    deterministic: bool,
    choose_z: Callable,
    history: Transition,
    history_size: jax.Array,
    record: tuple[bool, ...],
    phase_trajs=None,
    axis_name: str | None = None,
    observe: Callable | None = None,
) -> Rollout:
    """phase_steps / phase_trajs: int (E, P) quotas of steps / trajectories per phase (trajs
    default: no limit); record: static per-phase flags, whether a phase's steps enter `history`;
    length: static scan length (use `scan_length` summed over phases); axis_name: the vmapped
    seed axis this rollout runs under, if any (see `_anyone`); observe: a function of one env's
    state (the one the step's observation comes from) whose value is kept per step, e.g. the
    MuJoCo joint positions for a rendering."""
    num_envs = history_size.shape[0]
    hist_cap = history.reward.shape[1]
    phase_steps = jnp.asarray(phase_steps, jnp.int32)
    num_phases = phase_steps.shape[1]
    phase_trajs = jnp.full_like(phase_steps, NO_LIMIT) if phase_trajs is None else jnp.asarray(phase_trajs, jnp.int32)
    records = jnp.asarray(record + (False,), bool)  # index P (finished) records nothing
    env_ids = jnp.arange(num_envs)

    def quota(table, phase):
        return table[env_ids, jnp.minimum(phase, num_phases - 1)]

    key, k0 = jax.random.split(key)
    env_state = jax.vmap(env.reset)(jax.random.split(k0, num_envs), tasks)  # replaced at each start
    zeros = jnp.zeros(num_envs, jnp.int32)
    carry = dict(
        env_state=env_state, z=jnp.zeros((num_envs, agent.config.latent_size)),
        phase=zeros, count=zeros, trajs=zeros, t=zeros, done_trajs=jnp.zeros((num_envs, num_phases), jnp.int32),
        need_start=jnp.ones(num_envs, bool), active=jnp.zeros(num_envs, bool),
        history=history, history_size=history_size.astype(jnp.int32),
    )

    def body(c, step_key):
        k_reset, k_z, k_act = jax.random.split(step_key, 3)
        phase, count, trajs = c["phase"], c["count"], c["trajs"]
        for _ in range(num_phases):  # move past every phase whose quota is met (empty ones too)
            met = (phase < num_phases) & ((count >= quota(phase_steps, phase)) | (trajs >= quota(phase_trajs, phase)))
            advance = c["need_start"] & met
            phase = jnp.where(advance, phase + 1, phase)
            count = jnp.where(advance, 0, count)
            trajs = jnp.where(advance, 0, trajs)
        starting = c["need_start"] & (phase < num_phases)

        def begin(state_z):
            state, z = state_z
            fresh = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs), tasks)
            new_z = choose_z(k_z, phase, trajs, c["history"], c["history_size"])
            return _select(starting, fresh, state), _select(starting, new_z, z)

        env_state, z = jax.lax.cond(_anyone(starting, axis_name), begin, lambda s: s, (c["env_state"], c["z"]))
        active = jnp.where(c["need_start"], starting, c["active"])
        t = jnp.where(starting, 0, c["t"])

        action = agent.act(policy_params, k_act, env_state.obs, z, deterministic)
        nxt = jax.vmap(env.step)(env_state, action)
        trans = Transition(
            obs=env_state.obs, action=action, reward=nxt.reward,
            sparse_reward=nxt.info["sparse_reward"], terminal=nxt.terminated, next_obs=nxt.obs,
        )
        traj_end = (nxt.terminated > 0) | (t + 1 >= max_path_length)
        ended = active & traj_end
        keep = active & records[phase]
        slot = jnp.where(keep, c["history_size"], hist_cap)  # out of range: dropped
        hist = jax.tree.map(lambda h, x: h.at[env_ids, slot].set(x, mode="drop"), c["history"], trans)
        hsize = jnp.minimum(c["history_size"] + keep, hist_cap)
        done_trajs = c["done_trajs"].at[env_ids, jnp.minimum(phase, num_phases - 1)].add(ended)
        new_c = dict(
            env_state=nxt, z=z, phase=phase, count=count + active, trajs=trajs + ended, t=t + 1,
            done_trajs=done_trajs, need_start=ended, active=active, history=hist, history_size=hsize,
        )
        seen = None if observe is None else jax.vmap(observe)(env_state)
        return new_c, (trans, active, phase, trajs, seen)

    carry, (trans, valid, phase, traj_index, seen) = jax.lax.scan(body, carry, jax.random.split(key, length))
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # (S, E, ...) -> (E, S, ...)
    return Rollout(
        transitions=jax.tree.map(swap, trans), valid=swap(valid), phase=swap(phase),
        traj_index=swap(traj_index), num_trajs=carry["done_trajs"],
        history=carry["history"], history_size=carry["history_size"],
        observed=None if seen is None else jax.tree.map(swap, seen),
    )


def _anyone(flags, axis_name: str | None):
    """Whether any env starts a trajectory. Under a vmapped seed axis the answer is agreed over
    all seeds: a predicate that differs per seed would turn the `lax.cond` into a select that
    resets envs and infers posteriors on every step."""
    anyone = jnp.any(flags)
    if axis_name is None:
        return anyone
    return jax.lax.psum(anyone.astype(jnp.int32), axis_name) > 0


def trajectory_returns(rewards: jax.Array, valid: jax.Array, traj_index: jax.Array, max_trajs: int):
    """Undiscounted return of each trajectory: (E, S) step arrays -> (E, max_trajs)."""
    r = jnp.where(valid, rewards, 0.0)
    per_env = lambda x, ids: jax.ops.segment_sum(x, ids, num_segments=max_trajs)
    return jax.vmap(per_env)(r, traj_index)
