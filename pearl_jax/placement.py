"""Where a batch of seeds runs: a (seed, task) device mesh, seed padding, and multi-host start.

Placement never changes what is computed, only where: the trainer's jitted functions are the
same on one CPU and on a pod, and each seed's numbers agree up to float32 reduction order.

* The `seed` mesh axis spreads independent runs over devices (each device holds whole seeds).
  N seeds on a seed axis of size D that does not divide N are padded up to a multiple of D with
  *phantom* copies of the first seed, computed and never reported.
* The `task` mesh axis splits each seed's gradient step over devices by its meta-batch (data
  parallel: every device takes meta_batch / K tasks and the gradients are summed across them by
  the compiler). Collection and evaluation stay whole on every device of the group.
* Several processes (hosts) form one mesh over all their devices after
  `jax.distributed.initialize`; every process runs the same program on its share.
"""
from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["Mesh", "NamedSharding", "PartitionSpec"]  # re-exported for the trainer
SEED_AXIS = "seed"
TASK_AXIS = "task"


class PlacementError(ValueError):
    """A device layout that cannot hold the run; its str is one line saying what is allowed."""


def make_mesh(task_shards: int = 1, devices=None) -> Mesh:
    """A (seed, task) mesh over `devices` (default: every device of every process).

    Devices are listed process by process, so a task group of K consecutive devices stays on
    one host whenever K divides the devices per host.
    """
    devices = list(jax.devices() if devices is None else devices)
    if task_shards < 1 or len(devices) % task_shards:
        raise PlacementError(f"--task_shards={task_shards}: must divide the {len(devices)} visible "
                             f"device(s); allowed: {', '.join(str(k) for k in divisors(len(devices)))}")
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // task_shards, task_shards)
    return Mesh(grid, (SEED_AXIS, TASK_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def seed_slots(num_seeds: int, mesh: Mesh | None) -> int:
    """Seeds actually computed: num_seeds rounded up to a multiple of the seed axis."""
    d = 1 if mesh is None else mesh.shape[SEED_AXIS]
    return math.ceil(num_seeds / d) * d


def seed_values(first_seed: int, num_seeds: int, slots: int) -> np.ndarray:
    """uint32 seeds of every slot: first_seed .. first_seed + num_seeds - 1, then phantom copies
    of the first seed up to `slots`."""
    real = np.arange(first_seed, first_seed + num_seeds, dtype=np.uint64)
    return np.concatenate([real, np.full(slots - num_seeds, first_seed, np.uint64)]).astype(np.uint32)


def batch_sharding(mesh: Mesh | None):
    """Sharding of any array whose leading axis is the seed slot (None: the default device)."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def global_array(values: np.ndarray, mesh: Mesh | None) -> jax.Array:
    """A host array (identical on every process) as one array laid out over the seed axis."""
    sharding = batch_sharding(mesh)
    if sharding is None:
        return jax.numpy.asarray(values)
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def task_constraint(mesh: Mesh | None):
    """A function that lays a meta-batch array (T, ...) out over the task axis, or None when
    there is nothing to split. Inside `vmap(spmd_axis_name=SEED_AXIS)` the seed axis joins it."""
    if mesh is None or mesh.shape[TASK_AXIS] == 1:
        return None
    sharding = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    return lambda tree: jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Join a multi-process run when told to (the three arguments) or when JAX detects a cluster
    (SLURM, cloud TPU, ...). Returns whether this program is one of several processes.

    On CPU the processes exchange data through gloo collectives.
    """
    explicit = coordinator is not None
    if not explicit and not cluster_detected():
        return False
    # CPU devices of different processes talk through gloo; other backends ignore this option
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    return jax.process_count() > 1


def cluster_detected() -> bool:
    """A SLURM job of several tasks, or a multi-host cloud TPU slice."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in os.environ:
        return True
    return "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
