"""What several seeds in one program cost: one meta-iteration for 1, 2, 4 and 8 seeds.

    python -m experiments.bench_seeds --task=cheetah-vel [--seeds=1,2,4,8] [--update_steps=K]
                                      [--task_shards=1] [--FIELD=VALUE ...]

Prints one JSON object: for each seed count, the seconds of one meta-iteration (collection,
gradient steps, evaluation; `--update_steps=K` times K gradient steps and extrapolates, as
bench_iteration does) with all seeds in one `jit(vmap)` program laid out over the visible
devices, the seed-iterations per second, and the throughput ratio against one seed. On a
compute-bound CPU more seeds are not faster per seed; on an accelerator a small batch of seeds
leaves it mostly idle, which the ratio shows.
"""
from __future__ import annotations

import json
import sys

from experiments import cli
from experiments.bench_iteration import machine, time_iteration
from pearl_jax import placement
from pearl_jax.config import ConfigError


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--seeds={text}: must be a comma-separated list of positive integers, e.g. 1,2,4,8")
    return counts


def main(argv=None) -> None:
    try:
        config, own = cli.parse_config_flags(
            sys.argv[1:] if argv is None else argv,
            {"update_steps": ("int | None", None), "seeds": ("str", "1,2,4,8"), "task_shards": ("int", 1)},
            "cheetah-vel")
        counts = _counts(own["seeds"])
        mesh = placement.make_mesh(own["task_shards"])
    except (ConfigError, placement.PlacementError) as exc:
        cli.main_error_exit(exc)
    runs = []
    for n in counts:
        runs.append(time_iteration(config.replace(num_seeds=n), own["update_steps"], mesh))
        print(f"{n} seed(s): {runs[-1]['iteration_seconds']['total']:.2f} s per iteration",
              file=sys.stderr, flush=True)
    base = next((r for r in runs if r["num_seeds"] == 1), None)
    for r in runs:
        r["throughput_vs_one_seed"] = (r["seed_iterations_per_second"] / base["seed_iterations_per_second"]
                                       if base else None)
        r["wall_vs_one_seed"] = (r["iteration_seconds"]["total"] / base["iteration_seconds"]["total"]
                                 if base else None)
    print(json.dumps({"task": config.task, **machine(), "task_shards": own["task_shards"], "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
