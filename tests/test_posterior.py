"""The belief q(z|c): closed forms, invariances and the KL, checked against independent math."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pearl_jax import networks as nets
from pearl_jax import posterior
from pearl_jax.agent import Agent
from pearl_jax.config import PearlConfig


def test_product_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 7, 4))
    variances = rng.uniform(0.1, 2.0, size=(3, 7, 4))
    mean, var = posterior.product_of_gaussians(jnp.asarray(means), jnp.asarray(variances))
    for t in range(3):
        for d in range(4):
            prec = np.sum(1.0 / variances[t, :, d])
            expected_var = 1.0 / prec
            expected_mean = expected_var * np.sum(means[t, :, d] / variances[t, :, d])
            np.testing.assert_allclose(var[t, d], expected_var, rtol=1e-5)
            np.testing.assert_allclose(mean[t, d], expected_mean, rtol=1e-4, atol=1e-6)


def test_two_known_factors():
    mean, var = posterior.product_of_gaussians(jnp.array([[1.0], [3.0]]), jnp.array([[1.0], [1.0]]))
    np.testing.assert_allclose(mean, [2.0])
    np.testing.assert_allclose(var, [0.5])


def test_single_factor_returns_itself():
    m, v = jnp.array([[0.3, -1.2]]), jnp.array([[0.7, 2.5]])
    mean, var = posterior.product_of_gaussians(m, v)
    np.testing.assert_allclose(mean, m[0], rtol=1e-6)
    np.testing.assert_allclose(var, v[0], rtol=1e-6)


def test_variance_floor_and_mask():
    # a zero variance is floored at 1e-7 instead of producing inf/nan
    mean, var = posterior.product_of_gaussians(jnp.array([[1.0], [5.0]]), jnp.array([[0.0], [1.0]]))
    assert np.isfinite(mean).all() and np.isfinite(var).all()
    np.testing.assert_allclose(var, [1.0 / (1e7 + 1.0)], rtol=1e-5)
    # masked factors do not count; an all-masked context is the prior
    m = jnp.array([[1.0], [5.0], [9.0]])
    v = jnp.ones((3, 1))
    mean, _ = posterior.product_of_gaussians(m, v, mask=jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(mean, [3.0])
    mean, var = posterior.product_of_gaussians(m, v, mask=jnp.zeros(3))
    np.testing.assert_allclose(mean, [0.0])
    np.testing.assert_allclose(var, [1.0])


def test_kl_matches_monte_carlo():
    mean = jnp.array([0.5, -1.0, 0.2])
    var = jnp.array([0.3, 1.7, 0.9])
    kl = posterior.kl_to_standard_normal(mean, var)
    z = posterior.sample_z(jax.random.key(0), jnp.broadcast_to(mean, (400_000, 3)), jnp.broadcast_to(var, (400_000, 3)))
    log_q = -0.5 * ((z - mean) ** 2 / var + jnp.log(2 * jnp.pi * var))
    log_p = -0.5 * (z**2 + jnp.log(2 * jnp.pi))
    mc = jnp.mean(jnp.sum(log_q - log_p, axis=-1))
    np.testing.assert_allclose(kl, mc, rtol=0.02)
    assert posterior.kl_to_standard_normal(jnp.zeros(5), jnp.ones(5)) == 0.0


def test_sample_z_moments():
    mean, var = jnp.array([1.0, -2.0]), jnp.array([0.25, 4.0])
    z = posterior.sample_z(jax.random.key(1), jnp.broadcast_to(mean, (100_000, 2)), jnp.broadcast_to(var, (100_000, 2)))
    np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(z.var(0), var, rtol=0.03)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = jnp.array([0.3]), jnp.array([-0.4])
    u = jnp.linspace(-3.0, 3.0, 61)[:, None]
    ours = nets.tanh_gaussian_log_prob(u, mean, log_std)
    # density of a = tanh(u): p_u(u) / |da/du|, with da/du from a finite difference
    u64 = np.asarray(u[:, 0], np.float64)
    std = np.exp(-0.4)
    p_u = np.exp(-0.5 * ((u64 - 0.3) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    h = 1e-5
    dadu = (np.tanh(u64 + h) - np.tanh(u64 - h)) / (2 * h)
    expected = np.log(p_u / dadu)
    # the reference's +1e-6 inside the log only matters where tanh saturates
    np.testing.assert_allclose(ours, expected, atol=1e-3)
    # and the density of a integrates to one over (-1, 1)
    a = np.linspace(-0.999, 0.999, 20001)
    dens = np.exp(np.asarray(nets.tanh_gaussian_log_prob(jnp.arctanh(jnp.asarray(a))[:, None], mean, log_std)))
    assert abs(np.trapezoid(dens, a) - 1.0) < 0.01


def _encoder_agent(**kw):
    cfg = PearlConfig(encoder_size=16, net_size=16, latent_size=3, **kw)
    agent = Agent(cfg, obs_size=4, action_size=2)
    return agent, agent.init(jax.random.key(0))


def test_posterior_is_permutation_invariant():
    agent, state = _encoder_agent()
    ctx = jax.random.normal(jax.random.key(1), (2, 9, agent.context_size))
    perm = jax.random.permutation(jax.random.key(2), 9)
    m1, v1 = agent.infer_posterior(state.params["encoder"], ctx)
    m2, v2 = agent.infer_posterior(state.params["encoder"], ctx[:, perm])
    np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    # more evidence narrows the belief
    m3, v3 = agent.infer_posterior(state.params["encoder"], ctx[:, :3])
    assert np.all(np.asarray(v1) < np.asarray(v3))


def test_no_information_bottleneck_is_the_mean_of_outputs():
    agent, state = _encoder_agent(use_information_bottleneck=False)
    ctx = jax.random.normal(jax.random.key(1), (2, 5, agent.context_size))
    out = agent.encoder.apply({"params": state.params["encoder"]}, ctx)
    assert out.shape == (2, 5, 3)
    mean, var = agent.infer_posterior(state.params["encoder"], ctx)
    np.testing.assert_allclose(mean, out.mean(1), rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(var) == 0.0)


def test_recurrent_encoder_is_ordered_and_respects_padding():
    agent, state = _encoder_agent(recurrent=True)
    ctx = jax.random.normal(jax.random.key(1), (2, 6, agent.context_size))
    m1, v1 = agent.infer_posterior(state.params["encoder"], ctx)
    m2, _ = agent.infer_posterior(state.params["encoder"], ctx[:, ::-1])
    assert m1.shape == (2, 3) and np.all(np.asarray(v1) > 0)
    assert not np.allclose(m1, m2)  # order matters for the LSTM
    # a padded context with a mask equals the unpadded, shorter context
    mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]], jnp.float32)
    padded = ctx.at[:, 4:].set(99.0)
    m_mask, v_mask = agent.infer_posterior(state.params["encoder"], padded, mask)
    m_short, v_short = agent.infer_posterior(state.params["encoder"], ctx[:, :4])
    np.testing.assert_allclose(m_mask, m_short, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v_mask, v_short, rtol=1e-5)
    # padding in front (as the buffer's sequence sampler lays it out) works the same way
    front = jnp.concatenate([jnp.full_like(ctx[:, :2], -7.0), ctx[:, :4]], axis=1)
    m_front, _ = agent.infer_posterior(state.params["encoder"], front, mask[:, ::-1])
    np.testing.assert_allclose(m_front, m_short, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["rlkit", "flax"])
def test_initialisation_schemes(scheme):
    cfg = PearlConfig(init_scheme=scheme, net_size=300, encoder_size=200)
    agent = Agent(cfg, obs_size=20, action_size=6)
    p = agent.init(jax.random.key(0)).params
    hidden = p["qf"]["VmapMLP_0"]["Dense_1"]  # Q pair stacked on axis 0: (2, 300, 300)
    assert hidden["kernel"].shape == (2, 300, 300)
    assert not np.allclose(hidden["kernel"][0], hidden["kernel"][1])  # Q1, Q2 independent
    if scheme == "rlkit":
        assert np.abs(hidden["kernel"]).max() <= 1 / np.sqrt(300)
        assert np.abs(hidden["kernel"]).max() > 0.9 / np.sqrt(300)
        np.testing.assert_allclose(hidden["bias"], 0.1)
        enc_hidden = p["encoder"]["MLP_0"]["Dense_0"]["kernel"]
        assert np.abs(enc_hidden).max() <= 1 / np.sqrt(200)
        assert np.abs(p["qf"]["VmapMLP_0"]["Dense_3"]["kernel"]).max() <= 3e-3
        assert np.abs(p["encoder"]["MLP_0"]["Dense_3"]["bias"]).max() <= 3e-3
        assert np.abs(p["policy"]["Dense_0"]["kernel"]).max() <= 1e-3
        assert np.abs(p["policy"]["Dense_1"]["bias"]).max() <= 1e-3
    else:
        np.testing.assert_allclose(hidden["bias"], 0.0)
    chex_equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), p["vf"], p["vf_target"])
    assert all(jax.tree.leaves(chex_equal))
