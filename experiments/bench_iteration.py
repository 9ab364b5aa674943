"""Time one meta-iteration of a batch of seeds, split into collection, updates and evaluation.

    python -m experiments.bench_iteration --task=cheetah-vel [--update_steps=K] [--num_seeds=N]
                                          [--preset=NAME] [--FIELD=VALUE ...]

Prints one JSON object. Flags are the run command's (any config field, `--env.NAME=VALUE`)
plus `--update_steps`. Each part is the trainer's own per-seed function under the same
`jit(vmap)` over seeds that training uses, compiled ahead of time (compile seconds reported
apart) and run once on a state that holds the initial pool. With `--update_steps=K` only K of
the iteration's gradient steps are timed and the full count is extrapolated linearly (the scan
body is identical every step), which keeps the reference config's 2000-4000 steps affordable on
a laptop; the JSON says when that happened.
"""
from __future__ import annotations

import json
import sys
import time

import jax

from experiments import cli
from pearl_jax import placement
from pearl_jax.config import ConfigError
from pearl_jax.train import Trainer, host_values


def _timed(fn, *args):
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - t


def time_iteration(config, update_steps: int | None = None, mesh=None) -> dict:
    """Seconds of one meta-iteration of `config.num_seeds` seeds in one program."""
    full_steps = config.num_train_steps_per_itr
    timed_steps = min(update_steps or full_steps, full_steps)
    trainer = Trainer(config.replace(num_train_steps_per_itr=timed_steps), mesh=mesh)

    state, init_compile, init_wall = _timed(trainer.init, trainer.seeds())

    def collect(state):
        _, k_draw, k_collect = jax.random.split(state.key, 3)
        return trainer.collect(state, k_draw, k_collect)

    (bufs, collected), collect_compile, collect_wall = _timed(trainer.per_seed(collect), state)
    state = state.replace(buffers=bufs)
    updates = trainer.per_seed(lambda s: trainer.gradient_steps(s.learner, s.buffers)[0])
    _, update_compile, update_wall = _timed(updates, state)
    metrics, eval_compile, eval_wall = _timed(trainer.evaluate, state)

    counts = host_values({"pool": state.env_steps, "collected": collected,
                          "eval": metrics["Number of eval env steps"]})
    real = trainer.real
    pool, collected, eval_steps = (int(counts[k][real].sum()) for k in ("pool", "collected", "eval"))
    update_full = update_wall * full_steps / timed_steps
    total = collect_wall + update_full + eval_wall
    return {
        "num_seeds": config.num_seeds,
        "slots": trainer.slots,
        "compile_seconds": {"init": init_compile, "collection": collect_compile,
                            "updates": update_compile, "evaluation": eval_compile},
        "initial_pool": {"seconds": init_wall, "env_steps": pool},
        "iteration_seconds": {"collection": collect_wall, "updates": update_full,
                              "evaluation": eval_wall, "total": total},
        "seed_iterations_per_second": config.num_seeds / total,
        "updates": {"gradient_steps": full_steps, "timed_steps": timed_steps,
                    "extrapolated": timed_steps != full_steps,
                    "ms_per_step": 1000 * update_wall / timed_steps},
        "collection": {"env_steps": collected, "env_steps_per_second": collected / collect_wall},
        "evaluation": {"env_steps": eval_steps, "env_steps_per_second": eval_steps / eval_wall},
    }


def machine() -> dict:
    d = jax.devices()[0]
    return {"device": str(d.device_kind), "backend": jax.default_backend(), "devices": jax.device_count()}


def main(argv=None) -> None:
    try:
        config, own = cli.parse_config_flags(sys.argv[1:] if argv is None else argv,
                                             {"update_steps": ("int | None", None)}, "cheetah-vel")
        mesh = placement.make_mesh(1)
    except (ConfigError, placement.PlacementError) as exc:
        cli.main_error_exit(exc)
    result = {"task": config.task, **machine(), **time_iteration(config, own["update_steps"], mesh)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
