"""The one tiny training config the run, seed, device and host tests share.

Every test that trains uses these flags (or `tiny_config()`), so the compiled programs are the
same everywhere and JAX's persistent cache (tests/conftest.py) compiles each once per test run,
subprocesses included (`subprocess_env`). Buffer sizes are fixed so that runs of different
lengths hold equal shapes.
"""
from __future__ import annotations

import csv
import os
import sys

import jax

from experiments.configs import apply_preset, get_config
from pearl_jax.config import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--task=point-robot", "--preset=tiny", "--rl_buffer_capacity=400", "--enc_buffer_capacity=60"]
TIMING_COLUMNS = {"Wall seconds", "Compile seconds"}


def tiny_config(**changes):
    """The config FLAGS describe (the run command's resolution, as a library call)."""
    return validate(apply_preset(get_config("point-robot"), "tiny").replace(
        rl_buffer_capacity=400, enc_buffer_capacity=60, **changes))


def subprocess_env(**extra) -> dict:
    """Environment for a child Python that shares this session's compilation cache."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    env.update(extra)
    return env


def optimized_env(**extra) -> dict:
    """`subprocess_env` for a child whose programs run long: XLA's default optimization level."""
    from tests.conftest import FAST_COMPILE
    env = subprocess_env(**extra)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(FAST_COMPILE, "").strip()
    return env


def python() -> str:
    return sys.executable


def progress_rows(seed_dir: str) -> list[dict]:
    """A seed directory's progress.csv rows without the timing columns (which always differ)."""
    with open(os.path.join(seed_dir, "progress.csv"), newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]
