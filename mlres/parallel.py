"""Data parallelism over every visible device, on one host or many, with JAX's own runtime.

One mesh axis, 'data': a batch is split along it, everything else (parameters, optimizer state,
batch-norm statistics, the dataset kept on the devices) is replicated. The step is one jitted
program over the global batch, so XLA inserts the all-reduces and batch norm sees the statistics
of the whole batch, exactly as on one device.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mlres.config import ConfigError

# Variables a plain launcher sets for every process (JAX reads the first itself).
ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


def initialize(asked: bool) -> None:
  """jax.distributed.initialize() if the config asks or the environment names a multi-process job.

  The environment asks with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or as
  a SLURM job step of several tasks (which JAX detects by itself). Must run before any JAX array.
  """
  if os.environ.get('JAX_NUM_PROCESSES'):
    missing = [v for v in ENV if not os.environ.get(v)]
    if missing:
      raise ConfigError(f'JAX_NUM_PROCESSES is set but {", ".join(missing)} is not; a multi-process '
                       'launch sets all three for every process')
    jax.distributed.initialize(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                               num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                               process_id=int(os.environ['JAX_PROCESS_ID']))
  elif asked or int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    jax.distributed.initialize()


@dataclasses.dataclass(frozen=True)
class Layout:
  """The mesh and the two shardings a run uses."""
  mesh: Mesh

  @classmethod
  def all_devices(cls) -> 'Layout':
    return cls.over(jax.devices())

  @classmethod
  def over(cls, devices) -> 'Layout':
    return cls(Mesh(np.asarray(devices), ('data',)))

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    return NamedSharding(self.mesh, P('data'))

  def replicate(self, tree):
    """Host or device arrays to copies on every device (each process passes the same values)."""
    return jax.device_put(tree, self.replicated)

  def abstract(self, tree):
    """Shapes and dtypes with the replicated sharding: a restore target for any device count."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated),
                        tree)

  def split_batch(self, x):
    """Inside a jitted step: lay a global batch out along the devices."""
    return jax.lax.with_sharding_constraint(x, self.batch)


def is_main_process() -> bool:
  """Process 0 writes metrics, summaries and prints; orbax coordinates checkpoints itself."""
  return jax.process_index() == 0
