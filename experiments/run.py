"""Train and meta-test PEARL: `python -m experiments.run --task=cheetah-vel [--field=value ...]`.

    python -m experiments.run --task=point-robot --preset=cpu-small   # minutes on a laptop CPU
    python -m experiments.run --task=cheetah-vel                      # the reference config
    python -m experiments.run --resume runs/cheetah-vel-seed0-...     # continue exactly

The whole config is validated before anything is compiled or written. Python only loops over
chunks of iterations (each chunk is one compiled `lax.scan`) to evaluate, log and checkpoint.
Ctrl-C or SIGTERM finishes the running chunk, writes a checkpoint and says how to resume.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time

import jax
import numpy as np

from experiments import cli
from experiments import progress as prog
from pearl_jax.checkpoint import Checkpointer
from pearl_jax.evaluate import online_curve
from pearl_jax.train import Trainer

CHECKPOINT_FORMAT = 1


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag read between chunks; a second one aborts."""

    def __init__(self):
        self.signal_name: str | None = None

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: finishing the current chunk, then checkpointing "
              "(send it again to abort without a checkpoint)", file=sys.stderr, flush=True)


def chunk_length(config) -> int:
    """Iterations per compiled chunk: evaluations and checkpoints fall on chunk boundaries."""
    return math.gcd(config.eval_every, config.checkpoint_every)


def scalar_row(state, update_metrics, eval_metrics, timing) -> dict:
    row = {
        prog.ITERATION: int(state.iteration),
        prog.ENV_STEPS: int(state.env_steps),
        prog.TRAIN_STEPS: int(state.learner.step),
    }
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


def main(argv: list[str] | None = None) -> int:
    request = cli.parse_or_exit(sys.argv[1:] if argv is None else argv)
    stop = StopRequest()
    stop.install()
    try:
        return _train(request, stop)
    finally:
        stop.uninstall()


def _train(request: cli.RunRequest, stop: StopRequest) -> int:
    config = request.config
    run_dir = request.resume or request.out_dir

    print(f"pearl-jax: task {config.task}, seed {config.seed}, run dir {run_dir}", flush=True)
    trainer = Trainer(config)
    config = trainer.config  # with the buffer sizes resolved
    key = jax.random.key(config.seed)
    abstract = jax.eval_shape(trainer.init, key)

    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(cli.config_to_json(config))
    checkpoints = Checkpointer(os.path.join(run_dir, "checkpoints"), keep=config.keep_checkpoints)

    compile_s = {}
    if request.resume and checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(target=abstract)
        wall_offset = float(meta.get("wall_seconds", 0.0))
        print(f"resumed from iteration {int(state.iteration)} ({int(state.env_steps):,} env steps)", flush=True)
        log = prog.ProgressLog(run_dir, resume_iteration=int(state.iteration))
    else:
        init, compile_s["init"] = _compile(trainer.init, key)
        state = init(key)
        wall_offset = 0.0
        log = prog.ProgressLog(run_dir, resume_iteration=0 if request.resume else None)
    start_iteration = int(state.iteration)
    if start_iteration > config.num_iterations:
        cli.main_error_exit(cli.ConfigError(
            f"--num_iterations={config.num_iterations}: the run already completed {start_iteration} iterations"))

    evaluate, compile_s["evaluate"] = _compile(trainer.evaluate, state)
    chunk = chunk_length(config)
    compiled_chunks = {}
    print("compile seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items()), flush=True)

    def save(state, reason: str):
        checkpoints.save(int(state.iteration), state, {
            "config": json.loads(cli.config_to_json(config)),
            "iteration": int(state.iteration),
            "env_steps": int(state.env_steps),
            "wall_seconds": wall_offset + time.perf_counter() - t_start,
            "format": CHECKPOINT_FORMAT,
            "reason": reason,
        })

    bar = prog.ProgressBar(config.num_iterations, start_iteration)
    t_start = time.perf_counter()
    last_test = None
    exit_code = 0
    while int(state.iteration) < config.num_iterations:
        n = min(chunk, config.num_iterations - int(state.iteration))
        if n not in compiled_chunks:
            compiled_chunks[n], compile_s[f"chunk{n}"] = _compile(trainer.run_chunk, state, n)
        state, update_metrics = compiled_chunks[n](state)
        update_metrics = jax.device_get(update_metrics)
        iteration = int(state.iteration)
        if not all(np.all(np.isfinite(v)) for v in update_metrics.values()):
            bad = sorted(k for k, v in update_metrics.items() if not np.all(np.isfinite(v)))
            print(f"\nerror: non-finite training metrics at iteration {iteration} ({', '.join(bad)}); "
                  f"the last good checkpoint in {run_dir} is kept", file=sys.stderr)
            exit_code = 3
            break
        if iteration % config.eval_every == 0 or iteration == config.num_iterations:
            eval_metrics = jax.device_get(evaluate(state))
            last_test = float(eval_metrics[prog.TEST_RETURN])
            timing = {"Wall seconds": wall_offset + time.perf_counter() - t_start,
                      "Compile seconds": sum(compile_s.values())}
            online = {
                "online-test": online_curve(eval_metrics["online_test_returns"], eval_metrics["online_test_num_trajs"]),
                "online-train": online_curve(eval_metrics["online_train_returns"], eval_metrics["online_train_num_trajs"]),
            }
            log.write(scalar_row(state, update_metrics, eval_metrics, timing), online)
        if iteration % config.checkpoint_every == 0 or iteration == config.num_iterations:
            save(state, "periodic")
        bar.update(iteration, int(state.env_steps), last_test)
        if stop.signal_name is not None:
            if iteration % config.checkpoint_every != 0:
                save(state, stop.signal_name)
            checkpoints.wait()
            bar.finish()
            print(f"stopped at iteration {iteration} by {stop.signal_name}; resume with:\n"
                  f"  python -m experiments.run --resume {run_dir}", flush=True)
            exit_code = 130 if stop.signal_name == "SIGINT" else 143
            break
    checkpoints.wait()
    checkpoints.close()
    log.close()
    bar.finish()
    if exit_code == 0:
        print(f"done: {int(state.iteration)} iterations, {int(state.env_steps):,} env steps, "
              f"final test return {last_test}; outputs in {run_dir}", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
