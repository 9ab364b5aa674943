"""Where a run's files live: the one place that knows the run-directory layout.

A single-seed run (``--num_seeds=1``) keeps everything at the top of its directory::

    RUN_DIR/config.json  progress.csv  tensorboard/  online/  checkpoints/

A multi-seed run keeps one sub-directory per seed, each laid out like a single-seed run
directory (without checkpoints), and the checkpoints of the whole batch once, at the top::

    RUN_DIR/config.json            the batch's config (seed = first seed, num_seeds = N)
    RUN_DIR/checkpoints/           every seed's state in one checkpoint per iteration
    RUN_DIR/seed-<s>/config.json   the config of seed s alone (seed = s)
    RUN_DIR/seed-<s>/progress.csv  tensorboard/  online/

So every tool that reads one run reads each seed of a multi-seed run the same way.
"""
from __future__ import annotations

import json
import os
import re

CONFIG = "config.json"
PROGRESS = "progress.csv"
TENSORBOARD = "tensorboard"
ONLINE = "online"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
_SEED_DIR = re.compile(r"^seed-(\d+)$")


class NotARunError(ValueError):
    """A directory that holds no run; its str is one line naming the directory."""


def seed_dir_name(seed: int) -> str:
    return f"seed-{int(seed)}"


def seed_dir(run_dir: str, seed: int, num_seeds: int) -> str:
    """The directory holding seed `seed`'s progress files (the run dir itself for one seed)."""
    return run_dir if num_seeds == 1 else os.path.join(run_dir, seed_dir_name(seed))


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS)


def seed_dirs(run_dir: str) -> list[tuple[int, str]]:
    """(seed, directory) of every seed of the run in `run_dir`, sorted by seed.

    A multi-seed run gives its `seed-<s>/` sub-directories; a single-seed run gives itself.
    Raises NotARunError when `run_dir` is neither.
    """
    if not os.path.isdir(run_dir):
        raise NotARunError(f"{run_dir}: not a directory")
    found = []
    for name in os.listdir(run_dir):
        m = _SEED_DIR.match(name)
        if m and os.path.isfile(os.path.join(run_dir, name, CONFIG)):
            found.append((int(m.group(1)), os.path.join(run_dir, name)))
    if found:
        return sorted(found)
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise NotARunError(f"{run_dir}: not a run directory (no {CONFIG} and no seed-<s>/ sub-directories)")
    try:
        with open(path) as f:
            seed = int(json.load(f)["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotARunError(f"{path}: unreadable run config ({exc})") from None
    return [(seed, run_dir)]
