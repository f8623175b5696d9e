"""Which examples each process reads, in which order, and where a run stands in that order: pure
functions of the seed, the epoch (or step), the process index and count, so that a resumed run, or
one on another number of hosts, reads exactly the global batches it would have.

- An epoch is a permutation of the n examples, cut into steps_per_epoch = n // batch_size global
  batches; the last n % batch_size (different ones each epoch) are left out, as the device-resident
  path does (mlres.tasks). Process p of P reads rows [p * b, (p + 1) * b) of every global batch,
  b = batch_size / P: the rows that `jax.make_array_from_process_local_data` places on its devices
  when the batch axis is sharded over the devices in process order. The processes' shards are
  disjoint and together the epoch's batches, and the global batches do not depend on P (`shard`).
- A language model's train windows start at offsets drawn for each step (`token_offsets`): a
  function of the step alone, so resuming at a step is resuming to the batch.
- `Position` (epoch, batch) is the next batch to read: saved with a checkpoint, restored, and the
  batches from it on are the ones an uninterrupted run reads (`batches`).

The randomness is counter-based and written here (SplitMix64's finalizer over 64-bit counters,
in numpy's wrapping uint64 arithmetic), not numpy's Generator, whose streams NumPy does not promise
to keep across versions or machines: the order of a checkpointed run does not change with numpy.
A process computes only its own rows of a step's offsets; every process computes the whole
permutation of an epoch (an argsort of n 64-bit keys: for ImageNet's 1.28M, a fraction of a second).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from mlres.data.dataset import DataError

_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# What a key is for: each use draws from its own streams.
ORDER, OFFSETS, AUGMENT = 1, 2, 3


def _mix(z: np.ndarray) -> np.ndarray:
  """SplitMix64's finalizer on uint64 arrays (wrapping)."""
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def key(*words: int) -> int:
  """A 64-bit key from integers (seed, purpose, epoch, ...): each folded in and mixed."""
  k = np.zeros(1, np.uint64)
  for word in words:
    k = _mix((k + _GOLDEN) ^ np.uint64(int(word) & _MASK))
  return int(k[0])


def stream(k: int, count: int, start: int = 0) -> np.ndarray:
  """Values start .. start + count - 1 of the uint64 stream of key `k` (any slice computed alone)."""
  counters = np.arange(start, start + count, dtype=np.uint64) + np.uint64(1)
  return _mix(np.uint64(k) + counters * _GOLDEN)


def uniforms(k: int, count: int) -> np.ndarray:
  """`count` float64 in [0, 1) from the stream of key `k` (53 bits each)."""
  return (stream(k, count) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def permutation(n: int, epoch: int, seed: int) -> np.ndarray:
  """The epoch's order of n examples: int64 indices, a permutation of 0 .. n - 1."""
  return np.argsort(stream(key(seed, ORDER, epoch), n), kind='stable').astype(np.int64)


def steps_per_epoch(n: int, batch_size: int) -> int:
  return n // batch_size


def local_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that process `process_index` of `process_count` reads."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process index {process_index} is not one of 0 .. {process_count - 1}')
  if batch_size % process_count:
    raise ValueError(f'a global batch of {batch_size} does not divide among {process_count} processes')
  rows = batch_size // process_count
  return slice(process_index * rows, (process_index + 1) * rows)


def shard(n: int, batch_size: int, epoch: int, seed: int, process_index: int = 0,
          process_count: int = 1) -> np.ndarray:
  """The example indices this process reads in `epoch`: (steps_per_epoch, batch_size //
  process_count), row s its part of global batch s. Disjoint across processes; the processes' rows
  side by side, in process order, are the global batch of one process."""
  steps = steps_per_epoch(n, batch_size)
  order = permutation(n, epoch, seed)[:steps * batch_size].reshape(steps, batch_size)
  return order[:, local_rows(batch_size, process_index, process_count)]


def token_offsets(seed: int, step: int, n_tokens: int, context: int, batch_size: int,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """This process's rows of step `step`'s window starts, int64 in [0, n_tokens - context - 1], so that
  every window of context + 1 tokens lies inside the split (the modulo's bias, under n_tokens / 2**64,
  is nil)."""
  if n_tokens < context + 1:
    raise ValueError(f'windows of {context + 1} tokens do not fit a split of {n_tokens}')
  rows = local_rows(batch_size, process_index, process_count)
  values = stream(key(seed, OFFSETS, step), rows.stop - rows.start, start=rows.start)
  return (values % np.uint64(n_tokens - context)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Position:
  """The next batch to read: batch `batch` (0-based) of epoch `epoch`."""
  epoch: int = 0
  batch: int = 0

  def after(self, steps: int) -> Position:
    """The position after reading this one's batch, in epochs of `steps` batches."""
    return Position(self.epoch, self.batch + 1) if self.batch + 1 < steps else Position(self.epoch + 1, 0)

  def state(self, n: int, batch_size: int, seed: int) -> dict:
    """JSON-ready, for a checkpoint: the position and what it is a position in."""
    return dict(epoch=self.epoch, batch=self.batch, examples=n, batch_size=batch_size, seed=seed)

  @classmethod
  def restore(cls, state: dict, n: int, batch_size: int, seed: int) -> Position:
    """The position that `state` saved, which must be of the same data order: the same number of
    examples, global batch size and seed (the process count may differ: the global batches do not
    depend on it)."""
    saved = {field: state.get(field) for field in ('examples', 'batch_size', 'seed')}
    if saved != dict(examples=n, batch_size=batch_size, seed=seed):
      raise DataError(f'the saved data position is in an order of {saved["examples"]} examples in batches '
                      f'of {saved["batch_size"]} from seed {saved["seed"]}, not of this run\'s {n}, '
                      f'{batch_size} and {seed}: it cannot resume to the batch')
    position = cls(int(state['epoch']), int(state['batch']))
    if position.epoch < 0 or not 0 <= position.batch < max(steps_per_epoch(n, batch_size), 1):
      raise DataError(f'the saved data position {state} is outside epochs of '
                      f'{steps_per_epoch(n, batch_size)} batches')
    return position


def position(step: int, steps: int) -> Position:
  """The position of global step `step` (0-based) in epochs of `steps` batches."""
  return Position(*divmod(step, steps))


def batches(n: int, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1,
            start: Position = Position()) -> Iterator[tuple[Position, np.ndarray]]:
  """(position, this process's indices) of every batch from `start` on, endlessly; an epoch's
  permutation is computed when the epoch starts."""
  steps = steps_per_epoch(n, batch_size)
  if steps < 1:
    raise ValueError(f'a global batch of {batch_size} is larger than the {n} examples')
  at = start
  while True:
    rows = shard(n, batch_size, at.epoch, seed, process_index, process_count)
    while at.batch < steps:
      yield at, rows[at.batch]
      at = Position(at.epoch, at.batch + 1)
    at = Position(at.epoch + 1, 0)
