"""One training process's hold on its run directory: lock, configs, checkpoints, logs, signals.

What it guarantees (tests/test_run.py, tests/test_reliability.py):
* A command that is rejected leaves the run directory as it found it: every check (lock,
  checkpoint readability and compatibility, iteration count) happens before the first write.
* Two processes never train into one directory (`rundir.RunLock`; a killed holder frees it).
* `--resume` continues from the newest checkpoint that reads back intact; newer broken ones are
  named and set aside (renamed, never deleted). A run killed before its first checkpoint starts
  afresh, saying so. Rows and TensorBoard events logged after the checkpoint are dropped.
* A failed write (disk full, read-only directory) stops the run with one line and exit status 4;
  Orbax writes each checkpoint to a temporary directory and renames it when complete, so the
  previous checkpoint stays intact.
* Non-finite parameters are never checkpointed: the run stops with exit status 3 and the
  previous checkpoint stays the newest (a resume with a lower learning rate continues from it).
* SIGINT / SIGTERM finish the running chunk and checkpoint; a second signal aborts.
* Several processes (hosts): all restore and save the sharded state; only process 0 locks,
  writes configs and progress files and prints; stop decisions are agreed by all.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli, faults, rundir
from experiments import progress as prog
from pearl_jax.checkpoint import Checkpointer, CheckpointError, UnreadableCheckpoint
from pearl_jax.config import RESUME_MUTABLE, format_value, from_json, to_json
from pearl_jax.train import host_values

CHECKPOINT_FORMAT = 2  # 2: a leading seed-slot axis on every leaf, fingerprints in the metadata


class SessionError(Exception):
    """Stops the run with one line and an exit status (2 unusable input, 3 non-finite, 4 I/O)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class RunSession:
    def __init__(self, request: cli.RunRequest, trainer):
        self.request, self.trainer, self.config = request, trainer, trainer.config
        self.run_dir = request.resume or request.out_dir
        self.is_primary = jax.process_index() == 0
        self._lock = rundir.RunLock(self.run_dir)
        self._logs: list[prog.ProgressLog] = []
        self._set_aside: list[int] = []  # unreadable steps to move away before the first save
        self._accepted = False  # True once the run may write (all checks passed)
        self._wall_offset = 0.0
        self._t0 = time.perf_counter()
        self._signal: str | None = None
        self._saving: int | None = None  # the newest checkpoint whose save was started

    # --- entering and leaving ------------------------------------------------------------------
    def __enter__(self) -> "RunSession":
        c = self.config
        self.say(f"pearl-jax: task {c.task}, seed(s) {_seed_text(c)}, {self.trainer.slots} slot(s) on "
                 f"{jax.device_count()} device(s), run dir {self.run_dir}")
        refusal = None
        if self.is_primary:
            try:
                if not self.request.resume:
                    cli.check_new_run_dir(self.run_dir)  # again: other processes may have started
                created = not os.path.exists(self.run_dir)
                self._created_dir = created
                os.makedirs(self.run_dir, exist_ok=True)
                try:
                    self._lock.acquire()
                except rundir.RunDirInUse:
                    if created:
                        os.rmdir(self.run_dir)
                    raise
            except (cli.ConfigError, rundir.RunDirInUse) as exc:
                refusal = str(exc)
        _agree_or_raise(refusal)
        # read-only until the run is accepted: a rejected resume must not even tidy the directory
        self.checkpoints = Checkpointer(rundir.checkpoint_dir(self.run_dir), keep=c.keep_checkpoints, read_only=True)
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        try:
            for log in self._logs:
                log.close()
            self.checkpoints.close()
        except Exception as close_exc:  # noqa: BLE001 - a failed final write is an I/O error
            if exc is None:
                raise SessionError(_io_message(f"writing checkpoint {self._saving}", close_exc), 4) from None
        finally:
            if self.is_primary:
                self._lock.release(remove_if_created=not self._accepted)
                if not self._accepted and getattr(self, "_created_dir", False) and not os.listdir(self.run_dir):
                    os.rmdir(self.run_dir)

    # --- restoring ----------------------------------------------------------------------------
    def restore(self):
        """The batch state to continue from, or None to start afresh. Accepts the run (so later
        steps may write) only once every check has passed."""
        if not self.request.resume:
            self._accept()
            return None
        if not self.checkpoints.all_steps():
            self.say(f"no checkpoint in {self.run_dir} yet (the run stopped before its first): starting afresh")
            self._accept()
            return None

        def skipped(step, reason):
            self.say(f"warning: checkpoint {step} is unreadable ({reason}); trying an older one")
            self._set_aside.append(step)

        try:
            step, state, meta = self.checkpoints.restore_newest_readable(
                target=self._abstract_for, on_skip=skipped)
        except UnreadableCheckpoint as exc:
            raise SessionError(f"--resume={self.run_dir}: {exc}", 2) from None
        except CheckpointError as exc:
            raise SessionError(f"--resume={self.run_dir}: {str(exc).splitlines()[0]} "
                               + "; ".join(line.strip() for line in str(exc).splitlines()[1:4]), 2) from None
        self._check_compatible(step, meta)
        done = int(meta.get("iteration", step))
        if done > self.config.num_iterations:
            raise SessionError(f"--num_iterations={self.config.num_iterations}: the run already completed "
                               f"{done} iterations", 2)
        self._wall_offset = float(meta.get("wall_seconds", 0.0))
        state = self.trainer.fit_slots(state)
        self.say(f"resumed from checkpoint {step} (iteration {meta.get('iteration')}, "
                 f"{prog.format_env_steps(meta.get('env_steps', [0]))} env steps)")
        self._accept()
        return state

    def _abstract_for(self, stored_tree):
        """The restore target for a checkpoint of any slot count (a device count change)."""
        slots = int(jax.tree.leaves(stored_tree)[0].shape[0])
        return self.trainer.abstract_state(slots)

    def _check_compatible(self, step: int, meta: dict) -> None:
        where = f"checkpoint {step} in {rundir.checkpoint_dir(self.run_dir)}"
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise SessionError(f"--resume={self.run_dir}: {where} has format {meta.get('format')}; this "
                               f"pearl-jax reads format {CHECKPOINT_FORMAT} (start a new run)", 2)
        try:
            saved = from_json(json.dumps(meta.get("config")))
        except Exception as exc:  # noqa: BLE001 - any unusable config is reported the same way
            raise SessionError(f"--resume={self.run_dir}: {where} holds an unusable config ({exc})", 2) from None
        differ = [f"{name} (checkpoint {format_value(getattr(saved, name))}, run "
                  f"{format_value(getattr(self.config, name))})"
                  for name in sorted(vars(saved)) if name not in RESUME_MUTABLE
                  and getattr(saved, name) != getattr(self.config, name)]
        if differ:
            raise SessionError(f"--resume={self.run_dir}: {where} was written with another config: "
                               + ", ".join(differ[:6]), 2)

    def _accept(self) -> None:
        """All checks passed: from here on the run writes its directory."""
        self._accepted = True
        if self.is_primary:
            self._lock.claim()
            # the config before anything else: a run killed from here on can be resumed
            self._io("writing config.json", rundir.write_configs, self.run_dir, self.config)
        self.checkpoints.close()
        self.checkpoints = Checkpointer(rundir.checkpoint_dir(self.run_dir), keep=self.config.keep_checkpoints)

    # --- logging ------------------------------------------------------------------------------
    def open_logs(self, iteration: int, env_steps) -> None:
        """One progress log per seed; a resumed run drops what was logged after `iteration`."""
        if not self.is_primary:
            return
        c = self.config
        resume = iteration if self.request.resume else None
        for i, seed in enumerate(c.seeds):
            d = rundir.seed_dir(self.run_dir, seed, c.num_seeds)
            log = self._io("opening the progress files", prog.ProgressLog, d, resume, int(env_steps[i]))
            if self.request.wandb:  # --wandb: the same scalars to this seed's wandb run
                from experiments.wandb_log import MirroredLog

                log = self._io("starting wandb", MirroredLog, log, self.run_dir, d, c.replace(seed=seed, num_seeds=1))
            self._logs.append(log)

    def log(self, index: int, row: dict, online: dict) -> None:
        if self.is_primary:
            self._io("writing progress.csv", self._logs[index].write, row, online)

    def say(self, text: str) -> None:
        if self.is_primary:
            print(text, flush=True)

    def wall_seconds(self) -> float:
        return self._wall_offset + time.perf_counter() - self._t0

    # --- saving -------------------------------------------------------------------------------
    def save(self, state, iteration: int, env_steps, reason: str) -> None:
        """Start writing `state` as checkpoint `iteration`; never a state with non-finite
        parameters or optimiser moments (exit 3: the previous checkpoint stays the newest)."""
        finite = host_values(_finite_slots(state.learner))[self.trainer.real]
        bad = [str(seed) for seed, ok in zip(self.config.seeds, finite) if not ok]
        if bad:
            raise SessionError(f"non-finite parameters at iteration {iteration} in seed(s) {', '.join(bad)} "
                               f"(not saved); the last good checkpoint in {self.run_dir} is kept", 3)
        for step in self._set_aside:  # out of Orbax's way before it writes that step again
            if self.is_primary and os.path.isdir(os.path.join(self.checkpoints.directory, str(step))):
                moved = self.checkpoints.set_aside(step)
                self.say(f"set the unreadable checkpoint {step} aside as {moved}")
        self._set_aside = []
        meta = {
            "config": json.loads(to_json(self.config)),
            "iteration": iteration,
            "env_steps": [int(x) for x in env_steps],
            "num_seeds": self.config.num_seeds,
            "slots": self.trainer.slots,
            "wall_seconds": self.wall_seconds(),
            "format": CHECKPOINT_FORMAT,
            "reason": reason,
        }
        self._io(f"writing checkpoint {self._saving}", self.checkpoints.wait)  # the previous one
        self._saving = iteration
        self._io(f"saving checkpoint {iteration}", self.checkpoints.save, iteration, state, meta)
        if faults.due("save"):  # tests: die while Orbax writes the step's temporary directory
            faults.die()

    def wait(self) -> None:
        self._io(f"writing checkpoint {self._saving}", self.checkpoints.wait)

    def fail(self, message: str, exit_code: int):
        raise SessionError(message, exit_code)

    def _io(self, what: str, fn, *args):
        try:
            return fn(*args)
        except SessionError:
            raise
        except Exception as exc:  # noqa: BLE001 - OSError, or Orbax/tensorstore wrapping one
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise SessionError(_io_message(what, exc) + f"; the last complete checkpoint in "
                               f"{rundir.checkpoint_dir(self.run_dir)} is kept", 4) from None

    # --- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if self._signal is not None:
            raise KeyboardInterrupt
        self._signal = signal.Signals(signum).name
        print(f"\n{self._signal} received: finishing the current chunk, then checkpointing "
              "(send it again to abort without a checkpoint)", file=sys.stderr, flush=True)

    def stop_requested(self) -> str | None:
        """The signal that asks this run to stop, agreed by every process (any one suffices)."""
        mine = {"SIGINT": 1, "SIGTERM": 2}.get(self._signal or "", 0)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            mine = int(np.max(multihost_utils.process_allgather(np.int32(mine))))
        return {1: "SIGINT", 2: "SIGTERM"}.get(mine)


@jax.jit
def _finite_slots(tree):
    """Per seed slot: whether every floating-point value of `tree` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.stack([jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1) for x in leaves]).all(axis=0)


def _agree_or_raise(refusal: str | None) -> None:
    """Every process stops if any refuses to start (only process 0 checks the directory)."""
    failed = refusal is not None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = bool(np.max(multihost_utils.process_allgather(np.int32(failed))))
    if failed:
        raise SessionError(refusal or "process 0 refused to start the run (see its message)", 2)


def _seed_text(config) -> str:
    return str(config.seed) if config.num_seeds == 1 else f"{config.seed}..{config.seed + config.num_seeds - 1}"


def _io_message(what: str, exc: BaseException) -> str:
    """'<what> failed: <the OS's reason> (<file>)' where the error names them (tensorstore's
    errors carry the errno in text), else the error's first line."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{what} failed: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        path = re.search(r'"(/[^"]+)"', text)
        return f"{what} failed: {os.strerror(int(code.group(1)))}" + (f" ({path.group(1)})" if path else "")
    return f"{what} failed: {text[:300]}"
