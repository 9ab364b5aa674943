"""One PEARL gradient step over a meta-batch of T tasks, as a pure function.

`make_update(agent)` returns `update(state, rl_batch, context, key, context_mask=None)`.
rl_batch: a Transition with leading (T, B); context: (T, N, D). The faithful variant "v1"
reproduces the reference step in its order (docs/reference.md §3):
  1. posterior from the context, one reparameterised z per task;
  2. critic loss (Q1, Q2 against reward_scale * r + (1 - d) * discount * V_target(s', z)) plus
     kl_lambda * KL summed over tasks; Adam step for Q1, Q2 and the encoder together;
  3. with the updated Qs and a detached z: V loss toward min Q(s, a~) - log pi(a~); Adam step;
  4. Polyak update of the target V;
  5. policy loss log pi(a~) - min Q(s, a~) plus 1e-3 regularisers on mean and log-std.
"twin_q" swaps V for twin target Qs and learns the temperature toward a target entropy; the
encoder path (critic loss + KL) is the same.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from pearl_jax import networks as nets
from pearl_jax import posterior
from pearl_jax.agent import Agent, TrainState

SAC_VARIANTS = ("v1", "twin_q")


def _stats(name: str, x) -> dict:
    return {
        f"{name} Mean": jnp.mean(x),
        f"{name} Std": jnp.std(x),
        f"{name} Max": jnp.max(x),
        f"{name} Min": jnp.min(x),
    }


def _adam_step(agent: Agent, state_params, opt_state, name, grads):
    tx = agent.optimizers()[name]
    updates, new_opt = tx.update(grads, opt_state[name])
    return optax.apply_updates(state_params[name], updates), new_opt


def _polyak(target, online, tau):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def encode(agent: Agent, encoder_params, context, context_mask, key, batch_size: int):
    """Posterior from the context and one reparameterised z per task, repeated over the batch.

    Returns z_b (T, B, L) carrying the encoder's gradient, and (mean, variance, KL summed over
    tasks). Without the information bottleneck z is the mean and the KL is 0.
    """
    mean, var = agent.infer_posterior(encoder_params, context, context_mask)
    if agent.config.use_information_bottleneck:
        z = posterior.sample_z(key, mean, var)
        kl = jnp.sum(posterior.kl_to_standard_normal(mean, var))
    else:
        z, kl = mean, jnp.zeros(())
    T, L = z.shape
    return jnp.broadcast_to(z[:, None, :], (T, batch_size, L)), (mean, var, kl)


def _qf(agent, params, obs, action, z):
    return agent.qf.apply({"params": params}, obs, action, z)  # (2, T, B)


def critic_loss(agent: Agent, params: dict, q_params, z_b, batch, key):
    """Bellman loss of Q1 + Q2; the only task loss whose gradient reaches the encoder (via z_b).

    The bootstrap value uses a detached z: V_target(s', z) for v1, or min of the target Qs at a
    fresh policy action minus alpha log pi for twin_q.
    """
    c = agent.config
    z_det = jax.lax.stop_gradient(z_b)
    if c.sac_variant == "twin_q":
        mean, log_std = agent.policy.apply({"params": params["policy"]}, batch.next_obs, z_det)
        a_next, logp_next, _ = nets.tanh_gaussian_sample(key, mean, log_std)
        q_next = jnp.min(_qf(agent, params["qf_target"], batch.next_obs, a_next, z_det), axis=0)
        next_v = q_next - jnp.exp(params["log_alpha"]) * logp_next
    else:
        next_v = agent.vf.apply({"params": params["vf_target"]}, batch.next_obs, z_det)
    q_target = c.reward_scale * batch.reward + (1.0 - batch.terminal) * c.discount * next_v
    q_target = jax.lax.stop_gradient(q_target)
    q_pred = _qf(agent, q_params, batch.obs, batch.action, z_b)
    return jnp.sum(jnp.mean((q_pred - q_target[None]) ** 2, axis=(1, 2))), q_pred


def policy_loss(agent: Agent, policy_params, q_params, z_b, obs, key, alpha):
    """E[alpha log pi(a~) - min Q(s, a~, z)] + mean/log-std/pre-tanh regularisers; z detached."""
    c = agent.config
    z_det = jax.lax.stop_gradient(z_b)
    mean, log_std = agent.policy.apply({"params": policy_params}, obs, z_det)
    a_new, logp, pre_tanh = nets.tanh_gaussian_sample(key, mean, log_std)
    q_new = jnp.min(_qf(agent, q_params, obs, a_new, z_det), axis=0)
    reg = (
        c.policy_mean_reg_weight * jnp.mean(mean**2)
        + c.policy_std_reg_weight * jnp.mean(log_std**2)
        + c.policy_pre_activation_weight * jnp.mean(jnp.sum(pre_tanh**2, axis=-1))
    )
    return jnp.mean(alpha * logp - q_new) + reg, (logp, q_new, mean, log_std)


def value_loss(agent: Agent, v_params, z_b, obs, v_target):
    """Mean squared error of V(s, z) toward a fixed target; z detached."""
    v_pred = agent.vf.apply({"params": v_params}, obs, jax.lax.stop_gradient(z_b))
    return jnp.mean((v_pred - jax.lax.stop_gradient(v_target)) ** 2), v_pred


def make_update(agent: Agent):
    c = agent.config
    if c.sac_variant not in SAC_VARIANTS:
        raise ValueError(f"sac_variant {c.sac_variant!r} is not known; allowed: {', '.join(SAC_VARIANTS)}")
    twin_q = c.sac_variant == "twin_q"

    def update(state: TrainState, batch, context, key, context_mask=None):
        k_z, k_pi, k_next = jax.random.split(key, 3)
        p = state.params
        batch_size = batch.reward.shape[1]
        alpha = jnp.exp(p["log_alpha"]) if twin_q else 1.0

        # 1-2. encoder, Q1 and Q2 step on critic loss + KL
        def encoder_and_critic_objective(enc_params, q_params):
            z_b, (mean, var, kl) = encode(agent, enc_params, context, context_mask, k_z, batch_size)
            q_loss, q_pred = critic_loss(agent, p, q_params, z_b, batch, k_next)
            kl_loss = c.kl_lambda * kl
            return q_loss + kl_loss, (z_b, mean, var, kl, kl_loss, q_loss, q_pred)

        (_, aux), (g_enc, g_q) = jax.value_and_grad(
            encoder_and_critic_objective, argnums=(0, 1), has_aux=True
        )(p["encoder"], p["qf"])
        z_b, z_mean, z_var, kl, kl_loss, q_loss, q_pred = aux
        new_params, new_opt = dict(p), dict(state.opt_state)
        new_params["encoder"], new_opt["encoder"] = _adam_step(agent, p, state.opt_state, "encoder", g_enc)
        new_params["qf"], new_opt["qf"] = _adam_step(agent, p, state.opt_state, "qf", g_q)

        # 3-5. policy step against the UPDATED Qs; its log pi and min Q also give V's target
        (pi_loss, (logp, q_new, pi_mean, pi_log_std)), g_pi = jax.value_and_grad(
            policy_loss, argnums=1, has_aux=True
        )(agent, p["policy"], new_params["qf"], z_b, batch.obs, k_pi, alpha)
        new_params["policy"], new_opt["policy"] = _adam_step(agent, p, state.opt_state, "policy", g_pi)

        metrics = {}
        if twin_q:
            def alpha_loss(log_alpha):
                return -log_alpha * jnp.mean(jax.lax.stop_gradient(logp) + agent.target_entropy)

            a_loss, g_alpha = jax.value_and_grad(alpha_loss)(p["log_alpha"])
            new_params["log_alpha"], new_opt["log_alpha"] = _adam_step(
                agent, p, state.opt_state, "log_alpha", g_alpha
            )
            new_params["qf_target"] = _polyak(p["qf_target"], new_params["qf"], c.soft_target_tau)
            metrics.update({"Alpha": alpha, "Alpha Loss": a_loss})
        else:
            (v_loss, v_pred), g_v = jax.value_and_grad(value_loss, argnums=1, has_aux=True)(
                agent, p["vf"], z_b, batch.obs, q_new - logp
            )
            new_params["vf"], new_opt["vf"] = _adam_step(agent, p, state.opt_state, "vf", g_v)
            new_params["vf_target"] = _polyak(p["vf_target"], new_params["vf"], c.soft_target_tau)
            metrics.update({"VF Loss": v_loss, **_stats("V Predictions", v_pred)})

        metrics.update(
            {
                "Z mean train": jnp.mean(jnp.abs(z_mean[0])),
                "Z variance train": jnp.mean(z_var[0]),
                "KL Divergence": kl,
                "KL Loss": kl_loss,
                "QF Loss": q_loss,
                "Policy Loss": pi_loss,
                **_stats("Q Predictions", q_pred[0]),
                **_stats("Log Pis", logp),
                **_stats("Policy mu", pi_mean),
                **_stats("Policy log std", pi_log_std),
            }
        )
        new_state = state.replace(params=new_params, opt_state=new_opt, step=state.step + 1)
        return new_state, metrics

    return update
