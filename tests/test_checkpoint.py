"""Checkpoints: exact round-trip of a realistic run state (types, dtypes, typed keys), keep-last-N,
metadata, clear errors, safety against donation after `save`, and a process killed mid-save."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pearl_jax import buffers as B
from pearl_jax.agent import Agent
from pearl_jax.checkpoint import Checkpointer, CheckpointError
from pearl_jax.config import PearlConfig
from pearl_jax.train import RunState

OBS, ACT, TASKS = 4, 2, 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scramble(tree, seed):
    """Distinct non-trivial values in every numeric leaf (so zeros cannot pass by luck)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out = []
    for k, x in zip(keys, leaves):
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = jax.random.normal(k, x.shape, x.dtype)
        elif jnp.issubdtype(x.dtype, jnp.integer):
            x = jax.random.randint(k, x.shape, 1, 1000, x.dtype)
        out.append(x)  # typed keys stay as they are
    return jax.tree.unflatten(treedef, out)


def make_state(seed=0, net_size=16, rl_cap=40, enc_cap=12):
    agent = Agent(PearlConfig(net_size=net_size, encoder_size=16), OBS, ACT)
    train = agent.init(jax.random.key(seed))
    train = train.replace(
        params=_scramble(train.params, seed + 1), opt_state=_scramble(train.opt_state, seed + 2)
    )
    buf = B.init_buffers(TASKS, OBS, ACT, rl_cap, enc_cap)
    S = 7
    batch = jax.tree.map(
        lambda x: jax.random.normal(jax.random.key(seed + 3), (2, S, *x.shape[2:]), x.dtype), buf.rl.data
    )
    valid = jnp.ones((2, S), bool)
    buf = B.Buffers(
        rl=B.add(buf.rl, jnp.array([0, 2]), batch, valid), enc=B.add(buf.enc, jnp.array([1, 1]), batch, valid)
    )
    return RunState(
        learner=train.replace(step=jnp.int32(567 + seed)),
        buffers=buf,
        key=jax.random.fold_in(jax.random.key(seed + 4), 9),
        eval_key=jax.random.key(seed + 5),
        iteration=jnp.int32(3 + seed),
        env_steps=jnp.int32(1234 + seed),
    )


def to_host(tree):
    """Independent numpy copies (typed keys as their key data) for later comparison."""
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return jax.tree.map(lambda x: np.array(jax.random.key_data(x) if is_key(x) else x), tree)


def assert_same(restored, expected_host, expected_abstract):
    assert jax.tree.structure(restored) == jax.tree.structure(expected_abstract)
    for (path, r), a, e in zip(
        jax.tree_util.tree_flatten_with_path(restored)[0],
        jax.tree.leaves(expected_abstract),
        jax.tree.leaves(expected_host),
    ):
        name = jax.tree_util.keystr(path)
        assert isinstance(r, jax.Array), name
        assert r.dtype == a.dtype and r.shape == a.shape, name
        data = jax.random.key_data(r) if jax.dtypes.issubdtype(r.dtype, jax.dtypes.prng_key) else r
        np.testing.assert_array_equal(np.asarray(data), e, err_msg=name)


def meta(step):
    cfg = json.loads(json.dumps({"net_size": 16, "target_entropy": None, "env_kwargs": {"a": [1, 2]}}))
    return {"config": cfg, "iteration": step, "wall_time": 12.5 * step, "version": 1}


def test_round_trip_is_exact(tmp_path):
    state = make_state()
    host, abstract = to_host(state), jax.eval_shape(lambda: state)
    with Checkpointer(tmp_path / "ck", keep=3) as ck:
        ck.save(7, state, meta(7))
    # a fresh Checkpointer and a freshly built target, as a resumed process has
    ck = Checkpointer(tmp_path / "ck", keep=3)
    assert ck.latest_step() == 7
    restored, extra = ck.restore(target=jax.eval_shape(lambda: make_state(seed=5)))
    ck.close()
    assert_same(restored, host, abstract)
    assert extra == meta(7)
    assert isinstance(restored, RunState) and isinstance(restored.buffers.rl.data, B.Transition)
    adam = restored.learner.opt_state["policy"]
    assert isinstance(adam[0], optax.ScaleByAdamState) and isinstance(adam[1], optax.EmptyState)
    assert restored.learner.key.dtype == jax.random.key(0).dtype
    # the restored state is usable: the key splits, the counters are int32 arrays
    jax.random.split(restored.key)
    assert restored.iteration.dtype == jnp.int32


def test_typed_keys_of_other_impls_and_batches(tmp_path):
    state = {"rbg": jax.random.key(3, impl="rbg"), "batch": jax.random.split(jax.random.key(1), 5)}
    with Checkpointer(tmp_path, keep=1) as ck:
        ck.save(0, state, {})
        restored, _ = ck.restore(target=jax.eval_shape(lambda: state))
    assert_same(restored, to_host(state), jax.eval_shape(lambda: state))
    assert str(restored["rbg"].dtype) == "key<rbg>"


def test_keep_last_n_latest_step_and_step_choice(tmp_path):
    target = jax.eval_shape(make_state)
    with Checkpointer(tmp_path, keep=2) as ck:
        assert ck.latest_step() is None
        for step in (10, 20, 30, 40):
            ck.save(step, make_state(seed=step), meta(step))
        ck.wait()
        assert ck.all_steps() == [30, 40] and ck.latest_step() == 40
        assert sorted(os.listdir(tmp_path)) == ["30", "40"]
        restored, extra = ck.restore(30, target=target)
        assert extra["iteration"] == 30 and int(restored.env_steps) == 1234 + 30
        restored, extra = ck.restore(target=target)
        assert extra == meta(40) and int(restored.iteration) == 3 + 40


def test_empty_directory_and_missing_step_raise(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ck:
        with pytest.raises(CheckpointError, match="no checkpoint in"):
            ck.restore(target=jax.eval_shape(make_state))
        ck.save(1, {"x": jnp.ones(2)}, {})
        with pytest.raises(CheckpointError, match=r"step 5 .*have \[1\]"):
            ck.restore(5, target={"x": jnp.ones(2)})


def test_mismatched_target_names_what_differs(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ck:
        ck.save(1, make_state(), {})
        # wider networks and a bigger replay buffer: shapes differ
        with pytest.raises(CheckpointError) as err:
            ck.restore(target=jax.eval_shape(lambda: make_state(net_size=32, rl_cap=80)))
        msg = str(err.value)
        assert "79 leaves differ, under: buffers.rl.data (6), learner.opt_state.policy" in msg
        assert "learner.params.policy (" in msg and "learner.params.encoder" not in msg
        first_layer = "learner.opt_state.policy.0.mu.MLP_0.Dense_0.kernel"
        assert f"{first_layer}: checkpoint float32[9, 16] vs target float32[9, 32]" in msg
        assert "buffers.rl.data.obs: checkpoint float32[3, 40, 4] vs target float32[3, 80, 4]" in msg
        # a counter changing dtype (Orbax alone would cast silently) and a new field
        good = make_state()
        bad = {"state": good, "new": jnp.zeros(3)}
        with pytest.raises(CheckpointError, match="in the target but not in the checkpoint"):
            ck.restore(target=jax.eval_shape(lambda: bad))
        bad = good.replace(iteration=jnp.float32(0))
        with pytest.raises(CheckpointError, match=r"iteration: checkpoint int32\[\] vs target float32\[\]"):
            ck.restore(target=jax.eval_shape(lambda: bad))
        # the checkpoint itself is still fine
        ck.restore(target=jax.eval_shape(make_state))


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_checkpoint_survives_deleted_and_donated_source(tmp_path):
    # a buffer large enough (~30 MB) that the background write is still running when we strike
    state = make_state(rl_cap=250_000)
    host, abstract = to_host(state), jax.eval_shape(lambda: state)
    overwrite = lambda x: x if x.dtype == abstract.key.dtype else x * 0 + 1
    step_fn = jax.jit(lambda s: jax.tree.map(overwrite, s), donate_argnums=0)
    with Checkpointer(tmp_path, keep=2) as ck:
        ck.save(1, state, {})
        state.buffers.enc.data.obs.delete()  # a leaf freed outright
        state = state.replace(buffers=state.buffers.replace(enc=state.buffers.enc.replace(
            data=state.buffers.enc.data.replace(obs=jnp.zeros((TASKS, 12, OBS))))))
        state = step_fn(state)  # everything else donated to a step that overwrites it
        jax.block_until_ready(state)
        restored, _ = ck.restore(target=abstract)
    assert_same(restored, host, abstract)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from pearl_jax.checkpoint import Checkpointer

    ck = Checkpointer(sys.argv[1], keep=3)
    ck.save(1, {"x": jnp.full((1000,), 1.0)}, {"step": 1})
    ck.wait()

    async def die(self, *args, **kwargs):  # everything written, nothing committed yet
        os.kill(os.getpid(), signal.SIGKILL)

    atomicity.AtomicRenameTemporaryPath.finalize = die
    ck.save(2, {"x": jnp.full((1000,), 2.0)}, {"step": 2})
    ck.wait()
    print("survived")
    """
)


def test_killed_mid_save_keeps_last_complete_checkpoint(tmp_path):
    d = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", CHILD, str(d)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    left = sorted(os.listdir(d))
    assert "1" in left and "2" not in left and "2.orbax-checkpoint-tmp" in left, left
    (d / "9.orbax-checkpoint-tmp").mkdir()  # a stray half-written step, by hand
    (d / "9.orbax-checkpoint-tmp" / "junk").write_text("partial")

    target = {"x": jax.ShapeDtypeStruct((1000,), jnp.float32)}
    with Checkpointer(d, keep=3) as ck:
        assert ck.all_steps() == [1] and ck.latest_step() == 1
        restored, extra = ck.restore(target=target)
        assert extra == {"step": 1} and np.all(np.asarray(restored["x"]) == 1.0)
        ck.save(2, {"x": jnp.full((1000,), 2.0)}, {"step": 2})  # the lost step can be redone
        restored, extra = ck.restore(target=target)
        assert extra == {"step": 2} and np.all(np.asarray(restored["x"]) == 2.0)
        assert sorted(os.listdir(d)) == ["1", "2"]  # leftovers cleaned by then
