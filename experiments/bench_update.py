"""Speed of one PEARL gradient step, against what this machine's matmuls can do.

    python -m experiments.bench_update [--steps 100] [--variant v1|twin_q] [--quick]

Prints one JSON object. The step is measured two ways: (a) one jitted call per step, with the
host waiting for each result, and (b) per step inside one jitted `lax.scan` over `--steps`
steps, which is how training runs it. Every scanned step gets its own batch, context and key
(all built on device beforehand), so XLA cannot share work across steps. The step's FLOPs come
from XLA's cost analysis of the compiled single step; dividing by the scan time gives the
achieved FLOP rate, compared with a chain of (rows x width) @ (width x width) fp32 matmuls (the
shape the step is made of, and the rate used for the ratio) and, for reference, a large square
matmul, both timed in the same process.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from pearl_jax import losses
from pearl_jax.agent import Agent
from pearl_jax.buffers import Transition
from pearl_jax.config import PearlConfig

# cheetah-vel at the reference's sizes (docs/reference.md §5.3 Tables A, C): obs 20, act 6
REFERENCE = dict(meta_batch=16, batch_size=256, embedding_batch_size=100, latent_size=5,
                 net_size=300, encoder_size=200, obs=20, act=6)
QUICK = dict(meta_batch=4, batch_size=32, embedding_batch_size=16, latent_size=3,
             net_size=32, encoder_size=32, obs=5, act=2)


def _agent(shapes: dict, variant: str) -> Agent:
    cfg = PearlConfig(
        meta_batch=shapes["meta_batch"], batch_size=shapes["batch_size"],
        embedding_batch_size=shapes["embedding_batch_size"], latent_size=shapes["latent_size"],
        net_size=shapes["net_size"], encoder_size=shapes["encoder_size"], sac_variant=variant,
    )
    return Agent(cfg, shapes["obs"], shapes["act"])


def make_batches(agent: Agent, key, n: int):
    """n independent (rl_batch, context, key) triples, stacked on a leading axis, on device."""
    c = agent.config
    T, B, N, O, A = c.meta_batch, c.batch_size, c.embedding_batch_size, agent.obs_size, agent.action_size
    k = jax.random.split(key, 7)
    batch = Transition(
        obs=jax.random.normal(k[0], (n, T, B, O)),
        action=jax.random.uniform(k[1], (n, T, B, A), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n, T, B)),
        sparse_reward=jnp.zeros((n, T, B)),
        terminal=(jax.random.uniform(k[3], (n, T, B)) < 0.01).astype(jnp.float32),
        next_obs=jax.random.normal(k[4], (n, T, B, O)),
    )
    context = jax.random.normal(k[5], (n, T, N, agent.context_size))
    keys = jax.random.split(k[6], n)
    return jax.block_until_ready((batch, context, keys))


def _time(fn, repeats: int) -> float:
    """Quietest of `repeats` wall-clock runs of fn() (which must block), in seconds."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rates(rows: int, width: int, repeats: int, chain: int = 50, square: int = 2048) -> dict:
    """fp32 FLOP/s of a chain of (rows x width)@(width x width) matmuls and of one square matmul."""
    k1, k2, k3 = jax.random.split(jax.random.key(123), 3)
    x = jax.random.normal(k1, (rows, width))
    ws = jax.random.normal(k2, (chain, width, width)) / math.sqrt(width)

    @jax.jit
    def run_chain(x, ws):
        return jax.lax.scan(lambda h, w: (h @ w, None), x, ws)[0]

    a = jax.random.normal(k3, (square, square))
    run_square = jax.jit(lambda a: a @ a)
    jax.block_until_ready(run_chain(x, ws))
    jax.block_until_ready(run_square(a))
    t_chain = _time(lambda: jax.block_until_ready(run_chain(x, ws)), repeats)
    t_square = _time(lambda: jax.block_until_ready(run_square(a)), repeats)
    return {
        "matmul_chain_shape": f"({rows}x{width})@({width}x{width}) x{chain}",
        "matmul_chain_gflops_per_s": 2.0 * rows * width * width * chain / t_chain / 1e9,
        "matmul_square_shape": f"({square}x{square})@({square}x{square})",
        "matmul_square_gflops_per_s": 2.0 * square**3 / t_square / 1e9,
    }


def step_flops(compiled) -> float:
    """FLOPs from XLA's cost analysis (a dict in jax 0.10; older versions gave a list of dicts)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca["flops"])


def run(steps: int = 100, variant: str = "v1", quick: bool = False, repeats: int = 3) -> dict:
    shapes = QUICK if quick else REFERENCE
    agent = _agent(shapes, variant)
    update = losses.make_update(agent)
    state = agent.init(jax.random.key(0))
    batches, contexts, keys = make_batches(agent, jax.random.key(1), steps)

    # (a) one jitted call per step
    single = jax.jit(update)
    first = jax.tree.map(lambda x: x[0], (batches, contexts, keys))
    t0 = time.perf_counter()
    compiled = single.lower(state, *first).compile()
    compile_single = time.perf_counter() - t0
    flops = step_flops(compiled)
    jax.block_until_ready(compiled(state, *first))
    n_single = max(1, min(steps, 10))
    per_call = []
    for _ in range(repeats):
        s = state
        t0 = time.perf_counter()
        for i in range(n_single):
            s, m = compiled(s, *jax.tree.map(lambda x: x[i], (batches, contexts, keys)))
            jax.block_until_ready((s, m))
        per_call.append((time.perf_counter() - t0) / n_single)

    # (b) `steps` steps inside one scan; only the final state and one loss leave the scan
    def body(s, xs):
        s, m = update(s, *xs)
        return s, m["QF Loss"]

    scanned = jax.jit(lambda s, xs: jax.lax.scan(body, s, xs))
    t0 = time.perf_counter()
    scan_compiled = scanned.lower(state, (batches, contexts, keys)).compile()
    compile_scan = time.perf_counter() - t0
    t0 = time.perf_counter()  # the first run counts as a sample too: it is already compiled
    out = jax.block_until_ready(scan_compiled(state, (batches, contexts, keys)))
    t_first = time.perf_counter() - t0
    if not np.all(np.isfinite(np.asarray(out[1]))):
        raise FloatingPointError("non-finite QF loss in the benchmark scan")
    t_scan = min(t_first, _time(lambda: jax.block_until_ready(scan_compiled(state, (batches, contexts, keys))),
                                max(repeats - 1, 1)))
    ms_scan = 1e3 * t_scan / steps

    c = agent.config
    rates = matmul_rates(c.meta_batch * c.batch_size, c.net_size, repeats,
                         chain=50 if not quick else 5, square=2048 if not quick else 256)
    achieved = flops / (ms_scan / 1e3) / 1e9
    return {
        "variant": variant,
        "quick": quick,
        "shapes": shapes,
        "steps": steps,
        "device": jax.devices()[0].device_kind,
        "cpu": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "compile_s_single": compile_single,
        "compile_s_scan": compile_scan,
        "ms_per_step_single_call": 1e3 * min(per_call),
        "ms_per_step_scan": ms_scan,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops_per_s": achieved,
        **rates,
        "ratio_basis": "matmul_chain_gflops_per_s",
        "achieved_over_matmul": achieved / rates["matmul_chain_gflops_per_s"],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--variant", choices=losses.SAC_VARIANTS, default="v1")
    ap.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    ap.add_argument("--repeats", type=int, default=3, help="timings report the quietest repeat")
    a = ap.parse_args(argv)
    result = run(a.steps, a.variant, a.quick, a.repeats)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
