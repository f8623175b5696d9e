"""Orbax checkpoints numbered by train step, each with the train state and JSON metadata.

Restoring is strict: the metadata names the architecture (stage sizes, widths, classes, h), the
target is built for exactly that architecture, and the stored tree must match it leaf for leaf,
so a checkpoint of one depth can never load partially into another. A fingerprint of the state,
written into the metadata at save time, is checked after restoring: orbax restores a data file
with flipped bytes without complaint, and garbage must never become a run's starting point.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from mlres import parallel, report


class CheckpointError(RuntimeError):
  """A checkpoint that is damaged or does not hold what its metadata says."""


class Checkpointer:
  """Keeps every step in `keep_steps` (the cycle ends) and the two most recent others.

  A save that a kill interrupts leaves a temporary folder, which orbax never lists as a step; it
  is removed here before orbax lists the steps (orbax's own clean-up runs in the background and
  races its listing).
  """

  def __init__(self, directory: str, keep_steps: Sequence[int] = ()):
    self.directory = os.path.abspath(directory)
    if parallel.is_main_process() and os.path.isdir(self.directory):
      for name in os.listdir(self.directory):
        if '.orbax-checkpoint-tmp' in name:
          shutil.rmtree(os.path.join(self.directory, name))
    multihost_utils.sync_global_devices('mlres: unfinished checkpoints removed')
    self._writing_step = None
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(2), checkpoint_managers.CustomSteps(list(keep_steps))])
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=True,
            # Its folders made before save() returns: made in the background, a failure there left
            # orbax's writers waiting minutes for them, and the process with them.
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False)))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, meta: dict[str, Any]) -> None:
    """Starts writing in the background; a write that failed is raised here or by `wait`."""
    meta = {**meta, 'step': step, 'fingerprint': fingerprint(state)}
    self._writing_step = step  # orbax lists a step only once written: `wait` names it from here
    with self._writing(step):
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def meta(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state_for: Callable[[dict], Any]):
    """Returns (state, meta); `abstract_state_for(meta)` gives the target for that architecture."""
    try:
      meta = self.meta(step)
      target = abstract_state_for(meta)
      stored = self._manager.item_metadata(step)['state']
    except Exception as e:  # unreadable metadata: a file is missing or damaged
      raise CheckpointError(f'the checkpoint of step {step} in {self.directory} cannot be read '
                            f'({report.error_line(e)})') from e
    _check_same_tree(stored, target, step)
    try:
      state = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))['state']
    except Exception as e:
      raise CheckpointError(f'the checkpoint of step {step} in {self.directory} cannot be restored '
                            f'({report.error_line(e)})') from e
    if fingerprint(state) != meta.get('fingerprint'):
      raise CheckpointError(f'the checkpoint of step {step} in {self.directory} is damaged: its '
                            'arrays differ from what was saved')
    return state, meta

  def restore_latest(self, abstract_state_for: Callable[[dict], Any]):
    """The newest intact checkpoint as (state, meta), or None if there is none at all.

    A damaged one is moved to `<directory>.damaged/` (never deleted) with a warning, and the one
    before it is tried; if every checkpoint is damaged the run stops rather than start over.
    """
    steps = self.steps()
    for step in reversed(steps):
      try:
        return self.restore(step, abstract_state_for)
      except CheckpointError as e:
        moved = os.path.join(self.directory + '.damaged', str(step))
        if parallel.is_main_process():
          if os.path.exists(moved):
            shutil.rmtree(moved)
          os.makedirs(os.path.dirname(moved), exist_ok=True)
          os.replace(os.path.join(self.directory, str(step)), moved)
        multihost_utils.sync_global_devices(f'mlres: moved away damaged step {step}')
        self._manager.reload()
        print(f'warning: {e}; moved it to {moved} and trying the one before', file=sys.stderr,
              flush=True)
    if steps:
      raise CheckpointError(f'no intact checkpoint in {self.directory}: all {len(steps)} were damaged '
                            f'and moved to {self.directory}.damaged; restore them or use a new workdir')
    return None

  def step_of_epoch(self, epoch: int) -> int:
    """The checkpoint written at the end of `epoch`."""
    ends = {m['epoch']: s for s, m in ((s, self.meta(s)) for s in self.steps()) if 'partial' not in m}
    if epoch not in ends:
      raise CheckpointError(f'{self.directory} has no checkpoint of the end of epoch {epoch}; '
                            f'it has epochs {sorted(ends) or "none"}')
    return ends[epoch]

  def wait(self) -> None:
    with self._writing(self._writing_step):
      self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _writing(self, step):
    """A failed write (a full disk, the folder moved away) as one CheckpointError; the checkpoints
    before it stay, and a half-written one is a temporary folder that is never restored."""
    try:
      yield
    except Exception as e:
      raise CheckpointError(f'writing a checkpoint (step {step}) in {self.directory} failed '
                            f'({report.error_line(e)})') from e

  def close(self) -> None:
    self._manager.close()


def fingerprint(state) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes. A leaf split over the devices of several
  processes is gathered from all of them first (every process calls this, at save and restore)."""
  digest = hashlib.sha256()
  whole = lambda x: (multihost_utils.process_allgather(x, tiled=True)
                     if isinstance(x, jax.Array) and not x.is_fully_addressable else x)
  for path, leaf in _flat(jax.device_get(jax.tree.map(whole, state))).items():
    leaf = np.asarray(leaf)
    digest.update(f'{path}{leaf.dtype}{leaf.shape}'.encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _check_same_tree(stored, target, step: int) -> None:
  """Every leaf path of the target is stored with the same shape, and nothing else is stored."""
  have = {k: tuple(v.shape) for k, v in _flat(stored).items()}
  want = {k: tuple(v.shape) for k, v in _flat(target).items()}
  if have != want:
    missing = sorted(set(want) - set(have))[:3]
    extra = sorted(set(have) - set(want))[:3]
    wrong = sorted(k for k in set(have) & set(want) if have[k] != want[k])[:3]
    raise CheckpointError(
        f'the checkpoint of step {step} does not match the architecture its metadata names: '
        f'missing {missing}, unexpected {extra}, other shapes {wrong}')


def _flat(tree) -> dict[str, Any]:
  """Leaves by path, with tuples stored as lists keyed like tuples."""
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {jax.tree_util.keystr(tuple(_key(k) for k in path)): leaf for path, leaf in flat}


def _key(k):
  if isinstance(k, jax.tree_util.SequenceKey):
    return jax.tree_util.DictKey(k.idx)
  if isinstance(k, jax.tree_util.GetAttrKey):
    return jax.tree_util.DictKey(k.name)
  return k
