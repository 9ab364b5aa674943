"""The training command: exact resume, bad command lines, and a signal-safe stop."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import rundir, run
from tests.tiny import FLAGS, progress_rows, subprocess_env
from pearl_jax.config import from_json as config_from_json
from pearl_jax.checkpoint import Checkpointer
from pearl_jax.train import Trainer

TINY = ["--task=point-robot", "--preset=tiny"]


def _final_state(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        config = config_from_json(f.read())
    trainer = Trainer(config)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), keep=config.keep_checkpoints)
    state, _ = ckpt.restore(target=trainer.abstract_state())
    ckpt.close()
    return state


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_resumed_run_equals_uninterrupted(tmp_path, num_seeds):
    """2 iterations resumed for 2 more equal 4 straight ones, bit for bit, for one seed (files at
    the top of the run dir) and for a batch of two (a seed-<s>/ directory per seed)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    seeds = [f"--num_seeds={num_seeds}"]
    assert run.main(FLAGS + seeds + ["--num_iterations=2", f"--out-dir={a}"]) == 0
    assert run.main(["--resume", a, "--num_iterations=4"]) == 0
    assert run.main(FLAGS + seeds + ["--num_iterations=4", f"--out-dir={b}"]) == 0
    for seed, seed_dir in rundir.seed_dirs(a):
        assert seed_dir == (a if num_seeds == 1 else os.path.join(a, f"seed-{seed}"))
        other = os.path.join(b, os.path.relpath(seed_dir, a))
        rows_a, rows_b = progress_rows(seed_dir), progress_rows(other)
        assert [r["Epoch"] for r in rows_a] == ["1", "2", "3", "4"]
        assert rows_a == rows_b  # every metric, to the last printed digit
        assert sorted(os.listdir(os.path.join(seed_dir, "online"))) == sorted(os.listdir(os.path.join(other, "online")))
        with open(os.path.join(seed_dir, "config.json")) as f:
            seed_config = config_from_json(f.read())
        assert (seed_config.seed, seed_config.num_seeds) == (seed, 1)  # the single-seed run it equals
    assert [s for s, _ in rundir.seed_dirs(a)] == list(range(num_seeds))
    assert os.listdir(os.path.join(a, "checkpoints"))  # one checkpoint set for the whole batch
    sa, sb = _final_state(a), _final_state(b)
    assert np.asarray(sa.iteration).tolist() == [4] * num_seeds
    leaves_a, leaves_b = jax.tree.leaves(sa), jax.tree.leaves(sb)
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--task=pointrobot"], "pointrobot"),
        (["--task=point-robot", "--meta_batch=0"], "--meta_batch=0"),
        (["--task=point-robot", "--discount=yes"], "--discount=yes"),
        (["--task=point-robot", "--no_such_field=1"], "no_such_field"),
        (["--task=cheetah-vel", "--sparse_rewards=true"], "sparse_rewards"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line_and_no_run_dir(tmp_path, args, needle):
    out = tmp_path / "run"
    proc = _cli(args + [f"--out-dir={out}"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error")]
    assert len(lines) == 1 and needle in lines[0]
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_sigterm_writes_checkpoint_and_resume_continues(tmp_path):
    out = str(tmp_path / "run")
    # chunks of one iteration (the programs every test shares); no periodic checkpoint before 100
    args = FLAGS + ["--num_iterations=200", "--checkpoint_every=100", f"--out-dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.time() + 400
    for line in proc.stdout:
        seen.append(line)
        if "compile seconds" in line:
            time.sleep(2.0)  # let it start the first chunk
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline
    rest, _ = proc.communicate(timeout=400)
    text = "".join(seen) + rest
    assert proc.returncode == 143, text
    assert f"--resume {out}" in text
    ckpt = Checkpointer(os.path.join(out, "checkpoints"), keep=3)
    step = ckpt.latest_step()
    ckpt.close()
    assert step is not None and 0 < step < 100  # the stop's own checkpoint
