"""Run in a child process with 8 simulated CPU devices (tests/test_devices.py); prints JSON.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.device_checks DIR

Compares placements of the same runs: 8 seeds over 8 devices against 8 seeds on one device;
3 seeds padded to 8 slots against the first 3 of those; a checkpoint of 8 slots resumed on a
one-device layout of 3 slots; and a gradient step split over 4 task devices against the
unsplit one.
"""
from __future__ import annotations

import json
import sys

import jax
import numpy as np

from pearl_jax import placement
from pearl_jax.checkpoint import Checkpointer
from pearl_jax.train import Trainer, host_values, seed_slice
from tests.tiny import tiny_config


def _host(tree):
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return jax.tree.map(np.array, host_values(jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)))


def _diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _train(trainer, iterations=2):
    state = trainer.init(trainer.seeds())
    for _ in range(iterations):
        state, _ = trainer.run_chunk(state, 1)
    return state, trainer.evaluate(state)


def main(out_dir: str) -> dict:
    devices = jax.devices()
    report = {"devices": len(devices)}
    wide, one = placement.make_mesh(1, devices), placement.make_mesh(1, devices[:1])

    spread = Trainer(tiny_config(num_seeds=8), mesh=wide)
    state8, eval8 = _train(spread)
    report["spread_shards"] = len({s.device for s in jax.tree.leaves(state8)[0].addressable_shards})
    local = Trainer(tiny_config(num_seeds=8), mesh=one)
    state1, eval1 = _train(local)
    h8, h1 = _host(state8), _host(state1)
    report["spread_vs_one_params"] = _diff(h8.learner.params, h1.learner.params)
    report["spread_vs_one_keys_equal"] = bool(np.array_equal(h8.key, h1.key))
    report["spread_vs_one_eval"] = _diff(_host(eval8)["AverageReturn_all_test_tasks"],
                                         _host(eval1)["AverageReturn_all_test_tasks"])

    padded = Trainer(tiny_config(num_seeds=3), mesh=wide)
    report["padded_slots"] = padded.slots
    state3, _ = _train(padded)
    h3 = _host(state3)
    report["padded_vs_first3_params"] = _diff(seed_slice(h3.learner.params, slice(0, 3)),
                                              seed_slice(h8.learner.params, slice(0, 3)))
    report["phantom_is_first_seed_params"] = _diff(seed_slice(h3.learner.params, 7),
                                                   seed_slice(h3.learner.params, 0))

    # a checkpoint of 8 slots (8 devices) resumed on one device, where 3 seeds need 3 slots
    with Checkpointer(out_dir, keep=1) as ck:
        ck.save(2, state3, {"note": "8 slots"})
    narrow = Trainer(tiny_config(num_seeds=3), mesh=one)
    with Checkpointer(out_dir, keep=1, read_only=True) as ck:
        restored, _ = ck.restore(target=lambda stored: narrow.abstract_state(int(jax.tree.leaves(stored)[0].shape[0])))
    refit = narrow.fit_slots(restored)
    report["refit_slots"] = int(jax.tree.leaves(refit)[0].shape[0])
    report["refit_vs_saved"] = _diff(_host(refit), seed_slice(h3, slice(0, 3)))
    more, _ = narrow.run_chunk(refit, 1)  # and it trains on
    report["refit_trains_iteration"] = int(np.asarray(more.iteration)[0])

    # one gradient step's meta-batch over 4 task devices (2 seeds x 4 tasks) vs unsplit
    config = tiny_config(num_seeds=2, meta_batch=8)
    split = Trainer(config, mesh=placement.make_mesh(4, devices))
    whole = Trainer(config, mesh=None)
    steps = lambda t: t.per_seed(lambda s: t.gradient_steps(s.learner, s.buffers)[0].params)
    start = whole.init(whole.seeds())
    start_split = jax.device_put(start, placement.batch_sharding(split.mesh))
    lowered = steps(split).lower(start_split)
    report["split_has_all_reduce"] = "all-reduce" in lowered.compile().as_text()
    report["split_vs_whole_params"] = _diff(_host(steps(split)(start_split)), _host(steps(whole)(start)))
    return report


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(sys.argv[1])), flush=True)
