"""Where each train step's batch comes from: the devices' own copy of the data, or the host (config.input).

- `DeviceInput`: the whole training split lies on every device and each step gathers its batch there
  from the epoch's index matrix (`Task.epoch_batches`, drawn on the device). Nothing crosses from
  the host while training: the fastest path where the data fit, and their default.
- `HostInput`: the split stays where it is (a memory-mapped token file, host arrays) and each
  process reads only its own rows of every global batch, in the order of mlres.data.shards (a pure
  function of the seed, epoch and step), into one jax.Array per chunk of steps
  (`jax.make_array_from_process_local_data`). A thread reads the next chunks while the devices
  step. Since the order is a function of the step, a run resumed at a step reads exactly the
  batches it would have; each checkpoint holds that position (`position`), checked on resume.

Both give the compiled chunk (mlres.train.make_train_chunk) one pytree of inputs per call, and a
`fetch` that takes step i's raw batch out of it inside the program.
"""
from __future__ import annotations

import functools
import queue
import threading
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mlres import sharding
from mlres.config import ConfigError
from mlres.data import DataError, shards, text

# config.input='auto' keeps a training split of at most this many bytes on the devices.
DEVICE_LIMIT = 2 ** 30
PREFETCH = 2  # chunks read ahead of the one being stepped


def mode(config, task) -> str:
  """'device' or 'host': config.input, or by the training split's size where 'auto'. Raises
  ConfigError for a split that the device path cannot index."""
  if getattr(task, 'streamed', False):  # an image folder: decoded by the host, nothing in memory
    if config.input == 'device':
      raise ConfigError("config.input='device': an image folder is decoded on the host, batch by batch; "
                        "use 'host' or 'auto'")
    return 'host'
  train = task.train_arrays()
  chosen = config.input
  if chosen == 'auto':
    chosen = 'device' if sum(a.nbytes for a in train) <= DEVICE_LIMIT else 'host'
  n = len(train[0])
  if chosen == 'device' and task.name == 'language_model' and n > text.MAX_BYTES:
    raise ConfigError(f"config.input='device': the train split's {n:,} tokens are more than the device's "
                      f"int32 window offsets reach ({text.MAX_BYTES:,}); use 'host' or 'auto'")
  return chosen


def create(setup, train_arrays) -> 'DeviceInput | HostInput':
  """The input of `setup`'s run (Setup.input, by `mode`)."""
  return (DeviceInput if setup.input == 'device' else HostInput)(setup, train_arrays)


def position(setup, step: int) -> dict:
  """For a checkpoint of a run read by the host: the next batch to read after global step `step`
  (mlres.data.shards.Position) and what it is a position in."""
  return shards.position(step, setup.steps).state(_examples(setup.task), setup.config.batch_size,
                                                   _seeds(setup.config))


def check_position(setup, saved: dict, step: int) -> None:
  """A checkpoint's position (`position`) is this run's at `step`: the same order (examples, batch,
  seeds), the same batch; raises DataError naming what differs."""
  restored = shards.Position.restore(saved, _examples(setup.task), setup.config.batch_size,
                                     _seeds(setup.config))
  if restored != shards.position(step, setup.steps):
    raise DataError(f'the saved data position {saved} is not where step {step} reads next')


class DeviceInput:
  """The training arrays replicated on every device; each chunk gets them and the epoch's index
  matrix (per seed), and step i gathers row start + i."""
  in_axes = (None, 0)  # over seeds: the arrays are shared, each seed has its own order

  def __init__(self, setup, train_arrays):
    self.setup = setup
    self.train = setup.layout.replicate(train_arrays)
    self._batches = jax.jit(
        setup.seeded(lambda key, epoch: setup.task.epoch_batches(key, epoch, setup.rows), (0, None)),
        out_shardings=setup.layout.replicated)

  def fetch(self, inputs, start, i):
    train, batches = inputs
    return self.setup.task.batch(train, jax.lax.dynamic_index_in_dim(batches, start + i, keepdims=False))

  def abstract(self):
    s = self.setup
    seeds = (s.config.num_seeds,) if s.config.num_seeds > 1 else ()
    batches = jax.ShapeDtypeStruct((*seeds, s.rows, s.config.batch_size), jnp.int32,
                                   sharding=s.layout.replicated)
    return self.train, batches

  def chunks(self, epoch: int, first: int) -> Iterator[tuple[int, Any]]:
    """(start, inputs) of each chunk of the epoch from step `first` on."""
    batches = self._batches(self.setup.keys.order, epoch)
    for start in range(first, self.setup.steps, self.setup.chunk):
      yield start, (self.train, batches)


class HostInput:
  """Each process reads its rows of every batch from the host's copy of the split (or its file)."""
  in_axes = (0, 0)  # over seeds: each seed's own batches

  def __init__(self, setup, train_arrays):
    self.setup, self.arrays = setup, train_arrays
    c, layout = setup.config, setup.layout
    if jax.process_count() > 1 and layout.sizes[sharding.SEEDS] > 1:
      raise ConfigError(f'config.input={c.input!r}: the host reads every seed of its own devices, so a '
                        f'run of several processes takes mesh.seeds=1, not {layout.sizes[sharding.SEEDS]}')
    self.rows = shards.local_rows(c.batch_size, jax.process_index(), jax.process_count())
    self.seeds = _seeds(c)
    lead = (sharding.SEEDS if layout.seeds_axis else None,) if c.num_seeds > 1 else ()
    self.sharding = NamedSharding(layout.mesh, P(*lead, None, (sharding.DATA, sharding.FSDP)))

  def fetch(self, inputs, start, i):
    del start
    return jax.tree.map(lambda a: a[i], inputs)

  @functools.cached_property
  def _shapes(self) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The global shape and dtype of each input of a chunk: (seeds, chunk, batch, ...)."""
    s = self.setup
    seeds = (s.config.num_seeds,) if s.config.num_seeds > 1 else ()
    x, y = s.task.host_batch(self.arrays, s.config.seed, 0, 0, slice(0, 1))
    return [((*seeds, s.chunk, s.config.batch_size, *a.shape[1:]), a.dtype) for a in (x, y)]

  def abstract(self):
    return tuple(jax.ShapeDtypeStruct(shape, dtype, sharding=self.sharding)
                 for shape, dtype in self._shapes)

  def read(self, epoch: int, start: int):
    """The chunk of steps start .. start + chunk - 1 of `epoch` as global jax.Arrays, from this
    process's rows; a step past the epoch's end reads the epoch's first ones (its outputs are dropped)."""
    s = self.setup
    parts = [[s.task.host_batch(self.arrays, seed, epoch, step % s.steps, self.rows)
              for step in range(start, start + s.chunk)] for seed in self.seeds]
    local = [np.stack([np.stack([p[j] for p in seed]) for seed in parts]) for j in (0, 1)]
    if s.config.num_seeds == 1:
      local = [a[0] for a in local]
    return tuple(jax.make_array_from_process_local_data(self.sharding, a, shape)
                 for a, (shape, _) in zip(local, self._shapes))

  def chunks(self, epoch: int, first: int) -> Iterator[tuple[int, Any]]:
    """(start, inputs) of each chunk of the epoch from step `first` on, read PREFETCH chunks ahead
    by a thread. A reader that fails passes its error on, raised here."""
    starts = list(range(first, self.setup.steps, self.setup.chunk))
    ready: queue.Queue = queue.Queue(PREFETCH)
    stop = threading.Event()

    def reader():
      for start in starts:
        try:
          item = (start, self.read(epoch, start))
        except Exception as e:  # noqa: BLE001 (handed to the consumer, who raises it)
          item = e
        while not stop.is_set():
          try:
            ready.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set() or isinstance(item, Exception):
          return
    thread = threading.Thread(target=reader, name='mlres-input', daemon=True)
    thread.start()
    try:
      for _ in starts:
        item = ready.get()
        if isinstance(item, Exception):
          raise item
        yield item
    finally:
      stop.set()
      thread.join()


def _seeds(config) -> list[int]:
  """The seed of each of the run's seeds: seed k of several reads the order of config.seed + k."""
  return [config.seed + k for k in range(config.num_seeds)]


def _examples(task) -> int:
  """How many examples (images, or tokens a window may start at) the host's order is over."""
  return len(task.ds.train) if getattr(task, 'streamed', False) else len(task.train_arrays()[0])
