"""Runs survive kills, broken files, full disks, a second process and divergence, losing nothing.

Every test compares against one uninterrupted run per module (the `reference` fixtures):
progress rows (timing columns aside), the scalars TensorBoard shows, the online curves and the
final checkpoint's per-leaf fingerprints (experiments/soak.py `compare_runs`). Kills at exact
moments come from the PEARL_KILL_AT hook (experiments/faults.py); the long randomised version
is `python -m experiments.soak`.
"""
import hashlib
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys

import pytest

from experiments import progress, rundir, run, soak
from experiments.session import CHECKPOINT_FORMAT
from tests.tiny import FLAGS, subprocess_env

ITERATIONS = 4  # checkpoints 2, 3, 4 kept (keep_checkpoints=3)


def _main(args, capsys):
    """run.main in this process: (exit status, stdout, stderr)."""
    try:
        code = run.main(args)
    except SystemExit as exc:  # a bad command line
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("reference") / "run")
    assert run.main(FLAGS + [f"--num_iterations={ITERATIONS}", f"--out-dir={d}"]) == 0
    return d


@pytest.fixture(scope="module")
def reference2(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("reference2") / "run")
    assert run.main(FLAGS + ["--num_seeds=2", "--num_iterations=2", f"--out-dir={d}"]) == 0
    return d


def _copy(src, tmp_path, stopped_at=None):
    """A copy of a run; `stopped_at`: as if stopped there (newer checkpoints gone, later rows kept
    like a kill after logging them)."""
    d = str(tmp_path / "run")
    shutil.copytree(src, d)
    if stopped_at is not None:
        for name in os.listdir(rundir.checkpoint_dir(d)):
            if int(name) > stopped_at:
                shutil.rmtree(os.path.join(rundir.checkpoint_dir(d), name))
    return d


def snapshot(root):
    """Every entry under `root` (itself included): type and mode, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            path = os.path.join(dirpath, name)
            if name == "" and dirpath != root:
                continue
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_size if digest else 0, st.st_mtime_ns, digest)
    return out


def _equal_to(d, ref):
    report = soak.compare_runs(d, ref)
    assert report["equal"], report["mismatches"]
    return report


def _files(snap):
    """A snapshot's files alone (a renamed directory may get a new mtime itself)."""
    return {k: v for k, v in snap.items() if v[3] is not None}


def _error_lines(err):
    return [line for line in err.splitlines() if line.strip() and not line.startswith("[")]


# --- 1, 3: SIGKILL at any moment -------------------------------------------------------------

def test_sigkill_mid_row_before_first_checkpoint_and_mid_save_then_resume_is_exact(reference, tmp_path, capsys):
    d = str(tmp_path / "run")
    new_run = FLAGS + [f"--num_iterations={ITERATIONS}"]
    env = subprocess_env()
    first, second = soak.killed_runs(d, new_run, ["progress:1", "save:2"], env)
    # killed halfway through the first row: no checkpoint yet, a partial line, the lock left behind
    assert first["returncode"] == -9 and first["partial_line"] and not first["resumed"]
    assert os.path.exists(os.path.join(d, rundir.LOCK)) and os.path.exists(os.path.join(d, rundir.CONFIG))
    # the resume starts afresh, says so, and is killed while writing checkpoint 2
    assert second["resumed"] and second["returncode"] == -9, second["output"]
    assert "no checkpoint" in second["output"] and "starting afresh" in second["output"]
    assert second["mid_save"]
    assert sorted(os.listdir(rundir.checkpoint_dir(d))) == ["1", "2.orbax-checkpoint-tmp"]
    code, out, _ = _main(["--resume", d], capsys)
    assert code == 0 and "resumed from checkpoint 1" in out
    report = _equal_to(d, reference)
    assert report["rows_compared"] == ITERATIONS and report["tensorboard_values_compared"] > 0
    assert not any("tmp" in name for name in os.listdir(rundir.checkpoint_dir(d)))


def test_two_seeds_killed_with_one_seed_row_ahead_and_one_cut_resume_exactly(reference2, tmp_path, capsys):
    """Rows are written seed by seed: the 4th write is seed 1's row of iteration 2, after seed
    0's complete row 2 (and after checkpoint 1 started)."""
    d = str(tmp_path / "run")
    [killed] = soak.killed_runs(d, FLAGS + ["--num_seeds=2", "--num_iterations=2"], ["progress:4"], subprocess_env())
    assert killed["returncode"] == -9 and killed["partial_line"]
    seed0 = progress.read_rows(os.path.join(d, "seed-0", rundir.PROGRESS))
    seed1 = progress.read_rows(os.path.join(d, "seed-1", rundir.PROGRESS))
    assert [r["Epoch"] for r in seed0] == ["1", "2"] and [r["Epoch"] for r in seed1] == ["1"]
    committed = [n for n in os.listdir(rundir.checkpoint_dir(d)) if n.isdigit()]  # checkpoint 1 was
    code, out, _ = _main(["--resume", d], capsys)  # being written in the background, maybe still
    assert code == 0
    assert ("resumed from checkpoint 1" if committed == ["1"] else "starting afresh") in out
    assert _equal_to(d, reference2)["rows_compared"] == 4


def test_soak_plan_is_seeded_and_mixes_kinds():
    a, b = (soak.plan_kills(random.Random(3), 30, 20.0) for _ in range(2))
    assert a == b and a != soak.plan_kills(random.Random(4), 30, 20.0)
    assert {k.split(":")[0] for k in a} == {"progress", "save", "time"}
    assert soak.parse(["--kills=5", "--num_seeds=2"])["kills"] == 5
    with pytest.raises(ValueError, match="--kills=0"):
        soak.parse(["--kills=0"])


# --- 2: what a killed writer leaves in the progress files -------------------------------------

def test_partial_line_and_events_past_the_checkpoint_are_dropped(tmp_path):
    d = str(tmp_path)
    log = progress.ProgressLog(d)
    for i in (1, 2, 3):
        log.write({progress.ITERATION: i, progress.ENV_STEPS: 100 * i, "x": i / 2}, {"curve": [float(i)]})
    log.close()
    with open(os.path.join(d, rundir.PROGRESS), "a") as f:
        f.write("4,400,")  # a writer killed mid-row
    tb_files = os.listdir(os.path.join(d, rundir.TENSORBOARD))
    with open(os.path.join(d, rundir.TENSORBOARD, tb_files[0]), "ab") as f:
        f.write(b"\x30\x00\x00\x00\x00\x00\x00\x00\x01\x02")  # and mid-event
    assert [r["Epoch"] for r in progress.read_rows(os.path.join(d, rundir.PROGRESS))] == ["1", "2", "3"]
    with open(os.path.join(d, rundir.PROGRESS + ".tmp-999999"), "w") as f:
        f.write("Epoch\n")  # and one killed while rewriting the file
    log = progress.ProgressLog(d, resume_iteration=2, resume_env_steps=200)  # checkpoint 2
    log.write({progress.ITERATION: 3, progress.ENV_STEPS: 310, "x": 9.0}, {"curve": [9.0]})
    log.close()
    rows = progress.read_rows(os.path.join(d, rundir.PROGRESS))
    assert [(r["Epoch"], r["x"]) for r in rows] == [("1", "0.5"), ("2", "1.0"), ("3", "9.0")]
    assert progress.tensorboard_scalars(d)["x"] == {100: 0.5, 200: 1.0, 310: 9.0}
    assert sorted(os.listdir(os.path.join(d, rundir.ONLINE))) == [f"curve-iter0000{i}.npy" for i in (1, 2, 3)]
    assert sorted(os.listdir(d)) == [rundir.ONLINE, rundir.PROGRESS, rundir.TENSORBOARD]


# --- 4: unreadable checkpoints -----------------------------------------------------------------

def _data_file(step_dir):
    """The largest array file of a checkpoint step."""
    files = [os.path.join(p, n) for p, _, names in os.walk(os.path.join(step_dir, "state")) for n in names]
    return max(files, key=os.path.getsize)


def test_unreadable_checkpoints_are_named_set_aside_and_never_deleted(reference, tmp_path, capsys):
    d = _copy(reference, tmp_path)
    ckpt = rundir.checkpoint_dir(d)
    truncated, scrambled = _data_file(os.path.join(ckpt, "4")), _data_file(os.path.join(ckpt, "3"))
    os.truncate(truncated, os.path.getsize(truncated) // 2)
    with open(scrambled, "r+b") as f:
        f.write(random.Random(0).randbytes(os.path.getsize(scrambled)))
    missing = os.path.join(ckpt, "2", "state", "_METADATA")
    shutil.move(missing, tmp_path / "kept")
    before = snapshot(d)
    code, _, err = _main(["--resume", d, f"--num_iterations={ITERATIONS + 1}"], capsys)
    assert code == 2
    [line] = _error_lines(err)
    assert "no readable checkpoint" in line and all(f"{ckpt}/{s}:" in line for s in (2, 3, 4))
    assert snapshot(d) == before  # nothing deleted, renamed or tidied
    shutil.move(tmp_path / "kept", missing)  # checkpoint 2 readable again
    broken = {s: snapshot(os.path.join(ckpt, str(s))) for s in (3, 4)}
    code, out, _ = _main(["--resume", d], capsys)
    assert code == 0
    assert f"checkpoint 4 is unreadable ({ckpt}/4: " in out and "checkpoint 3 is unreadable" in out
    assert "resumed from checkpoint 2" in out
    for s in (3, 4):  # set aside with every byte, and written again
        moved = os.path.join(ckpt, f"{s}.unreadable-0")
        assert f"as {moved}" in out
        assert _files(snapshot(moved)) == _files(broken[s])
    _equal_to(d, reference)


# --- 5: checkpoints of another config or format --------------------------------------------

def test_checkpoint_of_another_format_or_config_is_refused_naming_the_difference(reference, tmp_path, capsys):
    d = _copy(reference, tmp_path)
    meta_path = os.path.join(rundir.checkpoint_dir(d), "4", "meta", "metadata")
    with open(meta_path) as f:
        meta = json.load(f)
    with open(meta_path, "w") as f:
        json.dump({**meta, "format": CHECKPOINT_FORMAT - 1}, f)
    before = snapshot(d)
    code, _, err = _main(["--resume", d, "--num_iterations=5"], capsys)
    assert code == 2 and snapshot(d) == before
    [line] = _error_lines(err)
    assert f"has format {CHECKPOINT_FORMAT - 1}" in line and f"reads format {CHECKPOINT_FORMAT}" in line

    with open(meta_path, "w") as f:  # the format right, the config another run's
        json.dump({**meta, "config": {**meta["config"], "discount": 0.5, "kl_lambda": 2.0}}, f)
    before = snapshot(d)
    code, _, err = _main(["--resume", d, "--num_iterations=5"], capsys)
    assert code == 2 and snapshot(d) == before
    [line] = _error_lines(err)
    assert "another config" in line and "discount (checkpoint 0.5, run 0.99)" in line and "kl_lambda" in line


# --- 6: a failing disk -----------------------------------------------------------------------

# files may not grow past 32 KiB (RLIMIT_FSIZE: EFBIG, since Python ignores SIGXFSZ): the
# checkpoint's array files are larger, the progress files smaller. Root is bound by it too.
SMALL_FILES_ONLY = ["bash", "-c", 'ulimit -f 32 && exec "$@"', "ulimit"]


def test_failed_checkpoint_write_exits_4_in_one_line_keeping_the_last(reference, tmp_path, capsys):
    d = _copy(reference, tmp_path, stopped_at=3)
    kept = {s: snapshot(os.path.join(rundir.checkpoint_dir(d), str(s))) for s in (2, 3)}
    proc = subprocess.run(SMALL_FILES_ONLY + [sys.executable, "-m", "experiments.run", "--resume", d],
                          env=subprocess_env(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1e9"),  # read only:
                          capture_output=True, text=True, timeout=300)  # a slow compile's cache write would fail too
    assert proc.returncode == 4, proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    [line] = lines
    assert line.startswith("error: writing checkpoint 4 failed: File too large") and "is kept" in line
    for s in (2, 3):
        assert snapshot(os.path.join(rundir.checkpoint_dir(d), str(s))) == kept[s]
    code, out, _ = _main(["--resume", d], capsys)
    assert code == 0 and "resumed from checkpoint 3" in out
    _equal_to(d, reference)


# --- 7: one process per run directory ----------------------------------------------------------

def test_second_process_is_refused_and_a_killed_holder_frees_the_directory(reference, tmp_path, capsys):
    d = _copy(reference, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom experiments.rundir import RunLock\n"
         "lock = RunLock(sys.argv[1]); lock.acquire(); lock.claim(); print('held', flush=True); time.sleep(300)", d],
        env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(d)
        code, _, err = _main(["--resume", d, "--num_iterations=5"], capsys)
        assert code == 2 and snapshot(d) == before
        [line] = _error_lines(err)
        assert f"{d} is in use by pid {holder.pid} on " in line
    finally:
        holder.kill()
        holder.wait()
    code, out, _ = _main(["--resume", d], capsys)  # the kernel freed the lock with its holder
    assert code == 0 and "done: 4 iterations" in out


def test_lock_message_names_the_holder_only_while_it_lives(tmp_path):
    d = str(tmp_path)
    held = rundir.RunLock(d)
    held.acquire()  # a new lock file names its holder at once
    with pytest.raises(rundir.RunDirInUse, match=f"in use by pid {os.getpid()} on "):
        rundir.RunLock(d).acquire()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(held.path, "w") as f:  # a holder still checking names the one before it, now gone
        f.write(f"pid {int(gone.stdout)} on {socket.gethostname()}\n")
    with pytest.raises(rundir.RunDirInUse, match="in use by another process; wait"):
        rundir.RunLock(d).acquire()
    held.release()
    again = rundir.RunLock(d)
    again.acquire()
    again.release()


def test_a_start_killed_before_its_config_leaves_a_directory_a_new_run_may_use(tmp_path):
    """Killed between creating the directory and writing config.json: only `.lock` is left.
    Nobody holds it, so a new run may start there; while a process holds it, it may not."""
    from experiments.cli import check_new_run_dir
    from pearl_jax.config import ConfigError

    d = str(tmp_path / "run")
    os.makedirs(d)
    lock = rundir.RunLock(d)
    lock.acquire()
    with pytest.raises(ConfigError, match="exists and is not empty"):
        check_new_run_dir(d)  # held: a live run is starting there
    lock.release()  # as a SIGKILL would: the file stays, the flock goes
    before = snapshot(d)
    check_new_run_dir(d)
    assert snapshot(d) == before  # the check itself changes nothing
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("a user's file")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        check_new_run_dir(d)


# --- 8: divergence ---------------------------------------------------------------------------

def test_non_finite_parameters_stop_with_exit_3_and_a_sane_resume_finishes(reference, tmp_path, capsys):
    d = _copy(reference, tmp_path, stopped_at=3)
    kept = snapshot(os.path.join(rundir.checkpoint_dir(d), "3"))
    with open(os.path.join(d, rundir.CONFIG)) as f:
        policy_lr = json.load(f)["policy_lr"]
    # the losses of iteration 4 are still finite; the parameters after its updates are not
    code, _, err = _main(["--resume", d, "--policy_lr=1e30"], capsys)
    assert code == 3
    [line] = _error_lines(err)
    assert "non-finite parameters at iteration 4 in seed(s) 0" in line
    assert sorted(os.listdir(rundir.checkpoint_dir(d))) == ["2", "3"]
    assert snapshot(os.path.join(rundir.checkpoint_dir(d), "3")) == kept
    code, out, _ = _main(["--resume", d, f"--policy_lr={policy_lr}"], capsys)
    assert code == 0 and "resumed from checkpoint 3" in out
    _equal_to(d, reference)


# --- 9: a rejected command changes nothing -------------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    (["--num_iterations=3"], "already completed 4 iterations"),
    (["--meta_batch=4"], "--meta_batch=4"),
    (["--policy_lr=fast"], "--policy_lr=fast"),
    (["--out-dir=elsewhere"], "--out_dir=elsewhere"),
    (["--env.no_such=1"], "env.no_such"),
])
def test_rejected_resume_changes_nothing(reference, tmp_path, capsys, extra, needle):
    d = _copy(reference, tmp_path)
    before = snapshot(d)
    code, _, err = _main(["--resume", d, *extra], capsys)
    assert code == 2 and snapshot(d) == before
    [line] = _error_lines(err)
    assert needle in line


def test_new_run_into_an_existing_run_changes_nothing(reference, tmp_path, capsys):
    d = _copy(reference, tmp_path)
    before = snapshot(d)
    code, _, err = _main(FLAGS + [f"--out-dir={d}"], capsys)
    assert code == 2 and snapshot(d) == before
    assert "use --resume" in _error_lines(err)[0]
