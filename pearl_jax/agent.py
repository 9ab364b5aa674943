"""The PEARL agent: its networks, its training state, and the pure functions to infer and act.

`Agent` holds only static things (modules, optimisers, sizes, config), so it can be closed over
by jitted functions; everything that changes lives in the `TrainState` pytree.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from pearl_jax import networks as nets
from pearl_jax import posterior
from pearl_jax.config import PearlConfig


@struct.dataclass
class TrainState:
    """Every parameter, target, optimiser state, RNG key and counter of the learner.

    params: 'encoder', 'policy', 'qf' (Q1 and Q2 stacked on axis 0) and, by variant,
    'vf' + 'vf_target' (v1) or 'qf_target' + 'log_alpha' (twin_q).
    """

    params: dict
    opt_state: dict
    key: jax.Array
    step: jax.Array  # gradient steps taken (int32 holds 2e9 steps: far past any config)


@dataclass(frozen=True)
class Agent:
    config: PearlConfig
    obs_size: int
    action_size: int

    # --- modules -------------------------------------------------------------------------
    @property
    def encoder(self):
        cls = nets.RecurrentContextEncoder if self.config.recurrent else nets.ContextEncoder
        return cls(self.config.encoder_out_size, self.config.encoder_size, self.config.init_scheme)

    @property
    def policy(self):
        return nets.TanhGaussianPolicy(self.action_size, self.config.net_size, self.config.init_scheme)

    @property
    def qf(self):
        return nets.DoubleQNetwork(self.config.net_size, self.config.init_scheme)

    @property
    def vf(self):
        return nets.ValueNetwork(self.config.net_size, self.config.init_scheme)

    @property
    def context_size(self) -> int:
        obs_part = 2 * self.obs_size if self.config.use_next_obs_in_context else self.obs_size
        return obs_part + self.action_size + 1

    @property
    def target_entropy(self) -> float:
        c = self.config
        return -float(self.action_size) if c.target_entropy is None else float(c.target_entropy)

    def optimizers(self) -> dict:
        c = self.config
        lrs = {"encoder": c.context_lr, "policy": c.policy_lr, "qf": c.qf_lr}
        if c.sac_variant == "v1":
            lrs["vf"] = c.vf_lr
        else:
            lrs["log_alpha"] = c.alpha_lr
        # PyTorch Adam defaults (betas 0.9/0.999, eps 1e-8), one optimiser per network
        return {name: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8) for name, lr in lrs.items()}

    # --- state ---------------------------------------------------------------------------
    def init(self, key: jax.Array) -> TrainState:
        k_enc, k_pi, k_q, k_v, k_state = jax.random.split(key, 5)
        L = self.config.latent_size
        obs = jnp.zeros((1, self.obs_size))
        act = jnp.zeros((1, self.action_size))
        z = jnp.zeros((1, L))
        ctx = jnp.zeros((1, 1, self.context_size))
        params = {
            "encoder": self.encoder.init(k_enc, ctx)["params"],
            "policy": self.policy.init(k_pi, obs, z)["params"],
            "qf": self.qf.init(k_q, obs, act, z)["params"],
        }
        if self.config.sac_variant == "v1":
            params["vf"] = self.vf.init(k_v, obs, z)["params"]
            params["vf_target"] = params["vf"]  # an exact copy, as the reference
        else:
            params["qf_target"] = params["qf"]
            params["log_alpha"] = jnp.zeros(())
        opt_state = {name: tx.init(params[name]) for name, tx in self.optimizers().items()}
        return TrainState(params=params, opt_state=opt_state, key=k_state, step=jnp.zeros((), jnp.int32))

    # --- inference and acting ------------------------------------------------------------
    def infer_posterior(self, encoder_params, context, mask=None):
        """Context (T, N, D) [+ mask (T, N)] -> posterior (mean, variance), each (T, L)."""
        out = self.encoder.apply({"params": encoder_params}, context, mask)
        if self.config.recurrent:
            mask = None  # the LSTM already summarised the valid steps into one factor
        return posterior.posterior_from_encoder(
            out, self.config.latent_size, self.config.use_information_bottleneck, mask
        )

    def act(self, policy_params, key, obs, z, deterministic: bool):
        """Actions for observations (..., O) given z (..., L); deterministic = tanh(mean)."""
        mean, log_std = self.policy.apply({"params": policy_params}, obs, z)
        if deterministic:
            return jnp.tanh(mean)
        action, _, _ = nets.tanh_gaussian_sample(key, mean, log_std)
        return action
