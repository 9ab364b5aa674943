"""Two processes on one machine (coordinator on 127.0.0.1, CPU collectives over gloo) train the
same run as one process: the seed axis spans both processes' devices, only process 0 writes the
progress files, and Orbax saves and restores the sharded state from both (a resumed launch)."""
import os
import socket
import subprocess

import numpy as np
import pytest

from tests.tiny import FLAGS, progress_rows, python, subprocess_env

SEEDS = ["--num_seeds=2", "--seed=5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], processes: int) -> list[subprocess.CompletedProcess]:
    env = subprocess_env(JAX_PLATFORMS="cpu")
    if processes == 1:
        cmds = [[python(), "-m", "experiments.run", *args]]
    else:
        port = _free_port()
        cmds = [[python(), "-m", "experiments.run", *args, f"--coordinator=127.0.0.1:{port}",
                 f"--num_processes={processes}", f"--process_id={i}"] for i in range(processes)]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    out = []
    for p, c in zip(procs, cmds):
        try:
            text, _ = p.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"timed out: {' '.join(c)}")
        out.append(subprocess.CompletedProcess(c, p.returncode, text, ""))
    return out


def _close(rows_a, rows_b):
    assert [r["Epoch"] for r in rows_a] == [r["Epoch"] for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.slow
def test_two_processes_train_and_resume_like_one(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single = _launch([*FLAGS, *SEEDS, "--num_iterations=2", f"--out-dir={one}"], 1)[0]
    assert single.returncode == 0, single.stdout[-3000:]
    first = _launch([*FLAGS, *SEEDS, "--num_iterations=1", f"--out-dir={two}"], 2)
    assert [p.returncode for p in first] == [0, 0], first[0].stdout[-3000:] + first[1].stdout[-3000:]
    assert "2 slot(s) on 2 device(s)" in first[0].stdout
    assert "pearl-jax:" not in first[1].stdout  # only process 0 speaks
    resumed = _launch(["--resume", two, "--num_iterations=2"], 2)
    assert [p.returncode for p in resumed] == [0, 0], resumed[0].stdout[-3000:] + resumed[1].stdout[-3000:]
    assert "resumed from checkpoint 1" in resumed[0].stdout
    for seed in (5, 6):
        rows_two = progress_rows(os.path.join(two, f"seed-{seed}"))
        assert [r["Epoch"] for r in rows_two] == ["1", "2"]  # written once, by process 0
        _close(rows_two, progress_rows(os.path.join(one, f"seed-{seed}")))
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["1", "2"]


def test_a_multi_process_run_needs_an_explicit_run_dir(tmp_path):
    proc = subprocess.run([python(), "-m", "experiments.cli", *FLAGS, "--coordinator=127.0.0.1:1",
                           "--num_processes=2", "--process_id=1"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --out_dir: required for a multi-process run")
