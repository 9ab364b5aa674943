"""Flax modules: context encoder (MLP or LSTM), tanh-Gaussian policy, twin Q, V.

Initialisation follows the reference by default ("rlkit", docs/reference.md §2.2): hidden kernels
U(-1/sqrt(fan_out), 1/sqrt(fan_out)) (PyTorch's weight is (out, in) and rlkit reads its first
axis), hidden biases 0.1, and small uniform output layers. "flax" gives Flax's standard
LeCun-normal kernels and zero biases instead.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
INIT_SCHEMES = ("rlkit", "flax")


def symmetric_uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _fan_out_uniform(key, shape, dtype=jnp.float32):
    # Flax kernels are (in, out); the reference's bound uses the output size.
    bound = 1.0 / jnp.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _check_scheme(scheme: str) -> None:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init_scheme {scheme!r} is not known; allowed: {', '.join(INIT_SCHEMES)}")


def hidden_dense(features: int, scheme: str) -> nn.Dense:
    _check_scheme(scheme)
    if scheme == "rlkit":
        return nn.Dense(features, kernel_init=_fan_out_uniform, bias_init=nn.initializers.constant(0.1))
    return nn.Dense(features)


def output_dense(features: int, scheme: str, bound: float) -> nn.Dense:
    _check_scheme(scheme)
    if scheme == "rlkit":
        init = symmetric_uniform(bound)
        return nn.Dense(features, kernel_init=init, bias_init=init)
    return nn.Dense(features)


class MLP(nn.Module):
    """ReLU trunk; `out_features=None` returns the last hidden layer."""

    hidden: Sequence[int]
    out_features: int | None = None
    init_scheme: str = "rlkit"
    out_bound: float = 3e-3

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(hidden_dense(width, self.init_scheme)(x))
        if self.out_features is None:
            return x
        return output_dense(self.out_features, self.init_scheme, self.out_bound)(x)


class ContextEncoder(nn.Module):
    """Per-transition MLP: (..., D) -> (..., out), out = 2L (means, pre-variances) or L."""

    out_features: int
    hidden: int = 200
    init_scheme: str = "rlkit"

    @nn.compact
    def __call__(self, context, mask=None):
        del mask  # every transition is an independent factor; masking happens in the product
        return MLP((self.hidden,) * 3, self.out_features, self.init_scheme, 3e-3)(context)


class RecurrentContextEncoder(nn.Module):
    """Per-step MLP then an LSTM over the ordered context; its final state gives one factor.

    (T, N, D) -> (T, 1, out). Steps where `mask` (T, N) is 0 leave the LSTM state untouched,
    so padding may sit anywhere (the buffer's sequence sampler pads in front, online context
    at evaluation pads behind) and a padded context equals the unpadded one.
    """

    out_features: int
    hidden: int = 200
    init_scheme: str = "rlkit"

    @nn.compact
    def __call__(self, context, mask=None):
        feats = MLP((self.hidden,) * 3, None, self.init_scheme)(context)
        lead = feats.shape[:-2]
        flat = feats.reshape((-1,) + feats.shape[-2:])  # (T, N, H)
        if mask is None:
            mask = jnp.ones(flat.shape[:2], flat.dtype)
        mask = mask.reshape(flat.shape[:2]).astype(bool)

        def step(cell, carry, inputs):
            x, keep = inputs
            new_carry, _ = cell(carry, x)
            carry = jax.tree.map(lambda n, o: jnp.where(keep[:, None], n, o), new_carry, carry)
            return carry, None

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False}, in_axes=1)
        cell = nn.OptimizedLSTMCell(self.hidden)
        carry = cell.initialize_carry(jax.random.key(0), flat[:, 0].shape)  # zeros
        (_, h_last), _ = scan(cell, carry, (flat, mask))
        out = output_dense(self.out_features, self.init_scheme, 3e-3)(h_last)
        return out.reshape(lead + (1, self.out_features))


class TanhGaussianPolicy(nn.Module):
    """[s, z] -> (mean, log_std) of the pre-tanh Gaussian; log_std clipped to [-20, 2]."""

    action_size: int
    hidden: int = 300
    init_scheme: str = "rlkit"

    @nn.compact
    def __call__(self, obs, z):
        h = MLP((self.hidden,) * 3, None, self.init_scheme)(jnp.concatenate([obs, z], -1))
        mean = output_dense(self.action_size, self.init_scheme, 1e-3)(h)
        log_std = output_dense(self.action_size, self.init_scheme, 1e-3)(h)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class ValueNetwork(nn.Module):
    """V(s, z) -> (...,)."""

    hidden: int = 300
    init_scheme: str = "rlkit"

    @nn.compact
    def __call__(self, obs, z):
        x = jnp.concatenate([obs, z], -1)
        return MLP((self.hidden,) * 3, 1, self.init_scheme, 3e-3)(x)[..., 0]


class DoubleQNetwork(nn.Module):
    """Q1 and Q2 on [s, a, z] as one vmapped pair: independently initialised, one batched matmul.

    Returns (2, ...): index 0 is Q1, index 1 is Q2.
    """

    hidden: int = 300
    init_scheme: str = "rlkit"

    @nn.compact
    def __call__(self, obs, action, z):
        x = jnp.concatenate([obs, action, z], -1)
        pair = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            axis_size=2,
        )((self.hidden,) * 3, 1, self.init_scheme, 3e-3)
        return pair(x)[..., 0]


# --- tanh-Gaussian distribution ------------------------------------------------------------
TANH_EPS = 1e-6  # the reference's epsilon inside log(1 - tanh(u)^2 + eps)


def tanh_gaussian_log_prob(pre_tanh, mean, log_std):
    """log pi(tanh(u)) summed over action dims, with the change-of-variables correction."""
    std = jnp.exp(log_std)
    normal = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    correction = jnp.log(1.0 - jnp.tanh(pre_tanh) ** 2 + TANH_EPS)
    return jnp.sum(normal - correction, axis=-1)


def tanh_gaussian_sample(key, mean, log_std):
    """Reparameterised sample: returns (action, log_prob, pre_tanh)."""
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std), pre_tanh
