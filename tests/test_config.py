"""Configs hold the values of docs/reference.md §5.3; the CLI resolves, validates and rejects."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import envs
from experiments import configs
from experiments.cli import parse_command_line
from pearl_jax.config import FIELDS, ConfigError, PearlConfig, format_value, validate
from pearl_jax.config import from_json as config_from_json
from pearl_jax.config import to_json as config_to_json

# docs/reference.md §5.3 Tables A-D, transcribed independently of experiments/configs.py:
# n_train, n_eval, horizon, next_obs, sparse | initial, tasks_sample, prior, posterior, extra |
# meta_batch, train_steps, batch, embedding, reward_scale, kl, discount | evals, steps_eval, exp_traj
SPEC = {
    "cheetah-dir": (2, 2, 200, 0, 0, 2000, 5, 1000, 0, 1000, 4, 2000, 256, 256, 5, .1, .99, 4, 600, 2),
    "cheetah-vel": (100, 30, 200, 0, 0, 2000, 5, 400, 0, 600, 16, 2000, 256, 100, 5, .1, .99, 1, 600, 2),
    "ant-dir": (2, 2, 200, 0, 0, 2000, 5, 400, 0, 600, 4, 4000, 256, 256, 5, .1, .99, 4, 600, 2),
    "ant-goal": (150, 30, 200, 0, 0, 2000, 5, 400, 0, 600, 10, 4000, 256, 256, 5, 1., .99, 1, 600, 2),
    "humanoid-dir": (100, 30, 200, 0, 0, 2000, 5, 400, 0, 600, 16, 4000, 256, 256, 5, .1, .99, 1, 600, 2),
    "walker-rand-params": (40, 10, 200, 1, 0, 2000, 5, 400, 0, 600, 10, 4000, 256, 100, 5, .1, .99, 2, 600, 2),
    "hopper-rand-params": (40, 10, 200, 1, 0, 2000, 5, 400, 0, 600, 10, 4000, 256, 100, 5, .1, .99, 2, 600, 2),
    "point-robot": (80, 20, 20, 0, 0, 200, 5, 200, 0, 200, 16, 1000, 256, 64, 100, .1, .99, 2, 60, 1),
    "sparse-point-robot": (80, 20, 20, 0, 1, 200, 10, 100, 900, 0, 16, 1000, 256, 1024, 100, 1., .9, 2, 400, 5),
}
SPEC_FIELDS = (
    "max_path_length", "use_next_obs_in_context", "sparse_rewards",
    "num_initial_steps", "num_tasks_sample", "num_steps_prior", "num_steps_posterior",
    "num_extra_rl_steps_posterior", "meta_batch", "num_train_steps_per_itr", "batch_size",
    "embedding_batch_size", "reward_scale", "kl_lambda", "discount", "num_evals",
    "num_steps_per_eval", "num_exp_traj_eval",
)
COMMON = dict(latent_size=5, net_size=300, encoder_size=200, policy_lr=3e-4, qf_lr=3e-4, vf_lr=3e-4,
              context_lr=3e-4, soft_target_tau=0.005, use_information_bottleneck=True,
              recurrent=False, num_iterations=500, sac_variant="v1", init_scheme="rlkit")


def test_every_registered_task_has_a_reference_config():
    assert sorted(configs.task_names()) == sorted(envs.names())


@pytest.mark.parametrize("task", list(SPEC))
def test_reference_config_holds_spec_values_and_validates(task):
    raw = configs.get_config(task)
    assert raw.max_path_length is None  # the horizon is the env family's, not repeated here
    config = validate(raw)
    assert config == raw.replace(max_path_length=envs.env_class(task).max_path_length)
    assert validate(config) is config
    assert config.task == task
    got = tuple(getattr(config, f) for f in SPEC_FIELDS)
    for field, want, value in zip(SPEC_FIELDS, SPEC[task][2:], got):
        kind = int if field == "max_path_length" else type(getattr(PearlConfig(), field))
        assert value == want and type(value) is kind, (field, value)
    for field, want in COMMON.items():
        assert getattr(config, field) == want, field
    assert config.env_kwargs == () and config.target_entropy is None


def test_spot_checks_named_in_the_brief():
    vel, sparse = configs.get_config("cheetah-vel"), configs.get_config("sparse-point-robot")
    assert (vel.meta_batch, vel.embedding_batch_size, vel.num_extra_rl_steps_posterior) == (16, 100, 600)
    assert (sparse.discount, sparse.kl_lambda, sparse.sparse_rewards) == (0.9, 1.0, True)
    assert sparse.num_steps_posterior == 900
    assert configs.get_config("walker-rand-params").use_next_obs_in_context is True
    assert configs.get_config("point-robot").num_exp_traj_eval == 1


@pytest.mark.parametrize("name", ["point-robot", "sparse-point-robot"])
def test_the_env_owns_task_counts_horizon_and_sparse_reward(name):
    env, spec = envs.make(name), SPEC[name]
    assert (env.n_train_tasks, env.n_test_tasks) == spec[:2]
    assert env.max_path_length == spec[2] == validate(configs.get_config(name)).max_path_length
    assert bool(env.has_sparse_reward) == bool(spec[4])


def test_the_library_refuses_what_the_command_line_refuses():
    """Trainer(config) validates like the CLI: a horizon of the wrong family is impossible
    (None resolves to the env's), and a bad value raises the same one-line ConfigError."""
    from pearl_jax.train import Trainer

    assert validate(PearlConfig(task="point-robot")).max_path_length == 20
    with pytest.raises(ConfigError, match=r"^--sparse_rewards=true: point-robot has no sparse reward"):
        Trainer(PearlConfig(task="point-robot", sparse_rewards=True))
    with pytest.raises(ConfigError, match=r"^--meta_batch=0: must be a positive integer$"):
        Trainer(PearlConfig(task="point-robot", meta_batch=0))
    with pytest.raises(ConfigError) as cli_error:
        parse("--task", "point-robot", "--meta_batch=0")
    with pytest.raises(ConfigError) as lib_error:
        validate(PearlConfig(task="point-robot", meta_batch=0))
    assert str(cli_error.value) == str(lib_error.value)


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ConfigError, match="cheetah-vel.*sparse-point-robot"):
        configs.get_config("cheetah-velocity")


@pytest.mark.parametrize("preset", list(configs.PRESETS))
@pytest.mark.parametrize("task", list(SPEC))
def test_presets_apply_to_every_task_and_validate(task, preset):
    config = configs.apply_preset(configs.get_config(task), preset)
    validate(config)
    for field, value in configs.PRESETS[preset].items():
        assert getattr(config, field) == value
    # presets never touch the task set, horizon or evaluation protocol
    ref = configs.get_config(task)
    for field in ("task", "env_kwargs", "max_path_length", "num_steps_per_eval",
                  "num_exp_traj_eval", "sparse_rewards", "discount"):
        assert getattr(config, field) == getattr(ref, field)


def test_presets_are_reductions():
    tiny, small = configs.PRESETS["tiny"], configs.PRESETS["cpu-small"]
    assert tiny["num_iterations"] <= 2 and tiny["num_train_steps_per_itr"] <= 10
    assert small["net_size"] < 300 and small["num_train_steps_per_itr"] < 1000
    with pytest.raises(ConfigError, match="--preset=huge.*cpu-small, tiny"):
        configs.apply_preset(PearlConfig(), "huge")


def parse(*argv, out_dir="unused-out-dir"):
    return parse_command_line(["--out-dir", out_dir, *argv]).config


def test_overrides_of_every_field_type():
    c = parse("--task", "point-robot", "--meta_batch", "7", "--discount=0.95", "--recurrent=no",
              "--use-next-obs-in-context", "yes", "--init_scheme", "flax", "--sac_variant=twin_q",
              "--target_entropy", "-3", "--seed=11", "--env.goal_radius=0.3", "--env.n_train=60")
    assert (c.meta_batch, c.discount, c.recurrent, c.use_next_obs_in_context) == (7, 0.95, False, True)
    assert (c.init_scheme, c.sac_variant, c.target_entropy, c.seed) == ("flax", "twin_q", -3.0, 11)
    assert c.env_kwargs == (("goal_radius", 0.3), ("n_train", 60))
    assert c.max_path_length == 20  # resolved from the family
    bare = parse("--task", "point-robot", "--recurrent", "--meta_batch=3")
    assert bare.recurrent is True and bare.meta_batch == 3
    none = parse("--task", "point-robot", "--sac_variant=twin_q", "--target_entropy=none")
    assert none.target_entropy is None


@pytest.mark.parametrize("task", list(SPEC))
def test_every_field_is_a_flag(task):
    """Passing every field at its reference value reproduces the reference config."""
    ref = validate(configs.get_config(task))
    argv = [f"--{f}={format_value(getattr(ref, f))}" for f in FIELDS if f != "env_kwargs"]
    assert parse(*argv) == ref
    assert set(FIELDS) == {f.name for f in dataclasses.fields(PearlConfig)}


@pytest.mark.parametrize("task", list(SPEC))
def test_json_round_trip_is_exact(task):
    for config in (configs.get_config(task), configs.apply_preset(configs.get_config(task), "tiny")):
        again = config_from_json(config_to_json(config))
        assert again == config and hash(again) == hash(config)
        assert [type(getattr(again, f)) for f in FIELDS] == [type(getattr(config, f)) for f in FIELDS]
    odd = configs.get_config(task).replace(env_kwargs=(("a", True), ("b", 0.1)), target_entropy=-2.5)
    assert config_from_json(config_to_json(odd)) == odd


def test_json_rejects_missing_and_unknown_fields():
    data = json.loads(config_to_json(PearlConfig()))
    with pytest.raises(ConfigError, match="unknown field.*bogus"):
        config_from_json(json.dumps({**data, "bogus": 1}))
    del data["meta_batch"]
    with pytest.raises(ConfigError, match="missing field.*meta_batch"):
        config_from_json(json.dumps(data))


BAD = [  # argv after --task point-robot, the flag the message must name, the bad value
    (["--task=cheetah-velocity"], "task", "cheetah-velocity"),
    (["--meta_bach=3"], "meta_bach", "3"),
    (["--meta_batch=abc"], "meta_batch", "abc"),
    (["--discount=true"], "discount", "true"),
    (["--recurrent=maybe"], "recurrent", "maybe"),
    (["--meta_batch=0"], "meta_batch", "0"),
    (["--batch_size=-5"], "batch_size", "-5"),
    (["--num_steps_prior=-1"], "num_steps_prior", "-1"),
    (["--discount=1.5"], "discount", "1.5"),
    (["--soft_target_tau=0"], "soft_target_tau", "0"),
    (["--policy_lr=0"], "policy_lr", "0"),
    (["--kl_lambda=-0.1"], "kl_lambda", "-0.1"),
    (["--reward_scale=nan"], "reward_scale", "nan"),
    (["--init_scheme=xavier"], "init_scheme", "xavier"),
    (["--sac_variant=v2"], "sac_variant", "v2"),
    (["--max_path_length=0"], "max_path_length", "0"),
    (["--num_seeds=0"], "num_seeds", "0"),
    (["--task_shards=3"], "task_shards", "3"),
    (["--task_shards=0"], "task_shards", "0"),
    (["--coordinator=localhost"], "coordinator", "localhost"),
    (["--coordinator=localhost:1", "--num_processes=2", "--process_id=2"], "process_id", "2"),
    (["--num_exp_traj_eval=3"], "num_exp_traj_eval", "3"),
    (["--num_steps_per_eval=20"], "num_steps_per_eval", "20"),
    (["--sparse_rewards=true"], "sparse_rewards", "true"),
    (["--num_steps_prior=0"], "num_steps_prior", "0"),
    (["--target_entropy=-2"], "target_entropy", "-2"),
    (["--env.goal_raduis=0.3"], "env.goal_raduis", "0.3"),
    (["--env.n_train=many"], "env.n_train", "many"),
    (["--meta_batch=4", "--meta_batch=5"], "meta_batch", "5"),
    (["--preset=huge"], "preset", "huge"),
    (["--seed=-1"], "seed", "-1"),
]


@pytest.mark.parametrize("argv,field,value", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_command_lines_raise_one_line_naming_field_and_value(argv, field, value):
    with pytest.raises(ConfigError) as info:
        parse("--task", "point-robot", *argv)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"--{field}=") and value in msg, msg


def test_close_matches_and_required_task():
    with pytest.raises(ConfigError, match="did you mean --meta_batch"):
        parse("--task", "point-robot", "--meta-bach=3")
    with pytest.raises(ConfigError, match="--task: required"):
        parse("--meta_batch=3")
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse("--task", "point-robot", "stray")


def test_reference_contradiction_rules_are_not_vacuous():
    ok = configs.get_config("sparse-point-robot")
    validate(ok.replace(num_steps_prior=0))  # posterior phase alone still fills the encoder buffer
    validate(ok.replace(sac_variant="twin_q", target_entropy=-1.0))
    validate(configs.get_config("point-robot").replace(recurrent=True, use_information_bottleneck=False))
    with pytest.raises(ConfigError, match="--num_exp_traj_eval=20"):
        validate(ok.replace(num_exp_traj_eval=20))
    with pytest.raises(ConfigError, match="--meta_batch=2.0: must be an integer"):
        validate(ok.replace(meta_batch=2.0))


def test_parsing_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    request = parse_command_line(["--task", "point-robot", "--preset", "tiny", "--seed", "4"])
    assert request.out_dir.startswith(os.path.join("runs", "point-robot-seed4-"))
    assert request.preset == "tiny" and request.resume is None
    assert list(tmp_path.iterdir()) == []


def test_out_dir_must_be_new_or_empty(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(ConfigError, match="--out_dir=.*exists and is not empty"):
        parse_command_line(["--task", "point-robot", "--out-dir", str(tmp_path)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert parse_command_line(["--task", "point-robot", "--out-dir", str(empty)]).out_dir == str(empty)


def test_resume_reads_saved_config_and_allows_only_schedule_changes(tmp_path):
    saved = validate(configs.apply_preset(configs.get_config("point-robot"), "tiny").replace(seed=3))
    (tmp_path / "config.json").write_text(config_to_json(saved))
    request = parse_command_line(["--resume", str(tmp_path), "--num_iterations=9", "--seed=3"])
    assert request.config == saved.replace(num_iterations=9)
    assert request.out_dir == str(tmp_path) and request.resume == str(tmp_path)
    for argv, field in ((["--discount=0.5"], "discount"), (["--seed=4"], "seed"),
                        (["--preset=tiny"], "preset"), (["--env.goal_radius=0.5"], "env.goal_radius"),
                        (["--num_iterations=0"], "num_iterations")):
        with pytest.raises(ConfigError, match=f"^--{field}="):
            parse_command_line(["--resume", str(tmp_path), *argv])
    with pytest.raises(ConfigError, match="--resume=.*config.json"):
        parse_command_line(["--resume", str(tmp_path / "nope")])


def test_help_lists_every_field_with_default_and_type(capsys):
    with pytest.raises(SystemExit) as info:
        parse_command_line(["--task", "sparse-point-robot", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for field in FIELDS:
        if field != "env_kwargs":
            assert f"--{field} " in out
    assert "--discount" in out and "float" in out and "default 0.9" in out


def test_module_entry_exits_2_with_one_error_line(tmp_path):
    code = ("import sys; from experiments.cli import parse_or_exit; "
            "parse_or_exit(['--task', 'point-robot', '--meta_batch=0'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --meta_batch=0: must be a positive integer"]
    assert list(tmp_path.iterdir()) == []
