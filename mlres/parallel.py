"""The devices of a run as a mesh, on one host or many, with JAX's own runtime.

Three axes (config.mesh): `seeds`, `data` and `fsdp`. A batch is split along `data` and `fsdp`
together; the train state is laid out by mlres.sharding's rule: replicated (the default mesh, every
device on `data`), split among groups of devices by seed (`seeds`), and each large leaf split
along one dimension (`fsdp`). The step is one jitted program over the global batch, so XLA inserts
the all-reduces (and with fsdp the gathers) and batch norm sees the statistics of the whole batch,
exactly as on one device.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mlres import sharding
from mlres.config import ConfigError, mesh_sizes

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
  """The mesh, and the shardings a run uses on it."""
  mesh: Mesh
  min_shard_size: int = sharding.MIN_SHARD_SIZE

  @classmethod
  def all_devices(cls) -> 'Layout':
    return cls.over(jax.devices())

  @classmethod
  def of(cls, config) -> 'Layout':
    """Every device, as config.mesh lays them out."""
    sizes = mesh_sizes(config.mesh, jax.device_count())
    return cls.over(jax.devices(), sizes['seeds'], sizes['fsdp'], config.mesh.min_shard_size)

  @classmethod
  def over(cls, devices, seeds: int = 1, fsdp: int = 1,
           min_shard_size: int = sharding.MIN_SHARD_SIZE) -> 'Layout':
    """`devices` as seeds x data x fsdp, data taking the rest; neighbours in the list share an
    fsdp group (on a GPU host, the devices with the fastest links between them)."""
    grid = np.asarray(devices).reshape(seeds, -1, fsdp)
    return cls(Mesh(grid, sharding.AXES), min_shard_size)

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  @property
  def sizes(self) -> dict[str, int]:
    return dict(self.mesh.shape)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    return NamedSharding(self.mesh, P((sharding.DATA, sharding.FSDP)))

  @property
  def seeds_axis(self) -> str | None:
    """The mesh axis a vmap over seeds maps to (its spmd_axis_name): `seeds` where it has devices."""
    return sharding.SEEDS if self.sizes[sharding.SEEDS] > 1 else None

  def shardings(self, state, num_seeds: int = 1):
    """Each leaf's NamedSharding by the rule (mlres.sharding.state_specs) for a train state (or its
    shapes) of `num_seeds` seeds."""
    specs = sharding.state_specs(state, self.sizes, min_size=self.min_shard_size, num_seeds=num_seeds)
    return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), specs,
                        is_leaf=lambda x: isinstance(x, P))

  def replicate(self, tree):
    """Host or device arrays to copies on every device (each process passes the same values)."""
    return jax.device_put(tree, self.replicated)

  def abstract(self, tree, num_seeds: int = 1):
    """Shapes and dtypes with the shardings of this layout: a restore target for any device count."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        tree, self.shardings(tree, num_seeds))

  def split_batch(self, x):
    """Inside a jitted step: lay a global batch out along the devices."""
    return jax.lax.with_sharding_constraint(x, self.batch)


def is_main_process() -> bool:
  """Process 0 writes metrics, summaries and prints; orbax coordinates checkpoints itself."""
  return jax.process_index() == 0
