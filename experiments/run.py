"""Train and meta-test PEARL: `python -m experiments.run --task=cheetah-vel [--field=value ...]`.

    python -m experiments.run --task=point-robot --preset=cpu-small   # minutes on a laptop CPU
    python -m experiments.run --task=cheetah-vel --num_seeds=5        # 5 seeds in one program
    python -m experiments.run --resume runs/cheetah-vel-seed0-...     # continue exactly

The whole command line is validated before anything is compiled or written. Python only loops
over chunks of iterations (each chunk is one compiled `lax.scan` over all seeds) to evaluate,
log and checkpoint. Exit status: 0 done; 2 a bad command line or an unusable run directory
(nothing in it changed); 3 non-finite losses (the last good checkpoint kept); 4 a failed write
(disk full, read-only; the last complete checkpoint kept); 130 / 143 stopped by SIGINT / SIGTERM
after checkpointing.
"""
from __future__ import annotations

import math
import os
import sys
import time

import jax
import numpy as np

from experiments import cli
from experiments import progress as prog
from experiments.session import RunSession, SessionError
from pearl_jax import placement
from pearl_jax.evaluate import online_curve
from pearl_jax.train import Trainer, host_values


def chunk_length(config) -> int:
    """Iterations per compiled chunk: evaluations and checkpoints fall on chunk boundaries."""
    return math.gcd(config.eval_every, config.checkpoint_every)


def scalar_row(iteration, env_steps, train_steps, update_metrics, eval_metrics, timing) -> dict:
    """One seed's progress.csv row (the reference's column names)."""
    row = {prog.ITERATION: iteration, prog.ENV_STEPS: env_steps, prog.TRAIN_STEPS: train_steps}
    for name, value in eval_metrics.items():
        if np.ndim(value) == 0:
            row[name] = float(value)
    for name, value in update_metrics.items():
        row[name] = float(np.asarray(value)[-1])  # the last iteration of the chunk
    row.update(timing)
    return row


def _compile(fn, *args):
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t


def use_compilation_cache() -> None:
    """Keep compiled programs on disk (JAX's persistent cache), so a resumed or repeated run
    skips the minutes of compilation. JAX_COMPILATION_CACHE_DIR, or a cache the caller already
    set, wins; else ~/.cache/pearl-jax/jax (under XDG_CACHE_HOME when set)."""
    if jax.config.jax_compilation_cache_dir or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "pearl-jax", "jax"))


def main(argv: list[str] | None = None) -> int:
    request = cli.parse_or_exit(sys.argv[1:] if argv is None else argv)
    use_compilation_cache()
    d = request.distributed or cli.Distributed()
    try:
        placement.initialize_distributed(d.coordinator, d.num_processes, d.process_id)
        mesh = placement.make_mesh(request.task_shards)
    except placement.PlacementError as exc:
        cli.main_error_exit(exc)
    try:
        with RunSession(request, Trainer(request.config, mesh=mesh)) as session:
            return _train(session)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


def _train(session: RunSession) -> int:
    trainer, config = session.trainer, session.config
    compile_s = {}
    state = session.restore()
    if state is None:
        init, compile_s["init"] = _compile(trainer.init, trainer.seeds())
        state = init(trainer.seeds())
    counters = host_values({"iteration": state.iteration, "env_steps": state.env_steps})
    start_iteration = int(counters["iteration"][0])
    if start_iteration > config.num_iterations:
        raise SessionError(f"--num_iterations={config.num_iterations}: the run already completed "
                           f"{start_iteration} iterations", 2)
    session.open_logs(start_iteration, counters["env_steps"])

    evaluate, compile_s["evaluate"] = _compile(trainer.evaluate, state)
    chunk = chunk_length(config)
    compiled_chunks = {}
    session.say("compile seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items()))

    bar = prog.ProgressBar(config.num_iterations, start_iteration)
    last_test = None
    real = trainer.real
    iteration = start_iteration
    while iteration < config.num_iterations:
        n = min(chunk, config.num_iterations - iteration)
        if n not in compiled_chunks:
            compiled_chunks[n], compile_s[f"chunk{n}"] = _compile(trainer.run_chunk, state, n)
        state, update_metrics = compiled_chunks[n](state)
        update_metrics = {k: v[real] for k, v in host_values(update_metrics).items()}
        counters = {k: v[real] for k, v in host_values(
            {"iteration": state.iteration, "env_steps": state.env_steps, "train_steps": state.learner.step}).items()}
        iteration = int(counters["iteration"][0])
        bad = _non_finite_seeds(update_metrics, config.seeds)
        if bad:
            session.fail(f"non-finite training metrics at iteration {iteration} in seed(s) "
                         f"{', '.join(str(s) for s, _ in bad)} ({'; '.join(f'{s}: {m}' for s, m in bad)}); "
                         f"the last good checkpoint in {session.run_dir} is kept", 3)
        if iteration % config.eval_every == 0 or iteration == config.num_iterations:
            eval_metrics = {k: v[real] for k, v in host_values(evaluate(state)).items()}
            last_test = eval_metrics[prog.TEST_RETURN]
            timing = {"Wall seconds": session.wall_seconds(), "Compile seconds": sum(compile_s.values())}
            for i in range(config.num_seeds):
                one = {k: v[i] for k, v in eval_metrics.items()}
                row = scalar_row(iteration, int(counters["env_steps"][i]), int(counters["train_steps"][i]),
                                 {k: v[i] for k, v in update_metrics.items()}, one, timing)
                session.log(i, row, {
                    "online-test": online_curve(one["online_test_returns"], one["online_test_num_trajs"]),
                    "online-train": online_curve(one["online_train_returns"], one["online_train_num_trajs"]),
                })
        stopping = session.stop_requested()
        if iteration % config.checkpoint_every == 0 or iteration == config.num_iterations or stopping:
            session.save(state, iteration, counters["env_steps"], reason=stopping or "periodic")
        if session.is_primary:
            bar.update(iteration, counters["env_steps"], last_test)
        if stopping:
            session.wait()
            bar.finish()
            session.say(f"stopped at iteration {iteration} by {stopping}; resume with:\n"
                        f"  python -m experiments.run --resume {session.run_dir}")
            return 130 if stopping == "SIGINT" else 143
    session.wait()
    bar.finish()
    session.say(f"done: {iteration} iterations, {prog.format_env_steps(counters['env_steps'])} env "
                f"steps, final test return {prog.format_returns(last_test)}; outputs in {session.run_dir}")
    return 0


def _non_finite_seeds(update_metrics: dict, seeds: list[int]) -> list[tuple[int, str]]:
    """(seed, names of its non-finite metrics) for every seed with any."""
    out = []
    for i, seed in enumerate(seeds):
        names = sorted(k for k, v in update_metrics.items() if not np.all(np.isfinite(v[i])))
        if names:
            out.append((seed, ", ".join(names)))
    return out


if __name__ == "__main__":
    sys.exit(main())
