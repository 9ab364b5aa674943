"""The training command: exact resume, bad command lines, and a signal-safe stop."""
import csv
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import run
from pearl_jax.config import from_json as config_from_json
from pearl_jax.checkpoint import Checkpointer
from pearl_jax.train import Trainer

TINY = ["--task=point-robot", "--preset=tiny"]
TIMING_COLUMNS = {"Wall seconds", "Compile seconds"}


def _rows(run_dir):
    with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def _final_state(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        config = config_from_json(f.read())
    trainer = Trainer(config)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), keep=config.keep_checkpoints)
    state, _ = ckpt.restore(target=trainer.abstract_state())
    ckpt.close()
    return state


def test_resumed_run_equals_uninterrupted(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # buffers are sized from num_iterations unless given: fix them so both runs hold equal shapes
    sizes = ["--rl_buffer_capacity=400", "--enc_buffer_capacity=60"]
    assert run.main(TINY + sizes + ["--num_iterations=2", f"--out-dir={a}"]) == 0
    assert run.main(["--resume", a, "--num_iterations=4"]) == 0
    assert run.main(TINY + sizes + ["--num_iterations=4", f"--out-dir={b}"]) == 0
    rows_a, rows_b = _rows(a), _rows(b)
    assert [r["Epoch"] for r in rows_a] == ["1", "2", "3", "4"]
    assert rows_a == rows_b  # every metric, to the last printed digit
    sa, sb = _final_state(a), _final_state(b)
    assert int(sa.iteration[0]) == 4 and int(sa.learner.step[0]) == int(sb.learner.step[0])
    leaves_a, leaves_b = jax.tree.leaves(sa), jax.tree.leaves(sb)
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=cwd, env=env,
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
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    args = TINY + ["--num_iterations=200", "--checkpoint_every=50", "--eval_every=50", f"--out-dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=tmp_path, env=env,
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
    assert step is not None and 0 < step < 200
