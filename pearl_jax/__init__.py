"""pearl-jax: PEARL meta-RL as pure, jitted JAX functions."""
from pearl_jax.config import PearlConfig

__all__ = ["PearlConfig"]
