"""Test-only crash injection, so the reliability tests can kill a run at an exact moment.

Setting PEARL_KILL_AT=<kind>:<n> makes the process SIGKILL itself at the n-th event of a kind:

    save      the n-th checkpoint save, once its files are being written (before Orbax commits)
    progress  the n-th progress.csv row, after half of its bytes reach the file (a partial line)

Counting starts at 1 in each process. Nothing else reads the variable; unset, each event costs
one environment lookup. Used by tests/test_reliability.py and experiments/soak.py.
"""
from __future__ import annotations

import os
import signal

ENV = "PEARL_KILL_AT"
KINDS = ("save", "progress")
_seen: dict[str, int] = {}


def due(kind: str) -> bool:
    """True at the event of `kind` that PEARL_KILL_AT names (the caller then calls `die`)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    want, _, n = spec.partition(":")
    if want != kind:
        return False
    _seen[kind] = _seen.get(kind, 0) + 1
    return _seen[kind] == int(n)


def die() -> None:
    """End this process the way a power cut or the OOM killer would: no handler, no cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)
