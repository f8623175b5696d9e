"""Which devices hold which part of the train state: the sharding rule, in one place.

The devices form a mesh of three axes (config.mesh, parallel.Layout): `seeds` splits the leading
seed axis of a state of several seeds, `data` and `fsdp` together split every batch, and `fsdp` also
splits every large leaf of the state along one of its dimensions, so that each device holds 1/fsdp of
it. The step stays one program over the global batch: XLA gathers a leaf where the step needs it
whole and reduce-scatters its gradient (fully sharded data parallelism, as ZeRO-3).

The rule looks at a leaf's shape and where it lies, nothing else, so a moment of Adam or SGD (a
leaf of the optimizer state with its parameter's shape, under its parameter's path) gets its
parameter's spec, and a grown state gets the rule applied to its grown shapes.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

from mlres.growth.stacks import SCAN

SEEDS, DATA, FSDP = 'seeds', 'data', 'fsdp'
AXES = (SEEDS, DATA, FSDP)
# Leaves of fewer elements (per seed) stay whole on every device (config.mesh.min_shard_size): the
# bytes they would save are not worth a gather each.
MIN_SHARD_SIZE = 2 ** 14


def leaf_spec(shape, fsdp: int, *, min_size: int, seeds: int = 1, seeded: bool = False,
              scanned: bool = False) -> P:
  """The spec of one leaf of `shape`.

  seeded: its first axis is the seed axis of several seeds; it goes on `seeds` where that axis has
    more than one device.
  scanned: it lies in a scanned stack, whose next axis is the layer axis: never sharded, since
    growth changes its length (and each scan step reads one layer whole).
  Of its other axes, the largest that `fsdp` divides goes on `fsdp` (the first of equal ones), if
  the leaf has at least `min_size` elements per seed; a smaller leaf, or one that no axis fits,
  is replicated (`unsharded` names the latter).
  """
  spec = [None] * len(shape)
  if seeded and seeds > 1:
    spec[0] = SEEDS
  skip = int(seeded) + int(scanned)
  if fsdp > 1 and math.prod(shape[int(seeded):]) >= max(min_size, 1):
    fits = [a for a in range(skip, len(shape)) if shape[a] % fsdp == 0]
    if fits:
      spec[max(fits, key=lambda a: (shape[a], -a))] = FSDP
  return P(*spec)


def state_specs(state, sizes, *, min_size: int = MIN_SHARD_SIZE, num_seeds: int = 1):
  """The spec of every leaf of a train state (or any tree of arrays or their shapes: variables, an
  optimizer state, batch statistics), by `leaf_spec`. `sizes`: the mesh's axis sizes (`mesh.shape`;
  an axis it lacks counts as one device); with num_seeds > 1 every leaf has a leading seed axis."""
  fsdp, seeds = sizes.get(FSDP, 1), sizes.get(SEEDS, 1)

  def spec(path, leaf):
    return leaf_spec(tuple(leaf.shape), fsdp, min_size=min_size, seeds=seeds, seeded=num_seeds > 1,
                     scanned=_in_scanned_stack(path))
  return jax.tree_util.tree_map_with_path(spec, state)


def unsharded(state, specs, min_size: int, num_seeds: int = 1) -> list[str]:
  """The leaves of at least `min_size` elements per seed that no axis of theirs fits (fsdp divides
  none; scalars aside), and which every device therefore holds whole: worth a line in the run's
  output."""
  leaves = jax.tree_util.tree_leaves_with_path(state)
  flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda s: isinstance(s, P))
  skip = int(num_seeds > 1)
  return [jax.tree_util.keystr(path) for (path, leaf), spec in zip(leaves, flat_specs)
          if len(leaf.shape) > skip and math.prod(leaf.shape[skip:]) >= max(min_size, 1)
          and FSDP not in spec]


def _in_scanned_stack(path) -> bool:
  return any(getattr(k, 'key', getattr(k, 'name', None)) == SCAN for k in path)


def bytes_per_device(tree) -> dict:
  """Each device's bytes of the arrays of `tree` (its shards; a replicated leaf whole on each)."""
  held = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
  return held


def total_bytes(tree, replicated_only: bool = False) -> int:
  """The bytes of the arrays of `tree` counted once each (or only of those every device holds whole)."""
  return sum(leaf.nbytes for leaf in jax.tree.leaves(tree)
             if not replicated_only or leaf.sharding.is_fully_replicated)


def describe(state, min_size: int, num_seeds: int = 1) -> str:
  """A line on a laid-out train state: its size, the most any device holds of it, and the large
  leaves that fsdp divides no axis of (held whole on every device: a width to reconsider)."""
  specs = jax.tree.map(lambda leaf: leaf.sharding.spec, state)
  unfit = unsharded(state, specs, min_size, num_seeds)
  mib = lambda b: f'{b / 2 ** 20:,.2f} MiB'
  line = (f'train state {mib(total_bytes(state))}, at most {mib(max(bytes_per_device(state).values()))} '
          'on a device')
  if unfit:
    more = ', ...' if len(unfit) > 3 else ''
    line += (f'; fsdp divides no axis of {len(unfit)} leaves of {min_size:,} elements or more, held whole '
             f'on every device: {", ".join(unfit[:3])}{more}')
  return line
