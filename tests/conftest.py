"""Shared test set-up: a persistent compilation cache so identical programs compile once per run."""
import os
import tempfile

import jax

_CACHE = os.environ.get("PEARL_TEST_JAX_CACHE") or os.path.join(tempfile.gettempdir(), "pearl-jax-test-cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
