"""Collection and evaluation semantics of the reference, checked on the point robot."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.base import task_at
from experiments.configs import apply_preset, get_config
from pearl_jax.collect import EXTRA_RL, PRIOR, collect_visits
from pearl_jax.evaluate import online_adaptation
from pearl_jax.rollout import empty_history, rollout, scan_length
from pearl_jax.train import Trainer, seed_slice


def _trainer(**overrides):
    cfg = apply_preset(get_config("point-robot"), "tiny").replace(
        num_initial_steps=40, num_steps_prior=40, num_extra_rl_steps_posterior=60, num_steps_posterior=0,
        embedding_batch_size=16, net_size=16, encoder_size=16, **overrides,
    )
    return Trainer(cfg)


@pytest.fixture(scope="module")
def initial_state():
    """An untrained learner with the initial pool collected (one seed of the batch)."""
    tr = _trainer()
    return tr, seed_slice(tr.init(tr.seeds()), 0)


def _other_encoder(tr, params):
    other = tr.agent.init(jax.random.key(99)).params["encoder"]
    return {**params, "encoder": other}


def test_initial_pool_fills_both_buffers_with_whole_trajectories(initial_state):
    tr, state = initial_state
    sizes_rl, sizes_enc = np.asarray(state.buffers.rl.size), np.asarray(state.buffers.enc.size)
    # 40 steps requested, paths of 20 that never terminate: exactly 2 trajectories per task
    assert np.all(sizes_rl == 40) and np.all(sizes_enc == 40)
    assert int(state.env_steps) == 40 * tr.n_train


def test_visit_clears_encoder_buffer_and_grows_rl_buffer(initial_state):
    tr, state = initial_state
    drawn = jnp.array([3, 7, 3])  # task 3 drawn twice: its encoder buffer keeps the later visit
    bufs, collected, out = collect_visits(
        tr.env, tr.agent, state.learner.params, state.buffers, task_at(tr.tasks, drawn), drawn, jax.random.key(1)
    )
    assert int(collected) == 3 * (40 + 60)
    rl, enc = np.asarray(bufs.rl.size), np.asarray(bufs.enc.size)
    assert rl[7] == 40 + 100 and rl[3] == 40 + 200  # RL buffer never cleared, grows by each visit
    assert enc[7] == 40 and enc[3] == 40  # encoder buffer: the visit's prior phase only
    assert rl[0] == 40 and enc[0] == 40  # untouched task
    # the encoder buffer of task 3 holds exactly the second visit's prior-phase data
    prior = np.asarray(out.valid & (out.phase == PRIOR))
    assert prior.sum(axis=1).tolist() == [40, 40, 40]
    prior_obs = np.asarray(out.transitions.obs[2])[prior[2]]
    enc_obs = np.asarray(bufs.enc.data.obs[3, :40])
    np.testing.assert_array_equal(enc_obs, prior_obs)
    assert not np.array_equal(enc_obs, np.asarray(out.transitions.obs[0])[prior[0]])
    # phases run in order: all prior steps come before all RL-only steps
    extra = np.asarray(out.valid & (out.phase == EXTRA_RL))
    assert extra.sum(axis=1).tolist() == [60, 60, 60]
    assert np.nonzero(prior[0])[0].max() < np.nonzero(extra[0])[0].min()


def test_prior_phase_and_first_posterior_trajectory_ignore_the_encoder(initial_state):
    tr, state = initial_state
    drawn = jnp.array([1, 2])
    key = jax.random.key(5)
    args = (tr.env, tr.agent)
    _, _, a = collect_visits(*args, state.learner.params, state.buffers, task_at(tr.tasks, drawn), drawn, key)
    other = _other_encoder(tr, state.learner.params)
    _, _, b = collect_visits(*args, other, state.buffers, task_at(tr.tasks, drawn), drawn, key)
    valid, phase, traj = np.asarray(a.valid), np.asarray(a.phase), np.asarray(a.traj_index)
    act_a, act_b = np.asarray(a.transitions.action), np.asarray(b.transitions.action)
    prior = valid & (phase == PRIOR)
    first = valid & (phase == EXTRA_RL) & (traj == 0)
    later = valid & (phase == EXTRA_RL) & (traj > 0)
    assert prior.any() and first.any() and later.any()
    np.testing.assert_array_equal(act_a[prior], act_b[prior])  # prior phase: encoder-independent
    np.testing.assert_array_equal(act_a[first], act_b[first])  # first posterior-phase path: prior z
    assert not np.allclose(act_a[later], act_b[later])  # later paths: z from the visit's context


@pytest.mark.parametrize("num_exp", [1, 2])
def test_evaluation_uses_context_only_after_exploration(initial_state, num_exp):
    tr, state = initial_state
    # Flax's standard init gives a policy whose actions visibly depend on z
    cfg = tr.config.replace(num_exp_traj_eval=num_exp, init_scheme="flax")
    agent = tr.agent.__class__(cfg, tr.agent.obs_size, tr.agent.action_size)
    params = agent.init(jax.random.key(1)).params
    other = {**params, "encoder": agent.init(jax.random.key(99)).params["encoder"]}
    tasks = task_at(tr.tasks, tr.test_ids[:4])
    key = jax.random.key(3)
    ret_a, n_a, _, steps_a = online_adaptation(tr.env, agent, params, tasks, key)
    ret_b, n_b, _, _ = online_adaptation(tr.env, agent, other, tasks, key)
    assert np.all(np.asarray(n_a) == 3) and np.all(np.asarray(n_b) == 3)  # 60 steps / paths of 20
    assert int(steps_a) == 4 * 60
    np.testing.assert_array_equal(ret_a[:, :num_exp], ret_b[:, :num_exp])
    assert np.max(np.abs(ret_a[:, num_exp:3] - ret_b[:, num_exp:3])) > 1e-2


def test_rollout_counts_whole_trajectories_and_marks_terminal_steps():
    """A toy env that terminates after 3 steps: a quota of 7 steps gives 3 whole trajectories."""
    from envs.base import EnvState

    class Short:
        def reset(self, key, task):
            z = jnp.zeros(())
            return EnvState(physics=z, obs=jnp.zeros(1), reward=z, terminated=z, info={"sparse_reward": z}, task=task)

        def step(self, s, a):
            t = s.physics + 1
            return s.replace(physics=t, obs=t[None], reward=t, terminated=(t >= 3).astype(jnp.float32))

    tr = _trainer()
    agent = tr.agent.__class__(tr.config.replace(max_path_length=5), 1, 2)
    params = agent.init(jax.random.key(0)).params
    z_fn = lambda k, p, i, h, n: jnp.zeros((i.shape[0], agent.config.latent_size))
    out = rollout(Short(), agent, params["policy"], jnp.zeros(2), jax.random.key(0),
                  phase_steps=jnp.array([[7, 0, 4], [7, 0, 4]]), length=scan_length(7, 5) + scan_length(4, 5),
                  max_path_length=5, deterministic=True, choose_z=z_fn, record=(False, False, False),
                  history=empty_history(2, 1, 1, 2), history_size=jnp.zeros(2, jnp.int32))
    # phase 0: 3 trajectories (9 rows) for a quota of 7; the empty phase 1 is skipped; phase 2: 2
    np.testing.assert_array_equal(np.asarray(out.num_trajs[0]), [3, 0, 2])
    assert np.all(np.asarray(out.phase[0])[np.asarray(out.valid[0])] != 1)
    valid = np.asarray(out.valid[0])
    assert valid.sum() == 15
    np.testing.assert_array_equal(np.asarray(out.transitions.terminal[0])[valid], [0, 0, 1] * 5)
    np.testing.assert_array_equal(np.asarray(out.transitions.obs[0, :, 0])[valid], [0, 1, 2] * 5)
    np.testing.assert_array_equal(np.asarray(out.traj_index[0])[valid], [0] * 3 + [1] * 3 + [2] * 3 + [0] * 3 + [1] * 3)
    np.testing.assert_array_equal(np.asarray(out.phase[0])[valid], [0] * 9 + [2] * 6)
