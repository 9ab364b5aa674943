"""Meta-RL task families, looked up by name.

    env = envs.make("cheetah-vel")
    env = envs.make("ant-dir", forward_backward=False)

Modules are imported lazily so that asking for the point robot never loads MuJoCo.
"""
from __future__ import annotations

import importlib
import inspect

from envs.base import EnvState, MetaEnv, task_at

# name -> (module, class). The class owns the family's facts (horizon, task counts through its
# constructor defaults, sparse reward), so nothing here or in a config repeats them.
_REGISTRY: dict[str, tuple[str, str]] = {
    "point-robot": ("envs.point_robot", "PointRobot"),
    "sparse-point-robot": ("envs.point_robot", "SparsePointRobot"),
    "cheetah-vel": ("envs.half_cheetah", "HalfCheetahVel"),
    "cheetah-dir": ("envs.half_cheetah", "HalfCheetahDir"),
    "ant-dir": ("envs.ant", "AntDir"),
    "ant-goal": ("envs.ant", "AntGoal"),
    "humanoid-dir": ("envs.humanoid", "HumanoidDir"),
    "walker-rand-params": ("envs.rand_params", "WalkerRandParams"),
    "hopper-rand-params": ("envs.rand_params", "HopperRandParams"),
}


def names() -> list[str]:
    """Every registered task family, in a stable order."""
    return list(_REGISTRY)


def env_class(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(names())}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def allowed_overrides(name: str) -> list[str]:
    """Constructor arguments a user may override for this family."""
    params = inspect.signature(env_class(name).__init__).parameters
    return [p for p in params if p != "self"]


def make(name: str, **overrides) -> MetaEnv:
    """Build a task family by name; unknown names or overrides raise a ValueError naming them."""
    cls = env_class(name)
    allowed = allowed_overrides(name)
    bad = [k for k in overrides if k not in allowed]
    if bad:
        raise ValueError(
            f"unknown override(s) {', '.join(map(repr, bad))} for task {name!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(**overrides)


__all__ = ["EnvState", "MetaEnv", "task_at", "make", "names", "allowed_overrides"]
