"""Shared test set-up: cheap compilation, and a persistent cache so each program compiles once.

The suite's cost is almost all XLA compiling small programs that then run for a fraction of a
second, so the session compiles with XLA's backend optimizations off (about 3x faster to
compile). Child processes inherit the flag through the environment. Tests whose programs run
long (tests/test_learning.py) compile at the default level in a child process of their own
(`tests.tiny.optimized_env`).
"""
import os
import tempfile

FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    # must happen before JAX creates its backend (the first computation), which reads XLA_FLAGS once
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

_CACHE = os.environ.get("PEARL_TEST_JAX_CACHE") or os.path.join(tempfile.gettempdir(), "pearl-jax-test-cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_collection_modifyitems(config, items):
    """Files holding a `slow` test run first: with parallel workers (pyproject's `-n 2`) the
    longest files then start at once instead of leaving one worker busy at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within a file kept
