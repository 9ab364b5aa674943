"""Where a run's files live: the one place that knows the run-directory layout.

A single-seed run (``--num_seeds=1``) keeps everything at the top of its directory::

    RUN_DIR/config.json  progress.csv  tensorboard/  online/  checkpoints/

A multi-seed run keeps one sub-directory per seed, each laid out like a single-seed run
directory (without checkpoints), and the checkpoints of the whole batch once, at the top::

    RUN_DIR/config.json            the batch's config (seed = first seed, num_seeds = N)
    RUN_DIR/checkpoints/           every seed's state in one checkpoint per iteration
    RUN_DIR/seed-<s>/config.json   the config of seed s alone (seed = s)
    RUN_DIR/seed-<s>/progress.csv  tensorboard/  online/

So every tool that reads one run reads each seed of a multi-seed run the same way.
"""
from __future__ import annotations

import json
import os
import re

CONFIG = "config.json"
PROGRESS = "progress.csv"
TENSORBOARD = "tensorboard"
ONLINE = "online"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
_SEED_DIR = re.compile(r"^seed-(\d+)$")


class NotARunError(ValueError):
    """A directory that holds no run; its str is one line naming the directory."""


def seed_dir_name(seed: int) -> str:
    return f"seed-{int(seed)}"


def seed_dir(run_dir: str, seed: int, num_seeds: int) -> str:
    """The directory holding seed `seed`'s progress files (the run dir itself for one seed)."""
    return run_dir if num_seeds == 1 else os.path.join(run_dir, seed_dir_name(seed))


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS)


def seed_dirs(run_dir: str) -> list[tuple[int, str]]:
    """(seed, directory) of every seed of the run in `run_dir`, sorted by seed.

    A multi-seed run gives its `seed-<s>/` sub-directories; a single-seed run gives itself.
    Raises NotARunError when `run_dir` is neither.
    """
    if not os.path.isdir(run_dir):
        raise NotARunError(f"{run_dir}: not a directory")
    found = []
    for name in os.listdir(run_dir):
        m = _SEED_DIR.match(name)
        if m and os.path.isfile(os.path.join(run_dir, name, CONFIG)):
            found.append((int(m.group(1)), os.path.join(run_dir, name)))
    if found:
        return sorted(found)
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise NotARunError(f"{run_dir}: not a run directory (no {CONFIG} and no seed-<s>/ sub-directories)")
    try:
        with open(path) as f:
            seed = int(json.load(f)["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotARunError(f"{path}: unreadable run config ({exc})") from None
    return [(seed, run_dir)]


# --- writing a run directory -----------------------------------------------------------------

def write_configs(run_dir: str, config) -> None:
    """config.json at the top (the batch) and, for several seeds, each seed's own config
    (seed = s, num_seeds = 1: the single-seed run it equals). Each file is replaced atomically."""
    from experiments.progress import write_atomically
    from pearl_jax.config import to_json

    os.makedirs(run_dir, exist_ok=True)
    write_atomically(os.path.join(run_dir, CONFIG), to_json(config) + "\n")
    if config.num_seeds > 1:
        for seed in config.seeds:
            path = seed_dir(run_dir, seed, config.num_seeds)
            os.makedirs(path, exist_ok=True)
            write_atomically(os.path.join(path, CONFIG), to_json(config.replace(seed=seed, num_seeds=1)) + "\n")


class RunLock:
    """An exclusive lock on a run directory, so two processes never train into one.

    It is an advisory `flock` on RUN_DIR/.lock: the kernel releases it when the holder exits,
    however it dies (SIGKILL included), so a killed run never leaves it stuck. The file names
    the holder (host and pid) for the message a second process prints; an existing file is
    rewritten only by `claim`, once the run is accepted, so a rejected command changes nothing.
    """

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK)
        self._fd: int | None = None
        self._created = False
        self._claimed = False

    def acquire(self) -> None:
        """Take the lock or raise RunDirInUse (one line naming the holder)."""
        import fcntl

        self._created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _live_holder(os.pread(fd, 200, 0).decode(errors="replace").strip())
            os.close(fd)
            raise RunDirInUse(f"{os.path.dirname(self.path)} is in use by {holder}; wait for it to "
                              "finish or stop it (a killed process releases the lock)") from None
        self._fd = fd
        self._claimed = False
        if self._created:  # a new file is removed again if the command is rejected
            self.claim()

    def claim(self) -> None:
        """Name this process as the holder in the lock file (once; the lock must be held)."""
        import socket

        if self._fd is None or self._claimed:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._claimed = True

    def release(self, remove_if_created: bool = False) -> None:
        """Release; `remove_if_created` also removes the file when this process made it (a
        rejected command leaves the directory as it found it)."""
        if self._fd is None:
            return
        if remove_if_created and self._created:
            os.remove(self.path)
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def holds_only_a_free_lock(run_dir: str) -> bool:
    """True for a directory whose only entry is a lock file nobody holds: what a process killed
    between creating a new run directory and writing its config leaves behind. Checked without
    creating or changing anything."""
    import fcntl

    if os.listdir(run_dir) != [LOCK]:
        return False
    fd = os.open(os.path.join(run_dir, LOCK), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live run is starting there
    finally:
        os.close(fd)  # also releases the probe's own lock
    return True


def _live_holder(text: str) -> str:
    """The lock file's 'pid N on HOST', unless it names a process of this host that is gone (a
    holder still checking the run has not claimed the file yet: it names the one before)."""
    import socket

    m = re.fullmatch(r"pid (\d+) on (\S+)", text)
    if not m:
        return "another process"
    if m.group(2) == socket.gethostname():
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            return "another process"
        except OSError:
            pass  # alive, another user's
    return text


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory's lock."""
