"""A trained policy read back, the posterior-sampling figure, its probe, and wandb logging.

One real tiny point-robot run with two seeds, trained with --wandb in wandb's offline mode and
resumed once, is shared by the module: it is the checkpoint the pictures read and the run whose
offline wandb files are read back.
"""
import glob
import json
import os
import struct

import jax
import numpy as np
import pytest

from experiments import belief, plot, progress, render, run, trained
from experiments.configs import get_config
from pearl_jax.config import to_json
from pearl_jax.evaluate import evaluation_rollout
from pearl_jax.train import Trainer
from tests.tiny import FLAGS, tiny_config

TINY = FLAGS  # the tiny programs every run test shares (tests/tiny.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Seeds 0 and 1 of a tiny run: one iteration, then resumed for a second, both with --wandb."""
    root = tmp_path_factory.mktemp("pictures")
    out = str(root / "run")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(root / "wandb-home"))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_DIR", raising=False)  # the wandb files go into each seed's directory
        assert run.main(TINY + ["--num_seeds=2", "--num_iterations=1", f"--out-dir={out}", "--wandb"]) == 0
        assert run.main(["--resume", out, "--num_iterations=2", "--wandb"]) == 0
    return out


# --- reading a trained policy back ---------------------------------------------------------------

def test_load_slices_one_seed_of_the_newest_checkpoint(tiny):
    first, second = trained.load(tiny), trained.load(tiny, seed=1)
    assert (first.seed, second.seed, first.iteration, second.iteration) == (0, 1, 2, 2)
    assert first.state.iteration.shape == () and int(second.state.iteration) == 2  # no seed axis left
    a, b = first.state.learner.params["policy"], second.state.learner.params["policy"]
    assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_abstract_state_is_the_shape_of_init_without_tracing_a_rollout():
    trainer = Trainer(tiny_config(num_seeds=2))
    spec = lambda tree: [(p, x.shape, x.dtype) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert spec(trainer.abstract_state()) == spec(jax.eval_shape(trainer.init, trainer.seeds()))
    assert jax.tree.leaves(trainer.abstract_state(3))[0].shape[0] == 3


def test_adaptation_run_is_the_evaluation_protocol(tiny):
    policy = trained.load(tiny, seed=1)
    r = trained.adaptation_run(policy, 3)
    c = policy.config
    # 60 eval steps at horizon 20: three whole trajectories, the first with z from the prior
    assert r.obs.shape == (60, 2) and r.num_trajs == 3 and r.num_exploration == c.num_exp_traj_eval == 1
    assert np.array_equal(r.traj_index, np.repeat(np.arange(3), 20))
    np.testing.assert_allclose(r.obs[1:20], r.next_obs[:19])  # one path, step after step
    np.testing.assert_array_equal(r.belief_mean[0], 0.0)
    np.testing.assert_array_equal(r.belief_var[0], 1.0)  # before any trajectory: the prior
    # the same draw through the function the evaluation itself calls
    tr = policy.trainer
    task = jax.tree.map(lambda x: x[tr.test_ids[3]][None], tr.tasks)
    returns, num_trajs, (mean, var), steps = evaluation_rollout(
        tr.env, tr.agent, policy.state.learner.params, task, jax.random.key(trained.ADAPTATION_KEY))
    assert int(num_trajs[0]) == 3 and int(steps[0]) == 60
    np.testing.assert_allclose(r.returns(), np.asarray(returns)[0, :3], rtol=1e-5)
    np.testing.assert_allclose(r.belief_mean[-1], np.asarray(mean)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.belief_var[-1], np.asarray(var)[0], rtol=1e-5)


def _config_only(path, task, **fields):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(to_json(get_config(task).replace(**fields)))
    return str(path)


@pytest.mark.parametrize("make, args, message", [
    (lambda root, run: str(root / "missing"), [], "not a directory"),
    (lambda root, run: str(root), [], "not a run directory"),
    (lambda root, run: _config_only(root / "fresh", "point-robot"), [], "no checkpoint yet"),
    (lambda root, run: run, ["--seed", "7"], "--seed=7: not a seed of"),
    (lambda root, run: os.path.join(run, "seed-1"), [], "pass {run} --seed 1"),
    (lambda root, run: run, ["--task-id", "20"],
     "--task-id=20: indexes the 20 test tasks of point-robot; allowed 0..19"),
    (lambda root, run: run, ["--task-id", "-1"], "allowed 0..19"),
    (lambda root, run: _config_only(root / "cheetah", "cheetah-vel"), [], "drawn for point-robot and "
     "sparse-point-robot only"),
])
def test_posterior_errors_are_one_line_with_status_2(tiny, tmp_path, monkeypatch, capsys, make, args, message):
    monkeypatch.chdir(tmp_path)
    path = make(tmp_path, tiny)
    argv = [path, "--posterior"] + args + ([] if "--task-id" in args else ["--task-id", "0"])
    before = sorted(os.listdir(tmp_path))
    assert plot.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(run=tiny) in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--task-id", "1"], "--task-id=1: only meaningful with --posterior"),
    (["--posterior"], "--posterior: needs --task-id K"),
    (["--posterior", "--task-id", "1", "--online"], "--online: not with --posterior"),
])
def test_posterior_flags(tiny, capsys, args, message):
    assert plot.main([tiny] + args) == 2
    assert message in capsys.readouterr().err


# --- the probe ---------------------------------------------------------------------------------

def _goals(rng, n):
    return rng.uniform(-1, 1, (n, 2))


def test_probe_inverts_a_linear_code_of_the_goal():
    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(5, 2)), rng.normal(size=5)  # z = A goal + b: a 2-D plane in 5-D
    goals = _goals(rng, 40)
    probe = belief.fit_probe(goals @ A.T + b, goals, np.arange(40))
    new = _goals(rng, 10)
    np.testing.assert_allclose(probe(new @ A.T + b), new, atol=1e-8)  # unseen goals recovered exactly
    np.testing.assert_allclose(probe.weights[:-1].T @ A, np.eye(2), atol=1e-8)  # the map inverts A
    assert probe.cv_error < 1e-8 < probe.chance_error and probe.n_tasks == 40


def test_probe_error_beats_chance_only_when_z_encodes_the_goal():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 2))
    goals = np.repeat(_goals(rng, 60), 4, axis=0)  # 4 noisy posteriors per task
    task = np.repeat(np.arange(60), 4)
    noisy = belief.fit_probe(goals @ A.T + 0.1 * rng.normal(size=(240, 5)), goals, task)
    assert noisy.cv_error < 0.3 * noisy.chance_error
    blind = belief.fit_probe(rng.normal(size=(240, 5)), goals, task)
    assert blind.cv_error > 0.9 * blind.chance_error  # held-out error: no free lunch from 6 weights


# --- the posterior-sampling figure ---------------------------------------------------------------

def _by_gid(ax, prefix):
    return [a for a in ax.get_children() if (a.get_gid() or "").startswith(prefix)]


def test_posterior_figure_has_each_trajectory_and_each_belief(tiny):
    policy = trained.load(tiny, seed=1)
    r = trained.adaptation_run(policy, 3)
    fig = belief.posterior_figure(r, belief.training_probe(policy), policy)
    left, right = fig.axes[:2]
    lines = sorted(_by_gid(left, "trajectory-"), key=lambda a: int(a.get_gid().split("-")[1]))
    assert len(lines) == r.num_trajs == 3
    assert [line.get_linestyle() for line in lines] == ["--", "-", "-"]  # the prior's trajectory dashed
    for k, line in enumerate(lines):
        np.testing.assert_allclose(line.get_xydata()[1:], r.next_obs[r.traj_index == k])
    assert len(_by_gid(right, "belief-mean-")) == 3
    clouds = [a for a in _by_gid(right, "belief-") if a.get_gid()[7:].isdigit()]
    assert sorted(int(a.get_gid()[7:]) for a in clouds) == [0, 1, 2, 3]  # the prior, then after each
    assert all(len(c.get_offsets()) == belief.BELIEF_SAMPLES for c in clouds)
    for ax in (left, right):
        (goal,) = [a for a in ax.get_children() if a.get_gid() == "goal"]
        np.testing.assert_allclose(goal.get_xydata()[0], r.task)
        assert len(_by_gid(ax, "train-goals")[0].get_xdata()) == 80


def test_posterior_command_writes_the_figure(tiny, tmp_path, capsys):
    out = tmp_path / "posterior.png"
    assert plot.main([tiny, "--posterior", "--task-id", "3", "--seed", "1", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}: seed 1, checkpoint of iteration 2, test task 3, 3 trajectories")


def test_render_sends_point_robots_to_the_posterior_figure(tiny, capsys):
    assert render.main([tiny, "--task-id", "2", "--out", "r.html"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"python -m experiments.plot {tiny} --posterior --task-id 2" in err


# --- wandb, offline --------------------------------------------------------------------------------

def _records(path):
    """The protobuf records of a .wandb file (a LevelDB-style log after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    out, pos, chunk = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def _offline_runs(seed_dir):
    """[(run record, history rows)] of each offline wandb run in the seed's directory, oldest first."""
    found = []
    for path in sorted(glob.glob(os.path.join(seed_dir, "wandb", "offline-run-*", "run-*.wandb"))):
        records = _records(path)
        (head,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        rows = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                for r in records if r.WhichOneof("record_type") == "history"]
        found.append((head, rows))
    return found


def test_wandb_one_run_per_seed_resumed_under_the_same_id(tiny):
    ids = []
    for seed in (0, 1):
        d = os.path.join(tiny, f"seed-{seed}")
        with open(os.path.join(d, "wandb_id")) as f:
            ids.append(f.read().strip())
        runs = _offline_runs(d)
        assert len(runs) == 2  # the first process and the resumed one
        rows = progress.read_rows(os.path.join(d, "progress.csv"))
        for (head, history), row in zip(runs, rows):
            assert head.run_id == ids[-1] and head.run_group == "run" and head.display_name == f"run/seed-{seed}"
            config = {u.key: json.loads(u.value_json) for u in head.config.update}
            assert (config["task"], config["seed"], config["num_seeds"]) == ("point-robot", seed, 1)
            (logged,) = history  # one evaluation per process
            assert logged["_step"] == int(row[progress.ENV_STEPS])  # wandb's step: env steps
            expected = progress.scalars({k: float(v) for k, v in row.items()})
            assert set(expected) == {k for k in logged if not k.startswith("_")}  # TensorBoard's scalars
            for name, value in expected.items():
                assert logged[name] == pytest.approx(value, rel=1e-6), name
    assert ids[0] != ids[1]


def test_wandb_is_a_run_flag_checked_for_its_package(tmp_path, monkeypatch):
    from experiments import cli, wandb_log
    from pearl_jax.config import ConfigError

    out = f"--out-dir={tmp_path / 'r'}"
    assert cli.parse_command_line(TINY + [out]).wandb is False
    assert cli.parse_command_line(TINY + ["--wandb", out]).wandb is True  # a bare flag switches it on
    assert cli.parse_command_line(TINY + ["--wandb=false", out]).wandb is False
    assert "wandb" not in json.loads(to_json(cli.parse_command_line(TINY + ["--wandb", out]).config))
    monkeypatch.setattr(wandb_log, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"--wandb=true: needs the wandb package: pip install 'pearl-jax\[wandb\]'"):
        cli.parse_command_line(TINY + ["--wandb", out])
