"""Time one reference-config meta-iteration, split into collection, updates and evaluation.

    python -m experiments.bench_iteration --task=cheetah-vel [--update-steps=K] [--preset=NAME]

Prints one JSON object. Each part is its own jitted function, compiled ahead of time (compile
seconds reported apart) and then run once on a state that holds the initial pool. With
`--update-steps=K` only K of the iteration's gradient steps are timed and the full count is
extrapolated linearly (the scan body is identical every step), which keeps the reference
config's 2000-4000 steps affordable on a laptop; the JSON says when that happened.
"""
from __future__ import annotations

import argparse
import json
import time

import jax

from envs.base import task_at
from experiments.configs import apply_preset, get_config
from pearl_jax.collect import collect_visits
from pearl_jax.train import Trainer


def _timed(fn, *args):
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - t


def bench(task: str, update_steps: int | None, preset: str | None, seed: int = 0) -> dict:
    config = get_config(task)
    if preset:
        config = apply_preset(config, preset)
    full_steps = config.num_train_steps_per_itr
    timed_steps = min(update_steps or full_steps, full_steps)
    trainer = Trainer(config.replace(num_train_steps_per_itr=timed_steps))
    c = trainer.config

    state, init_compile, init_wall = _timed(trainer.init, jax.random.key(seed))

    def collect(state, key):
        drawn = jax.random.choice(key, trainer.train_ids, (c.num_tasks_sample,), replace=True)
        bufs, n, _ = collect_visits(trainer.env, trainer.agent, state.learner.params, state.buffers,
                                    task_at(trainer.tasks, drawn), drawn, key)
        return bufs, n

    (bufs, collected), collect_compile, collect_wall = _timed(jax.jit(collect), state, jax.random.key(1))
    state = state.replace(buffers=bufs)
    updates = jax.jit(lambda learner, bufs: trainer._gradient_steps(learner, bufs)[0])
    _, update_compile, update_wall = _timed(updates, state.learner, state.buffers)
    metrics, eval_compile, eval_wall = _timed(trainer.evaluate, state)

    update_full = update_wall * full_steps / timed_steps
    eval_steps = int(metrics["Number of eval env steps"])
    return {
        "task": task,
        "preset": preset,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "compile_seconds": {"init": init_compile, "collection": collect_compile,
                            "updates": update_compile, "evaluation": eval_compile},
        "initial_pool": {"seconds": init_wall, "env_steps": int(state.env_steps)},
        "iteration_seconds": {
            "collection": collect_wall,
            "updates": update_full,
            "evaluation": eval_wall,
            "total": collect_wall + update_full + eval_wall,
        },
        "updates": {"gradient_steps": full_steps, "timed_steps": timed_steps,
                    "extrapolated": timed_steps != full_steps,
                    "ms_per_step": 1000 * update_wall / timed_steps},
        "collection": {"env_steps": int(collected), "env_steps_per_second": int(collected) / collect_wall},
        "evaluation": {"env_steps": eval_steps, "env_steps_per_second": eval_steps / eval_wall},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cheetah-vel")
    p.add_argument("--update-steps", type=int, default=None,
                   help="time only this many gradient steps and extrapolate to the config's count")
    p.add_argument("--preset", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(bench(args.task, args.update_steps, args.preset, args.seed), indent=2))


if __name__ == "__main__":
    main()
