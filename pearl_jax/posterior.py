"""The belief q(z | context): product of Gaussian factors, KL to the prior, sampling z.

Shapes: a context batch is (T, N, D) for T tasks of N transitions each; encoder outputs are
(T, N, 2L); a posterior is a (mean, variance) pair of (T, L) arrays.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

VARIANCE_FLOOR = 1e-7  # the reference clamps each factor's variance from below


def product_of_gaussians(means, variances, mask=None):
    """Multiply diagonal Gaussian factors over the second-to-last axis.

    means, variances: (..., N, L); mask: optional (..., N), 0 drops a factor.
    Returns (mean, variance), each (..., L). No prior factor is included (as the reference);
    with every factor masked out the result is the prior N(0, I).
    """
    precisions = 1.0 / jnp.maximum(variances, VARIANCE_FLOOR)
    if mask is not None:
        precisions = precisions * mask[..., None].astype(precisions.dtype)
    total = jnp.sum(precisions, axis=-2)
    empty = total <= 0.0
    safe_total = jnp.where(empty, 1.0, total)
    variance = jnp.where(empty, 1.0, 1.0 / safe_total)
    mean = jnp.where(empty, 0.0, variance * jnp.sum(means * precisions, axis=-2))
    return mean, variance


def kl_to_standard_normal(mean, variance):
    """KL(N(mean, variance) || N(0, I)) summed over the latent (last) axis."""
    return 0.5 * jnp.sum(variance + mean**2 - 1.0 - jnp.log(variance), axis=-1)


def factors_from_encoder(outputs, latent_size: int):
    """Split encoder outputs (..., 2L) into factor means and softplus variances."""
    return outputs[..., :latent_size], jax.nn.softplus(outputs[..., latent_size:])


def posterior_from_encoder(outputs, latent_size: int, information_bottleneck: bool, mask=None):
    """Encoder outputs (T, N, out) -> posterior (mean, variance), each (T, L).

    Without the information bottleneck the belief collapses to a point: the (masked) average of
    the outputs, with zero variance, so sampling returns the mean.
    """
    if information_bottleneck:
        means, variances = factors_from_encoder(outputs, latent_size)
        return product_of_gaussians(means, variances, mask)
    if mask is None:
        mean = jnp.mean(outputs, axis=-2)
    else:
        w = mask[..., None].astype(outputs.dtype)
        mean = jnp.sum(outputs * w, axis=-2) / jnp.maximum(jnp.sum(w, axis=-2), 1.0)
    return mean, jnp.zeros_like(mean)


def prior(num_tasks: int, latent_size: int):
    """The empty-context belief N(0, I) for a batch of tasks."""
    return jnp.zeros((num_tasks, latent_size)), jnp.ones((num_tasks, latent_size))


def sample_z(key, mean, variance):
    """Reparameterised draw z = mean + sqrt(variance) * eps."""
    return mean + jnp.sqrt(variance) * jax.random.normal(key, mean.shape, mean.dtype)
