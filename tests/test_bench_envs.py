"""experiments.bench_envs --set: values typed like the run command's --env.KEY, bad keys refused."""
import pytest

from experiments import bench_envs
from pearl_jax.config import ConfigError


def test_set_values_are_typed_by_the_constructor_default():
    got = bench_envs.parse_overrides(["contact_forces=false", "iterations=2"], ["ant-dir", "humanoid-dir"])
    for task in ("ant-dir", "humanoid-dir"):
        # a plain string "false" would switch contact forces on: bool("false") is True
        assert got[task]["contact_forces"] is False
        assert got[task]["iterations"] == 2 and type(got[task]["iterations"]) is int
    assert bench_envs.parse_overrides(["contact_forces=1"], ["ant-goal"])["ant-goal"]["contact_forces"] is True


@pytest.mark.parametrize("item,tasks,words", [
    ("contact_force=false", ["ant-dir"], ["contact_force", "ant-dir", "contact_forces"]),
    ("contact_forces=false", ["cheetah-vel"], ["contact_forces", "cheetah-vel", "iterations"]),
    ("contact_forces=maybe", ["ant-dir"], ["maybe", "boolean"]),
    ("iterations", ["ant-dir"], ["iterations", "KEY=VALUE"]),
])
def test_bad_set_items_are_named(item, tasks, words):
    with pytest.raises(ConfigError) as err:
        bench_envs.parse_overrides([item], tasks)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"--set {item}") and all(w in msg for w in words), msg


def test_command_line_refuses_before_compiling(capsys):
    with pytest.raises(SystemExit) as err:
        bench_envs.main(["--tasks", "ant-dir", "--set", "contact_force=false"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "contact_force=false" in lines[0] and "allowed" in lines[0]
    with pytest.raises(SystemExit) as err:
        bench_envs.main(["--tasks", "ant-walk"])
    assert err.value.code == 2 and "ant-walk" in capsys.readouterr().err
