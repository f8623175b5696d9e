"""Orbax checkpoints, one per epoch number, each with the train state and JSON metadata.

Restoring is strict: the metadata names the architecture (stage sizes, widths, classes, h), the
target is built for exactly that architecture, and the stored tree must match it leaf for leaf,
so a checkpoint of one depth can never load partially into another.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class CheckpointError(RuntimeError):
  """A checkpoint that does not hold what its metadata says."""


class Checkpointer:
  """Keeps every epoch in `keep_epochs` (the cycle ends) and the two most recent others."""

  def __init__(self, directory: str, keep_epochs: Sequence[int] = ()):
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(2), checkpoint_managers.CustomSteps(list(keep_epochs))])
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True))

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state, meta: dict[str, Any]) -> None:
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def meta(self, epoch: int) -> dict[str, Any]:
    return self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, epoch: int, abstract_state_for: Callable[[dict], Any]):
    """Returns (state, meta); `abstract_state_for(meta)` gives the target for that architecture."""
    meta = self.meta(epoch)
    target = abstract_state_for(meta)
    stored = self._manager.item_metadata(epoch)['state']
    _check_same_tree(stored, target, epoch)
    state = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']
    return state, meta

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _check_same_tree(stored, target, epoch: int) -> None:
  """Every leaf path of the target is stored with the same shape, and nothing else is stored."""
  def shapes(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
    return {jax.tree_util.keystr(tuple(_key(k) for k in path)): tuple(leaf.shape) for path, leaf in flat}
  have, want = shapes(stored), shapes(target)
  if have != want:
    missing = sorted(set(want) - set(have))[:3]
    extra = sorted(set(have) - set(want))[:3]
    wrong = sorted(k for k in set(have) & set(want) if have[k] != want[k])[:3]
    raise CheckpointError(
        f'checkpoint of epoch {epoch} does not match the architecture its metadata names: '
        f'missing {missing}, unexpected {extra}, other shapes {wrong}')


def _key(k):
  """Path entries as plain keys, so tuples stored as lists compare equal to tuples."""
  if isinstance(k, jax.tree_util.SequenceKey):
    return jax.tree_util.DictKey(k.idx)
  if isinstance(k, jax.tree_util.GetAttrKey):
    return jax.tree_util.DictKey(k.name)
  return k
