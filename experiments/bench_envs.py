"""Environment throughput: MJX under jit(vmap) against MuJoCo C one env at a time.

    python -m experiments.bench_envs [--tasks cheetah-vel,point-robot] [--quick]
                                     [--set iterations=1 --set ls_iterations=4]

Prints one JSON object, per task: compile seconds, env steps/s at 1, 16 and 128 parallel envs
(jit(vmap(step)) timed after a warm-up call, best of three windows), the wall time of one 200-step episode for 16
tasks in one lax.scan, MuJoCo C steps/s on the same model (one env, Python loop) and the
MJX/C ratios. For MuJoCo families it also reports how far one env step with the family's
solver settings lands from one with MuJoCo's defaults (100 / 50 iterations), in MuJoCo C,
over states visited by a random rollout: that is the fidelity the speed is bought with.
Point robots have no MuJoCo model, so their C fields are null.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time

import jax
import numpy as np

import envs
from experiments.cli import parse_env_value
from pearl_jax.config import ConfigError


def _block(x):
    return jax.block_until_ready(x)


def _batch(env, n, seed=0):
    tasks = envs.task_at(env.tasks(), np.arange(n) % env.n_tasks)
    return jax.random.split(jax.random.key(seed), n), tasks


def mjx_steps_per_s(env, n: int, reps: int) -> tuple[float, float]:
    """(compile seconds, env steps/s) of jit(vmap(step)) at n parallel envs."""
    keys, tasks = _batch(env, n)
    state = _block(jax.jit(jax.vmap(env.reset))(keys, tasks))
    actions = jax.random.uniform(jax.random.key(1), (n, env.action_size), minval=-1.0, maxval=1.0)
    t0 = time.perf_counter()
    step = jax.jit(jax.vmap(env.step)).lower(state, actions).compile()
    compile_s = time.perf_counter() - t0
    state = _block(step(state, actions))  # warm-up
    best = 0.0
    for _ in range(3):  # best of three windows: the CPU is shared, so take the least disturbed one
        t0 = time.perf_counter()
        for _ in range(reps):
            state = step(state, actions)
        _block(state)
        best = max(best, n * reps / (time.perf_counter() - t0))
    return compile_s, best


def episode_seconds(env, n: int = 16, length: int = 200) -> tuple[float, float]:
    """(compile seconds, wall seconds) of reset + a length-step lax.scan over n different tasks."""

    def episode(key, tasks):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, n), tasks)

        def body(s, k):
            a = jax.random.uniform(k, (n, env.action_size), minval=-1.0, maxval=1.0)
            s = jax.vmap(env.step)(s, a)
            return s, s.reward

        _, rewards = jax.lax.scan(body, state, jax.random.split(k_act, length))
        return rewards.sum(0)

    _, tasks = _batch(env, n)
    t0 = time.perf_counter()
    run = jax.jit(episode).lower(jax.random.key(0), tasks).compile()
    compile_s = time.perf_counter() - t0
    _block(run(jax.random.key(1), tasks))
    t0 = time.perf_counter()
    _block(run(jax.random.key(2), tasks))
    return compile_s, time.perf_counter() - t0


def mujoco_c_steps_per_s(env, n_steps: int) -> float | None:
    """Env steps/s of MuJoCo C on the env's own model, one env, random actions in a Python loop."""
    import mujoco

    mj_model, frame_skip = getattr(env, "mj_model", None), getattr(env, "frame_skip", None)
    if mj_model is None or frame_skip is None:
        return None
    data = mujoco.MjData(mj_model)
    mujoco.mj_forward(mj_model, data)
    low, high = mj_model.actuator_ctrlrange[:, 0], mj_model.actuator_ctrlrange[:, 1]
    ctrls = np.random.RandomState(0).uniform(low, high, size=(n_steps, mj_model.nu))
    t0 = time.perf_counter()
    for ctrl in ctrls:
        data.ctrl[:] = ctrl
        mujoco.mj_step(mj_model, data, nstep=frame_skip)
    return n_steps / (time.perf_counter() - t0)


def solver_fidelity(env, n_seqs: int, length: int) -> dict | None:
    """One env step with the env's solver settings vs MuJoCo's defaults, from the same states.

    States come from rollouts of the default-settings model under random actions; errors are
    in forward velocity (qpos[0] change / dt, m/s) and in qvel (max over dofs).
    """
    import mujoco

    mj_model, frame_skip = getattr(env, "mj_model", None), getattr(env, "frame_skip", None)
    if mj_model is None or frame_skip is None:
        return None
    ref = _copy_with_default_solver(mj_model)
    dt = mj_model.opt.timestep * frame_skip
    vel_err, qvel_err = [], []
    rng = np.random.RandomState(0)
    low, high = mj_model.actuator_ctrlrange[:, 0], mj_model.actuator_ctrlrange[:, 1]
    for _ in range(n_seqs):
        d = mujoco.MjData(ref)
        d.qpos[:] = ref.qpos0 + rng.uniform(-0.1, 0.1, ref.nq)
        d.qvel[:] = 0.1 * rng.randn(ref.nv)
        mujoco.mj_forward(ref, d)
        for _ in range(length):
            ctrl = rng.uniform(low, high)
            e = mujoco.MjData(mj_model)
            e.qpos[:], e.qvel[:], e.qacc_warmstart[:], e.ctrl[:] = d.qpos, d.qvel, d.qacc_warmstart, ctrl
            mujoco.mj_step(mj_model, e, nstep=frame_skip)
            d.ctrl[:] = ctrl
            mujoco.mj_step(ref, d, nstep=frame_skip)
            vel_err.append(abs(e.qpos[0] - d.qpos[0]) / dt)
            qvel_err.append(np.abs(e.qvel - d.qvel).max())
    v, q = np.array(vel_err), np.array(qvel_err)
    return {
        "settings": {"iterations": int(mj_model.opt.iterations), "ls_iterations": int(mj_model.opt.ls_iterations)},
        "one_step_forward_vel_err": {"mean": float(v.mean()), "p99": float(np.percentile(v, 99)), "max": float(v.max())},
        "one_step_qvel_err": {"mean": float(q.mean()), "p99": float(np.percentile(q, 99)), "max": float(q.max())},
        "states": int(v.size),
    }


def _copy_with_default_solver(mj_model):
    """The same model with MuJoCo's default iteration counts (100 / 50)."""
    import copy

    ref = copy.copy(mj_model)
    ref.opt.iterations, ref.opt.ls_iterations = 100, 50
    return ref


def bench_task(name: str, quick: bool, overrides: dict) -> dict:
    env = envs.make(name, **overrides)
    reps = 5 if quick else 30
    out: dict = {"overrides": overrides}
    per_n = {}
    for n in (1, 16, 128):
        compile_s, sps = mjx_steps_per_s(env, n, reps)
        per_n[n] = sps
        out[f"compile_s_step_{n}"] = round(compile_s, 2)
        out[f"steps_per_s_{n}"] = round(sps, 1)
    ep_compile, ep_wall = episode_seconds(env)
    out["compile_s_episode_16x200"] = round(ep_compile, 2)
    out["episode_16x200_s"] = round(ep_wall, 3)
    c_sps = mujoco_c_steps_per_s(env, 500 if quick else 3000)
    out["mujoco_c_steps_per_s"] = None if c_sps is None else round(c_sps, 1)
    for n in (1, 16, 128):
        out[f"ratio_mjx_{n}_over_c"] = None if c_sps is None else round(per_n[n] / c_sps, 3)
    out["solver_fidelity"] = solver_fidelity(env, 2 if quick else 8, 100 if quick else 200)
    return out


def parse_overrides(items: list[str], tasks: list[str]) -> dict[str, dict]:
    """--set KEY=VALUE items as each task's constructor overrides, typed like the run command's
    --env.KEY (by the constructor's default: "false" is False, "2" an int). A key that is not
    an override of some task, or a badly typed value, raises ConfigError naming it."""
    out = {}
    for task in tasks:
        overrides = {}
        for item in items:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ConfigError(f"--set {item}: must be KEY=VALUE")
            try:
                overrides[key] = parse_env_value(task, key, value)
            except ConfigError as exc:  # "--env.KEY=VALUE: why" -> name the flag given here
                raise ConfigError(f"--set {item} (task {task}): {str(exc).split(': ', 1)[-1]}") from None
        out[task] = overrides
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="point-robot,sparse-point-robot,cheetah-vel,cheetah-dir")
    p.add_argument("--quick", action="store_true", help="fewer timing repetitions and fidelity states")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor override for every task, typed like the run command's --env.KEY "
                        "(contact_forces=false is False), e.g. iterations=1")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    try:  # fail fast on a typo, before minutes of compiling
        for t in tasks:
            if t not in envs.names():
                raise ConfigError(f"--tasks {t}: unknown task; valid: {', '.join(envs.names())}")
        overrides = parse_overrides(args.set, tasks)
    except ConfigError as exc:
        print(f"bench_envs: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # mjx prints import notices ("Failed to import warp") on stdout; keep stdout pure JSON
    with contextlib.redirect_stdout(sys.stderr):
        result = {
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                        "jax_backend": jax.default_backend(), "jax": jax.__version__},
            "tasks": {t: bench_task(t, args.quick, overrides[t]) for t in tasks},
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
