"""Save and restore a whole training pytree (params, optimiser states, buffers, keys, counters).

The module knows nothing about the concrete state class: whatever pytree the trainer keeps is
written with Orbax's StandardSave next to a JSON dict of metadata (resolved config, iteration,
wall time, format version...), and read back against an abstract target, i.e.
`jax.eval_shape` of a freshly built state. The target supplies everything Orbax does not store:
the dataclass and namedtuple types (optax states), so they come back as the same classes.

Contracts, checked by tests/test_checkpoint.py against orbax-checkpoint 0.12.8:

* `save` returns once every array has been transferred to host memory (Orbax's blocking
  device-to-host phase ends with `np.asarray` of each array); the disk write then runs in a
  background thread. From then on the caller may delete or donate the state's arrays: on an
  accelerator the host copy is independent; on CPU the host "copy" is a zero-copy view that pins
  the buffer, so JAX declines the donation and allocates a fresh output instead (it warns that
  donated buffers were not usable). Cost on CPU: one extra state-sized allocation while a write
  is in flight, never a corrupted checkpoint. A new `save` first waits for the previous one.
* Typed PRNG keys (`jax.random.key`, any impl) round-trip natively in this Orbax version: it
  stores their key data and re-wraps them with the impl given by the target's dtype.
* Atomicity: a step is written to `<step>.orbax-checkpoint-tmp` and renamed to `<step>` only
  when complete (a rename is atomic on a local filesystem). A process killed mid-save leaves
  only the tmp directory, which is never listed as a step; the next Checkpointer opened on the
  directory removes it in the background, finished before its first save. Older steps are
  untouched; keep-last-N deletion happens only after the new step is finalised.
* Restoring checks the stored structure, shapes and dtypes against the target first and names
  every difference (Orbax alone names no path for a shape change and silently casts dtypes).
* Integrity: `save` records a fingerprint of every leaf (a position-weighted sum of its bits)
  in the metadata, and `restore` recomputes it, so damaged bytes that still decode are caught.
  `restore_newest_readable` walks back from the newest step past unreadable ones, naming each,
  and `set_aside` renames a broken step out of Orbax's sight (nothing is ever deleted for being
  unreadable), so the run can write that step again.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(Exception):
    """No checkpoint to restore, or one that does not fit the target state."""


class UnreadableCheckpoint(CheckpointError):
    """A step whose files are missing, truncated or damaged (not merely of another shape)."""


FINGERPRINT_KEY = "fingerprints"


def _leaf_fingerprint(x):
    """uint32 position-weighted sum of a leaf's bits: any changed, swapped or lost value moves it."""
    if _is_key(x):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint32)
    if x.dtype.itemsize != 4:
        x = x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.int32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
    weights = jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def _fingerprints(tree):
    return [_leaf_fingerprint(x) for x in jax.tree.leaves(tree)]


def fingerprints(tree) -> list[int]:
    """One integer per leaf of `tree` (any sharding; replicated result on every process)."""
    return [int(v) for v in jax.device_get(_fingerprints(tree))]


def _key_str(k) -> str:
    """One path element as a string, the same for Orbax's dict/list metadata and our pytree."""
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path_str(path) -> str:
    return ".".join(_key_str(k) for k in path) or "<root>"


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _stored_spec(x) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) as written to disk: a typed key is stored as its raw uint32 key data."""
    if _is_key(x):
        x = jax.eval_shape(jax.random.key_data, x)
    return tuple(x.shape), str(np.dtype(x.dtype))


def _abstract(tree):
    """Abstract version of a target. A leaf without a sharding goes to the default device, so a
    checkpoint written on one machine (say a GPU) restores on another (CPU) instead of following
    the device names recorded at save time."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def to_sds(x):
        sharding = getattr(x, "sharding", None) or default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(to_sds, tree)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()
    return text[0][:300] if text else type(exc).__name__


def describe_mismatch(stored_metadata, target, limit: int = 10) -> list[str]:
    """Human-readable differences between a checkpoint's array metadata and a target pytree."""
    stored = {
        _path_str(p): (tuple(m.shape), str(np.dtype(m.dtype)))
        for p, m in jax.tree_util.tree_flatten_with_path(stored_metadata)[0]
    }
    wanted = {_path_str(p): _stored_spec(x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
    problems = []
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    if missing:
        problems.append(f"in the target but not in the checkpoint: {', '.join(missing[:limit])}"
                        + (f" (+{len(missing) - limit} more)" if len(missing) > limit else ""))
    if extra:
        problems.append(f"in the checkpoint but not in the target: {', '.join(extra[:limit])}"
                        + (f" (+{len(extra) - limit} more)" if len(extra) > limit else ""))
    differ = [p for p in sorted(set(stored) & set(wanted)) if stored[p] != wanted[p]]
    if len(differ) > limit:  # where the differences are, before the first few in full
        groups: dict[str, int] = {}
        for p in differ:
            g = ".".join(p.split(".")[:3])
            groups[g] = groups.get(g, 0) + 1
        where = ", ".join(f"{g} ({n})" for g, n in groups.items())
        problems.append(f"{len(differ)} leaves differ, under: {where}")
    problems += [
        f"{p}: checkpoint {stored[p][1]}{list(stored[p][0])} vs target {wanted[p][1]}{list(wanted[p][0])}"
        for p in differ[:limit]
    ]
    return problems


class _QuietOrbax(logging.Filter):
    """Drops two kinds of Orbax log records: a failure of a background save thread, logged with
    its traceback by every thread involved, which `wait` / the next `save` raise again to the
    caller (who reports it once); and the notes that a read-only manager will not save."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" not in record.pathname:
            return True
        if record.levelno >= logging.ERROR:
            return not record.exc_info
        return "read_only=True" not in record.msg and "is read only" not in record.msg


_next_unraisablehook = sys.unraisablehook


def _quiet_closed_loops(unraisable) -> None:
    """When one of a save's file writes fails, Orbax stops waiting and closes its event loop;
    tensorstore then reports each write still in flight to that closed loop, which raises
    "Event loop is closed" in a callback (printed as an unraisable exception, dozens of times).
    The failure itself reaches the caller through `wait` / `save`; these echoes are dropped."""
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
        _next_unraisablehook(unraisable)


def _quiet_orbax() -> None:
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _QuietOrbax) for f in absl.filters):
        absl.addFilter(_QuietOrbax())
    global _next_unraisablehook
    if sys.unraisablehook is not _quiet_closed_loops:
        _next_unraisablehook, sys.unraisablehook = sys.unraisablehook, _quiet_closed_loops


class Checkpointer:
    """Keeps the last `keep` checkpoints of one run directory; each holds `state` and `meta`."""

    def __init__(self, directory: str | os.PathLike, keep: int, read_only: bool = False):
        """`read_only`: only look and restore (nothing is created, tidied or written)."""
        _quiet_orbax()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=not read_only,
            cleanup_tmp_directories=not read_only,  # drop what a killed save left behind
            enable_async_checkpointing=True,
            read_only=read_only,
        )
        # handlers named up front, so a fresh process can read metadata before any restore
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._mgr = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    # --- saving ---------------------------------------------------------------------------
    def save(self, step: int, state: Any, extra: dict) -> None:
        """Start saving `state` (any pytree of arrays) with JSON metadata `extra` as `step`.

        Blocks until the arrays are on host (see the module docstring), then writes in the
        background; call `wait()` before reading the files or exiting.
        """
        try:
            json.dumps(extra)  # fail here, not in the background writer
        except TypeError as exc:
            raise TypeError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
        extra = {**extra, FINGERPRINT_KEY: fingerprints(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(extra))
        self._mgr.save(int(step), args=args, force=True)

    def wait(self) -> None:
        """Block until every started save is on disk (and old steps are pruned)."""
        self._mgr.wait_until_finished()

    # --- querying -------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """The newest complete step, or None; an unfinished (tmp) save never counts."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    # --- restoring ------------------------------------------------------------------------
    def restore(self, step: int | None = None, *, target: Any) -> tuple[Any, dict]:
        """(state, extra) of `step` (default: the latest), shaped and typed like `target`.

        `target` is the abstract state (`jax.eval_shape(build_state)`) or a concrete one; it
        gives back the exact pytree classes. It may also be a function of the stored array
        metadata that returns one (a target shaped after what was saved). Raises CheckpointError when there is no
        checkpoint or when structure, shape or dtype of any leaf differs from the target, and
        UnreadableCheckpoint when the step's files are missing or damaged.
        """
        self.wait()  # a step still being written must not be read
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; have {steps}")
        where = os.path.join(self.directory, str(step))
        try:
            stored = self._mgr.item_metadata(step)["state"].tree
        except Exception as exc:  # noqa: BLE001 - any failure to parse the files means unreadable
            raise UnreadableCheckpoint(f"{where}: metadata unreadable ({_one_line(exc)})") from None
        if stored is None:
            raise UnreadableCheckpoint(f"{where}: metadata missing")
        target = _abstract(target(stored) if callable(target) else target)
        problems = describe_mismatch(stored, target)
        if problems:
            raise CheckpointError(
                f"checkpoint {where} does not match the target state "
                "(did the config change shapes?):\n  " + "\n  ".join(problems)
            )
        try:
            out = self._mgr.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
            )
        except Exception as exc:  # noqa: BLE001 - truncated or damaged array files
            raise UnreadableCheckpoint(f"{where}: data unreadable ({_one_line(exc)})") from None
        meta = dict(out.meta or {})
        recorded = meta.pop(FINGERPRINT_KEY, None)
        if recorded is None:
            raise UnreadableCheckpoint(f"{where}: no fingerprints in its metadata (damaged, or not "
                                       "written by this version of pearl-jax)")
        actual = fingerprints(out.state)
        if list(recorded) != actual:
            paths = [_path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(out.state)[0]]
            bad = [p for p, a, b in zip(paths, recorded, actual) if a != b] or ["<leaf count>"]
            raise UnreadableCheckpoint(f"{where}: damaged data in {', '.join(bad[:5])}"
                                       + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""))
        return out.state, meta

    def restore_newest_readable(self, *, target: Any, on_skip=None) -> tuple[int, Any, dict]:
        """(step, state, extra) of the newest step that reads back intact. Each unreadable newer
        step is reported through `on_skip(step, reason)` and skipped, never deleted. Raises
        CheckpointError when there is no step, or when the readable candidates do not fit the
        target, and UnreadableCheckpoint when every step is unreadable."""
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        reasons = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, target=target)
                return step, state, meta
            except UnreadableCheckpoint as exc:
                reasons.append(str(exc))
                if on_skip is not None:
                    on_skip(step, str(exc))
        raise UnreadableCheckpoint(f"no readable checkpoint in {self.directory}: " + "; ".join(reasons))

    def set_aside(self, step: int) -> str:
        """Rename a step Orbax can no longer use to `<step>.unreadable-<n>` (kept for inspection,
        invisible to Orbax), so that the run may write that step again. Returns the new path."""
        src = os.path.join(self.directory, str(step))
        n = 0
        while os.path.exists(f"{src}.unreadable-{n}"):
            n += 1
        dst = f"{src}.unreadable-{n}"
        os.rename(src, dst)
        self._mgr.reload()
        return dst

    def close(self) -> None:
        """Finish pending saves and release Orbax's threads (also when a save failed: its error
        is raised after the release)."""
        error = None
        for step in (self._mgr.wait_until_finished, self._mgr.close):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - re-raised below, once everything is released
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
