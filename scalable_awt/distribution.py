"""The mesh and the shardings: data parallelism with `jit` and `NamedSharding`.

One module owns the mesh. Everything uses a 1-D mesh over all devices (of all
processes) with the axis "data": batches are sharded along it, the training
state is replicated. `jit` with these shardings computes exactly the
global-batch step that one device would (every loss is a mean over the
batch; batch-norm statistics are global under `jit`), so no `pmean` is needed
and the gradient trap of `shard_map` does not arise.

Multi-host: call `initialize_distributed()` first (main does, with
`--distributed` or `SCALABLE_AWT_DISTRIBUTED=1`); it wraps
`jax.distributed.initialize`, which finds SLURM, Open MPI, TPU and Kubernetes
settings itself, or takes an explicit coordinator (`--coordinator_address`,
`--num_processes`, `--process_id`, or the env variables `JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize` with explicit arguments or auto-detection."""
  coordinator_address = coordinator_address or os.environ.get(
      "JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  kwargs = {}
  if coordinator_address:
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh ("data",) over `devices` (default: all devices, all hosts).

  Axis type Auto, so `jit` partitions by propagation without `set_mesh`.
  """
  devices = list(jax.devices() if devices is None else devices)
  try:
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
  except (AttributeError, TypeError):  # Older JAX without axis types.
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def local_mesh() -> Mesh:
  """A mesh over this process's devices only (for per-host evaluation)."""
  return make_mesh(jax.local_devices())


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size"
                     ) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f"{what}={batch_size} must be divisible by the {n} devices of the mesh "
        f"(data parallelism splits each batch evenly); use e.g. "
        f"{max(n, batch_size - batch_size % n)}.")


def replicate(tree, mesh: Mesh):
  """Puts a host pytree on every device of `mesh` (same value everywhere)."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, x.shape)
  return jax.tree.map(put, tree)


def to_host(tree):
  """A replicated (possibly multi-host) pytree as numpy arrays on this host."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(get, tree)


def data_parallel(fn, mesh: Mesh, *, state_argnums=(0,), batch_argnums=(1,),
                  num_args: int = 3, donate_state: bool = False):
  """`jit(fn)` with the state replicated and the batch sharded over "data".

  Args not in `state_argnums`/`batch_argnums` (keys, scalars) are replicated.
  The outputs (new state, metrics) are replicated.
  """
  rep, shard = replicated(mesh), batch_sharded(mesh)
  in_shardings = tuple(shard if i in batch_argnums else rep
                       for i in range(num_args))
  return jax.jit(fn, in_shardings=in_shardings, out_shardings=rep,
                 donate_argnums=state_argnums if donate_state else ())


def shard_inputs_fn(apply_fn, mesh: Mesh):
  """Wraps `apply_fn(params, x)` so that `x` is sharded over "data" in jit.

  Used for evaluation: any jitted attack built on the wrapped function then
  runs data-parallel by sharding propagation. Batches whose size does not
  divide the device count are left unconstrained.
  """
  n = mesh.devices.size
  shard = batch_sharded(mesh)

  def wrapped(params, x):
    if n > 1 and x.shape[0] % n == 0:
      x = jax.lax.with_sharding_constraint(x, shard)
    return apply_fn(params, x)
  return wrapped
