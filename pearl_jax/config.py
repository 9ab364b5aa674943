"""Every knob of a PEARL run, as one frozen dataclass.

Defaults are the reference's common values (docs/reference.md §5.3, after Table C; oyster
configs/default.py); per-task values live in `experiments/configs.py`. The config is static
(hashable) so it can be closed over by jitted functions: every field that changes a shape or
the program's structure is a compile-time constant.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class PearlConfig:
    # --- task -----------------------------------------------------------------------------
    task: str = "cheetah-vel"
    max_path_length: int = 200
    n_train_tasks: int = 100  # must match the env's task set; checked when the run is built
    n_eval_tasks: int = 30
    # constructor overrides for envs.make, as sorted (name, value) pairs so the config stays
    # hashable, e.g. (("forward_backward", False),) for ant-dir with random directions
    env_kwargs: tuple = ()

    # --- networks (docs/reference.md §2) --------------------------------------------------
    latent_size: int = 5
    net_size: int = 300  # width of the 3 hidden layers of policy, Q and V
    encoder_size: int = 200  # width of the 3 hidden layers of the context encoder
    init_scheme: str = "rlkit"  # "rlkit" (reference fan-out quirk, bias 0.1) or "flax" (lecun/zeros)
    use_information_bottleneck: bool = True
    recurrent: bool = False  # LSTM encoder over an ordered context (new work, 2.4)
    use_next_obs_in_context: bool = False
    sparse_rewards: bool = False  # context reward = info['sparse_reward'] (1.6)

    # --- SAC and the information bottleneck (docs/reference.md §3) ------------------------
    sac_variant: str = "v1"  # "v1": the reference (V, target V, fixed temperature);
    #                          "twin_q": twin target Qs and a learned temperature
    reward_scale: float = 5.0
    discount: float = 0.99
    kl_lambda: float = 0.1
    soft_target_tau: float = 0.005
    policy_lr: float = 3e-4
    qf_lr: float = 3e-4
    vf_lr: float = 3e-4
    context_lr: float = 3e-4
    alpha_lr: float = 3e-4  # twin_q only
    target_entropy: float | None = None  # twin_q only; None means -action_size
    policy_mean_reg_weight: float = 1e-3
    policy_std_reg_weight: float = 1e-3
    policy_pre_activation_weight: float = 0.0

    # --- batches ---------------------------------------------------------------------------
    meta_batch: int = 16
    batch_size: int = 256
    embedding_batch_size: int = 100

    # --- data collection (docs/reference.md §1) --------------------------------------------
    num_iterations: int = 500
    num_initial_steps: int = 2000
    num_tasks_sample: int = 5
    num_steps_prior: int = 400
    num_steps_posterior: int = 0
    num_extra_rl_steps_posterior: int = 600
    num_train_steps_per_itr: int = 2000
    # rows per task in each buffer; 0 = sized from this config (buffers.buffer_capacities).
    # A run records the resolved sizes, so extending num_iterations on resume keeps its shapes.
    rl_buffer_capacity: int = 0
    enc_buffer_capacity: int = 0

    # --- evaluation (docs/reference.md §4) --------------------------------------------------
    num_evals: int = 1
    num_steps_per_eval: int = 600
    num_exp_traj_eval: int = 2
    eval_every: int = 1  # iterations between evaluations; the protocol itself never changes

    # --- run bookkeeping --------------------------------------------------------------------
    seed: int = 0
    checkpoint_every: int = 10  # iterations
    keep_checkpoints: int = 3

    def replace(self, **changes) -> "PearlConfig":
        return dataclasses.replace(self, **changes)

    @property
    def encoder_out_size(self) -> int:
        return 2 * self.latent_size if self.use_information_bottleneck else self.latent_size


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(PearlConfig)]
