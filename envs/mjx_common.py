"""What every MuJoCo task family shares: loading a gym model, solver settings, stepping in MJX.

Models come from the installed `gymnasium` package (gym semantics: frame skip, timestep, gear,
control ranges); changes are made in code on the loaded `MjModel`. Under `vmap` MJX always runs
the constraint solver's full iteration count, so the iteration counts set here decide
throughput; they are explicit arguments so that each family states (and tests) its choice.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco

# mjx announces on stdout that the optional warp backend is missing; the benchmarks print their
# JSON on stdout, so the notice goes to stderr. Env modules import mjx from here.
with contextlib.redirect_stdout(sys.stderr):
    from mujoco import mjx


def gym_asset_path(xml_name: str) -> str:
    import gymnasium

    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", xml_name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"gymnasium ships no MuJoCo model {xml_name!r} (looked at {path})")
    return path


@dataclass(frozen=True)
class SolverSettings:
    """Constraint-solver options written into the model before it is put on device.

    `iterations` / `ls_iterations` None keep the model's own values.
    """

    iterations: int | None = None
    ls_iterations: int | None = None
    solver: str | None = None  # "CG" or "Newton"; MJX has no PGS

    def apply(self, mj_model: mujoco.MjModel) -> mujoco.MjModel:
        if self.iterations is not None:
            mj_model.opt.iterations = int(self.iterations)
        if self.ls_iterations is not None:
            mj_model.opt.ls_iterations = int(self.ls_iterations)
        if self.solver is not None:
            names = {"CG": mujoco.mjtSolver.mjSOL_CG, "NEWTON": mujoco.mjtSolver.mjSOL_NEWTON}
            key = self.solver.upper()
            if key not in names:
                raise ValueError(f"solver {self.solver!r} is not available in MJX; allowed: CG, Newton")
            mj_model.opt.solver = names[key]
        return mj_model


def load_gym_model(xml_name: str, settings: SolverSettings = SolverSettings()) -> mujoco.MjModel:
    mj_model = mujoco.MjModel.from_xml_path(gym_asset_path(xml_name))
    return settings.apply(mj_model)


def scale_action(action: jax.Array, ctrlrange: jax.Array) -> jax.Array:
    """Map [-1, 1]^A linearly onto the actuators' control range, then clip (the reference wrapper)."""
    low, high = ctrlrange[:, 0], ctrlrange[:, 1]
    ctrl = low + (jnp.asarray(action) + 1.0) * 0.5 * (high - low)
    return jnp.clip(ctrl, low, high)


def physics_step(model: mjx.Model, data: mjx.Data, ctrl: jax.Array, frame_skip: int) -> mjx.Data:
    """Hold `ctrl` for `frame_skip` physics steps."""
    data = data.replace(ctrl=ctrl)
    return jax.lax.fori_loop(0, frame_skip, lambda _, d: mjx.step(model, d), data)


def reset_data(model: mjx.Model, qpos: jax.Array, qvel: jax.Array) -> mjx.Data:
    """A fresh Data at (qpos, qvel) with derived quantities (positions, COMs) computed."""
    data = mjx.make_data(model).replace(qpos=qpos, qvel=qvel)
    return mjx.forward(model, data)
