"""Published PEARL curves and baseline returns shipped with the package (see README.md here).

Read through importlib.resources, so an installed pearl-jax finds them without the repository.
A task without data gives None (or an empty dict), never an error: point robots have no
published curves and hopper-rand-params has only RL2.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np

# Curve sources: the name used in code and legends -> the file prefix.
SOURCES = {
    "official": "oyster_paper_official",  # the paper authors' 5 runs per task (Figure 3)
    "released": "lujiayou_oyster2020",  # one run of the released reference code
    "pytorch": "x35f_meta_rl",  # one run of a PyTorch reimplementation
}
BASELINES = {"promp": "ProMP", "maml": "MAML", "rl2": "RL2"}


@dataclass(frozen=True)
class ReferenceCurve:
    """Return against env steps: mean and std across `n_runs` runs (std is nan for one run)."""

    label: str
    env_steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_runs: int


@dataclass(frozen=True)
class BaselineFinal:
    """A baseline's last logged return: what it ends at after `env_steps` steps of training."""

    label: str
    env_steps: float
    mean: float
    std: float
    n_runs: int


def _data_file(*parts: str):
    return resources.files(__name__).joinpath(*parts)


def _read(*parts: str) -> ReferenceCurve | None:
    path = _data_file(*parts)
    if not path.is_file():
        return None
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    col = lambda name: np.array([float(r[name]) if r[name] else np.nan for r in rows])
    return ReferenceCurve(
        label=parts[-1].removesuffix(".csv"),
        env_steps=col("env_steps"), mean=col("return_mean"), std=col("return_std"),
        n_runs=max(int(r["n_seeds"]) for r in rows),
    )


def curve(task: str, source: str = "official") -> ReferenceCurve | None:
    """The `source` curve of `task` (a key of SOURCES), or None when none was published."""
    if source not in SOURCES:
        raise ValueError(f"reference source {source!r}: unknown; valid: {', '.join(SOURCES)}")
    return _read(f"{SOURCES[source]}__{task}.csv")


def baseline_finals(task: str) -> dict[str, BaselineFinal]:
    """Final return of each baseline that was run on `task`, keyed by its display name."""
    out = {}
    for prefix, name in BASELINES.items():
        c = _read("baselines", f"{prefix}__{task}.csv")
        if c is not None:
            out[name] = BaselineFinal(name, float(c.env_steps[-1]), float(c.mean[-1]),
                                      float(c.std[-1]), c.n_runs)
    return out


def readme() -> str:
    """Where the data come from, as shipped."""
    return _data_file("README.md").read_text()
