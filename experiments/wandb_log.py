"""Optional Weights & Biases logging (`python -m experiments.run ... --wandb`).

Each seed of a run is one wandb run: the same scalars as its TensorBoard events, against env
steps (wandb's step is the seed's env-step count), with the seed's config attached, grouped
under the run directory's name. The wandb run id is kept in the seed directory (`wandb_id`), so
a resumed run continues the same wandb run. Rows that a resumed run logs again (those after the
checkpoint it resumes from) have env steps wandb has already seen, and wandb keeps the first;
a resumed run repeats them exactly, so nothing differs.

The project is `WANDB_PROJECT` (default pearl-jax); entity, mode and credentials come from
wandb's own settings and environment (`WANDB_MODE=offline` logs without network; `wandb sync`
uploads later). The local wandb files go to `WANDB_DIR`, else into the seed directory.
"""
from __future__ import annotations

import json
import os
import uuid

from experiments import progress

ID_FILE = "wandb_id"
DEFAULT_PROJECT = "pearl-jax"


def available() -> bool:
    """Whether the wandb package can be imported (the `wandb` extra)."""
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


def run_id(seed_dir: str) -> str:
    """The seed's wandb run id: the one stored in its directory, or a new one, stored."""
    path = os.path.join(seed_dir, ID_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            stored = f.read().strip()
        if stored:
            return stored
    new = uuid.uuid4().hex[:12]  # wandb's id alphabet: letters, digits, '-', '_'
    progress.write_atomically(path, new + "\n")
    return new


def start(run_dir: str, seed_dir: str, seed_config) -> "wandb.sdk.wandb_run.Run":  # noqa: F821
    """The wandb run of one seed, created or resumed (`seed_config`: the seed's own config)."""
    import wandb

    from pearl_jax.config import to_json

    group = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    single = os.path.samefile(run_dir, seed_dir)
    return wandb.init(
        project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, group=group,
        name=group if single else f"{group}/{os.path.basename(os.path.normpath(seed_dir))}",
        id=run_id(seed_dir), resume="allow", config=json.loads(to_json(seed_config)),
        dir=os.environ.get("WANDB_DIR") or seed_dir, reinit="create_new",
    )


class MirroredLog:
    """A seed's ProgressLog whose TensorBoard scalars also go to that seed's wandb run."""

    def __init__(self, log: progress.ProgressLog, run_dir: str, seed_dir: str, seed_config):
        self.log = log
        self.run = start(run_dir, seed_dir, seed_config)

    def write(self, row: dict, online: dict) -> None:
        self.log.write(row, online)
        self.run.log(progress.scalars(row), step=int(row[progress.ENV_STEPS]))

    def close(self) -> None:
        try:
            self.log.close()
        finally:
            self.run.finish()
