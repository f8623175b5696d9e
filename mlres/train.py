"""The multi-level trainer: cycles of SGD with restarted cosine learning rates, interpolating
the network between cycles (paper, Sec. 4 and 5.2).

The train state is a plain dict {step, params, batch_stats, ode, opt_state}, replicated on every
device while each batch is split across them (mlres.parallel); with num_seeds > 1 each leaf has
a leading seed axis and the step is vmapped over it. Each architecture gets its own chunk function,
compiled ahead of time so it cannot retrace (with `compile_ahead`, in a background thread while
the cycles before it train); a chunk is `lax.scan` over several steps, with the data resident on
the devices and augmented there.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlres import config as config_lib
from mlres import data as data_lib
from mlres import parallel, report, schedules
from mlres.checkpoint import CheckpointError, Checkpointer
from mlres.interpolate import architecture, interpolate
from mlres.model import ResNet, count_params


@dataclasses.dataclass(frozen=True)
class Cycle:
  index: int
  stage_sizes: tuple[int, ...]
  h: float
  first_epoch: int  # epochs completed before this cycle
  last_epoch: int   # epochs completed at its end


def plan(config) -> list[Cycle]:
  """The cycles with their epochs and step sizes; h halves at every interpolation."""
  cycles, epoch, h = [], 0, float(config.model.h)
  for i, (sizes, n) in enumerate(zip(config.cycles.stage_sizes, config.cycles.epochs)):
    sizes = tuple(sizes)
    if cycles and sizes != cycles[-1].stage_sizes:
      h /= 2
    cycles.append(Cycle(i, sizes, h, epoch, epoch + n))
    epoch += n
  return cycles


def make_model(config, stage_sizes, num_classes: int, h: float) -> ResNet:
  return ResNet(stage_sizes=tuple(stage_sizes), widths=tuple(config.model.widths),
                num_classes=num_classes, h=h, dtype=jnp.dtype(config.model.dtype))


def make_optimizer(config) -> optax.GradientTransformation:
  """SGD momentum without the learning rate, which the step applies from the global step.

  Weight decay is coupled L2 on conv and dense kernels (added to their gradient before momentum,
  as in TensorFlow's L2 loss and PyTorch's SGD); batch-norm scales and biases are not decayed.
  """
  o = config.optimizer
  kernels = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.chain(optax.add_decayed_weights(o.weight_decay, mask=kernels), optax.trace(o.momentum))


def init_state(model: ResNet, tx, rng, image_shape) -> dict[str, Any]:
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {'step': jnp.zeros((), jnp.int32), **variables, 'opt_state': tx.init(variables['params'])}


def network(config, ds, cycle: Cycle) -> dict[str, Any]:
  """What a checkpoint's metadata says of the network it holds, all that its shapes depend on."""
  return {'stage_sizes': list(cycle.stage_sizes), 'h': cycle.h, 'widths': list(config.model.widths),
          'num_classes': ds.num_classes, 'channels': int(ds.train_images.shape[-1]),
          'num_seeds': config.num_seeds}


def abstract_state(config, ds, meta, layout: parallel.Layout | None = None) -> dict[str, Any]:
  """The train state's shapes and dtypes for the network that `meta` (a checkpoint's metadata)
  names, whatever `config` says, replicated on `layout` (default: every device of this process's
  run, whatever the number that wrote it)."""
  net = _named_network(meta)
  model = ResNet(stage_sizes=tuple(net['stage_sizes']), widths=tuple(net['widths']),
                 num_classes=net['num_classes'], h=net['h'])
  image_shape = (*ds.train_images.shape[1:3], net['channels'])
  init = per_seed(lambda key: init_state(model, make_optimizer(config), key, image_shape),
                  net['num_seeds'])
  key = jax.random.key(0)  # its values are never used: shapes only
  keys = key if net['num_seeds'] == 1 else jax.random.split(key, net['num_seeds'])
  return (layout or parallel.Layout.all_devices()).abstract(jax.eval_shape(init, keys))


def _named_network(meta) -> dict[str, Any]:
  """`network` as a checkpoint's metadata gives it. Those written before 2026-11-29 name
  neither channels nor seeds: the config stored beside them does."""
  if 'channels' in meta and 'num_seeds' in meta:
    return meta
  return {'channels': data_lib.channels(meta['config']),
          'num_seeds': meta['config'].get('num_seeds', 1), **meta}


def grow(state, tx, momentum: str):
  """The interpolation between cycles: blocks doubled, h halved, momentum fresh or interpolated."""
  variables = interpolate({k: state[k] for k in ('params', 'batch_stats', 'ode')})
  if momentum == 'fresh':
    opt_state = tx.init(variables['params'])
  else:
    opt_state = _map_param_trees(state['opt_state'], state['params'], interpolate)
  return {'step': state['step'], **variables, 'opt_state': opt_state}


def _map_param_trees(node, params, fn):
  """Applies fn to every subtree of an optimizer state shaped like the params."""
  if jax.tree.structure(node) == jax.tree.structure(params):
    return fn(node)
  if isinstance(node, tuple) and hasattr(node, '_fields'):
    return type(node)(*(_map_param_trees(n, params, fn) for n in node))
  if isinstance(node, (tuple, list)):
    return type(node)(_map_param_trees(n, params, fn) for n in node)
  return node


def train_step(model, tx, lr_schedule, aug, state, images, labels, rng):
  """One SGD step on one batch of uint8 images; returns the new state and the batch's metrics."""
  x = data_lib.augment(rng, images, aug['pad'], aug['flip'])
  x = data_lib.standardize(x, aug['mean'], aug['std'], model.dtype)

  def loss_fn(params):
    logits, updated = model.apply(
        {'params': params, 'batch_stats': state['batch_stats'], 'ode': state['ode']},
        x, train=True, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updated['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  lr = lr_schedule(state['step'])
  params = jax.tree.map(lambda p, u: p - lr * u, state['params'], updates)
  # Leaf by leaf: a norm of large but finite gradients could itself overflow to inf.
  finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
      [jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
  metrics = {'loss': loss, 'correct': jnp.sum(jnp.argmax(logits, -1) == labels), 'finite': finite,
             'lr': lr}
  new_state = {'step': state['step'] + 1, 'params': params, 'batch_stats': batch_stats,
               'ode': state['ode'], 'opt_state': opt_state}
  return new_state, metrics


def make_train_chunk(model, tx, lr_schedule, aug, aug_key, chunk: int, layout: parallel.Layout,
                     steps: int):
  """`chunk` train steps in one call; batches are rows of the epoch's index matrix.

  The dataset is replicated on every device; each gathers its own slice of the global batch.
  Where chunks do not divide the epoch's `steps`, a step past its end leaves the state as it was.

  Several steps are a lax.scan (fewer dispatches: 1.3x on a GPU); a single step is not, because
  XLA's CPU backend runs convolutions inside a loop about 6x slower.
  """
  overrun = steps % chunk != 0

  def train_chunk(state, images, labels, batches, start):
    def step(state, row):
      idx, position = row
      rng = jax.random.fold_in(aug_key, state['step'])
      x, y = layout.split_batch((images[idx], labels[idx]))
      new, metrics = train_step(model, tx, lr_schedule, aug, state, x, y, rng)
      if overrun:  # the host drops their metrics
        new = jax.tree.map(lambda n, o: jnp.where(position < steps, n, o), new, state)
      return new, metrics
    rows = (jax.lax.dynamic_slice_in_dim(batches, start, chunk), start + jnp.arange(chunk))
    if chunk == 1:
      state, metrics = step(state, jax.tree.map(lambda r: r[0], rows))
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(step, state, rows)
  return train_chunk


def make_evaluate(model, aug, batch_size: int, layout: parallel.Layout):
  """Loss and correct-count sums over a padded test set, in one call (lax.map over batches)."""
  def evaluate(state, images, labels, mask):
    variables = {k: state[k] for k in ('params', 'batch_stats', 'ode')}

    def batch(args):
      x, y, m = layout.split_batch(args)
      logits = model.apply(variables, data_lib.standardize(x, aug['mean'], aug['std'], model.dtype))
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(loss * m), jnp.sum((jnp.argmax(logits, -1) == y) * m)
    shape = lambda a: a.reshape(-1, batch_size, *a.shape[1:])
    loss, correct = jax.lax.map(batch, (shape(images), shape(labels), shape(mask)))
    return loss.sum(), correct.sum()
  return evaluate


def epoch_batches(key, epoch: int, n: int, steps: int, batch: int, rows: int):
  """The epoch's shuffled index matrix, (rows, batch); a pure function of the seed and epoch.
  Rows past `steps` repeat the first ones: batches of steps that are computed and discarded."""
  order = jax.random.permutation(jax.random.fold_in(key, epoch), n)[:steps * batch].reshape(steps, batch)
  return jnp.concatenate([order, order[:rows - steps]])


def steps_per_dispatch(steps_per_epoch: int, limit: int) -> int:
  """Steps per call: the fewest calls of at most `limit` steps that cover the epoch, all of one
  size (one program per cycle). Where they overrun the epoch, the last call's extra steps (fewer
  than one per call, so under 1/limit of the work) are computed and discarded."""
  calls = -(-steps_per_epoch // limit)
  return -(-steps_per_epoch // calls)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run's programs are built from. mlres.bench builds its steps with this too, so the
  benchmark times exactly what the trainer runs."""
  config: Any
  ds: data_lib.Dataset
  layout: parallel.Layout
  cycles: list[Cycle]
  steps: int  # per epoch
  chunk: int  # steps per dispatch
  tx: optax.GradientTransformation
  lr_schedule: Any
  keys: tuple[jax.Array, jax.Array, jax.Array]  # initialization, data order, augmentation;
                                                # with several seeds, one row per seed
  aug: dict[str, Any]

  @classmethod
  def create(cls, config, ds: data_lib.Dataset, layout: parallel.Layout) -> 'Setup':
    steps = len(ds.train_images) // config.batch_size
    if steps < 1:
      raise config_lib.ConfigError(
          f'config.batch_size={config.batch_size}: larger than the {len(ds.train_images)} '
          f'training images of {ds.name}')
    cycles, o = plan(config), config.optimizer
    lr_schedule = schedules.learning_rate([(c.last_epoch - c.first_epoch) * steps for c in cycles],
                                          o.eta_max, o.eta_min, o.reset_lr)
    chunk = steps_per_dispatch(steps, config.steps_per_dispatch or
                               (1 if jax.default_backend() == 'cpu' else 50))
    return cls(config, ds, layout, cycles, steps, chunk, make_optimizer(config), lr_schedule,
               seed_keys(config),
               {'pad': config.augment.pad, 'flip': config.augment.flip, 'mean': ds.mean, 'std': ds.std})

  @property
  def rows(self) -> int:
    """Rows of the epoch's index matrix: its steps rounded up to whole chunks."""
    return -(-self.steps // self.chunk) * self.chunk

  def model(self, cycle: Cycle) -> ResNet:
    return make_model(self.config, cycle.stage_sizes, self.ds.num_classes, cycle.h)

  def seeded(self, fn, in_axes=0):
    return per_seed(fn, self.config.num_seeds, in_axes)

  def init(self):
    """The first cycle's train state (per seed), replicated on the devices."""
    model = self.model(self.cycles[0])
    init = self.seeded(lambda key: init_state(model, self.tx, key, self.ds.train_images.shape[1:]))
    return jax.jit(init, out_shardings=self.layout.replicated)(self.keys[0])

  def grow(self, state):
    """The interpolated state, computed on the devices and left replicated there."""
    return jax.jit(self.seeded(functools.partial(
        grow, tx=self.tx, momentum=self.config.optimizer.momentum_at_interpolation)),
                   out_shardings=self.layout.replicated)(state)

  def batches(self, epoch: int):
    """The epoch's index matrix (per seed), from one compiled function for every epoch."""
    return self._batches(self.keys[1], epoch)

  @functools.cached_property
  def _batches(self):
    n, steps, batch, rows = len(self.ds.train_labels), self.steps, self.config.batch_size, self.rows
    return jax.jit(self.seeded(lambda key, epoch: epoch_batches(key, epoch, n, steps, batch, rows),
                               (0, None)),
                   out_shardings=self.layout.replicated)

  def compile_train_chunk(self, model: ResNet, state, images, labels):
    """The chunk function compiled ahead of time for `model`'s architecture: it cannot retrace."""
    def one_seed(state, images, labels, batches, start, aug_key):
      return make_train_chunk(model, self.tx, self.lr_schedule, self.aug, aug_key, self.chunk,
                              self.layout, self.steps)(state, images, labels, batches, start)
    chunk = self.seeded(one_seed, (0, None, None, 0, None, 0))
    batches = jax.ShapeDtypeStruct(((self.config.num_seeds,) if self.config.num_seeds > 1 else ()) +
                                   (self.rows, self.config.batch_size), jnp.int32,
                                   sharding=self.layout.replicated)
    return jax.jit(lambda state, images, labels, batches, start: chunk(
        state, images, labels, batches, start, self.keys[2]),
                   donate_argnums=0, out_shardings=self.layout.replicated).lower(
        state, images, labels, batches, 0).compile()

  def compile_evaluate(self, model: ResNet, state, test):
    evaluate = self.seeded(make_evaluate(model, self.aug, self.config.eval_batch_size, self.layout),
                           (0, None, None, None))
    return jax.jit(evaluate, out_shardings=self.layout.replicated).lower(state, *test).compile()

  def compile_cycle(self, cycle: Cycle, images, labels, test):
    """The cycle's train chunk and evaluation, compiled against its abstract state: no grown
    state is needed, so this can run before the cycle starts."""
    model = self.model(cycle)
    state = abstract_state(self.config, self.ds, network(self.config, self.ds, cycle), self.layout)
    return (self.compile_train_chunk(model, state, images, labels),
            self.compile_evaluate(model, state, test))


class Programs:
  """Every architecture's compiled programs. Ahead: compiled one after another in a background
  thread, in the order the cycles need them, so that each cycle's compile overlaps the training
  before it (the plain H200 reference step of ResNet-122 took 21.6 s to compile). Otherwise each
  is compiled when its first cycle starts, so that no compile slows the stepping beside it."""

  def __init__(self, setup: Setup, cycles, images, labels, test, ahead: bool):
    self._compile = functools.partial(_timed, setup.compile_cycle, images=images, labels=labels,
                                      test=test)
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='mlres-compile')
    self._futures, self._handed_out = {}, set()
    if ahead:
      for cycle in cycles:
        self._submit(cycle)

  def _submit(self, cycle: Cycle) -> None:
    if cycle.stage_sizes not in self._futures:  # a baseline's restarts keep their architecture
      self._futures[cycle.stage_sizes] = self._pool.submit(self._compile, cycle)

  def get(self, cycle: Cycle):
    """(train chunk, evaluate, timing): timing is (seconds compiling, seconds waited for it) the
    first time an architecture is asked for, None after that."""
    t = time.perf_counter()
    self._submit(cycle)
    (chunk, evaluate), seconds = self._futures[cycle.stage_sizes].result()
    first = cycle.stage_sizes not in self._handed_out
    self._handed_out.add(cycle.stage_sizes)
    waited = min(time.perf_counter() - t, seconds)  # of the compile, not of the thread's hand-over
    return chunk, evaluate, (seconds, waited) if first else None

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    """Drops what has not started; on an error or a signal does not wait here for a compile under
    way (it cannot be stopped). The interpreter still joins it before exiting, unless the program
    leaves at once, as mlres.main does after a signal; an error's exit may wait for it."""
    self._pool.shutdown(wait=exc_type is None, cancel_futures=True)


def _timed(fn, *args, **kwargs):
  t = time.perf_counter()
  return fn(*args, **kwargs), time.perf_counter() - t


def seed_keys(config) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Initialization, data-order and augmentation keys; seed k of several gets exactly the keys
  of a run with config.seed + k alone."""
  split = lambda seed: jax.random.split(jax.random.key(seed), 3)
  if config.num_seeds == 1:
    return tuple(split(config.seed))
  keys = jax.vmap(split)(config.seed + jnp.arange(config.num_seeds))
  return keys[:, 0], keys[:, 1], keys[:, 2]


def per_seed(fn, num_seeds: int, in_axes=0):
  """fn itself for one seed; vmapped over a leading seed axis for several."""
  return fn if num_seeds == 1 else jax.vmap(fn, in_axes=in_axes)


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after it saved a checkpoint; exit with 128 + signum."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class _StopSignals:
  """The first SIGINT or SIGTERM asks the loop to save and stop; a second one stops at once."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum, self._previous = None, {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # only there can Python catch signals
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    if self.signum is not None:
      self.__exit__()
      signal.raise_signal(signum)
      return
    self.signum = signum
    print(f'\n{signal.Signals(signum).name}: saving a checkpoint after the current step; send it '
          'again to stop at once', file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains the config's cycle plan in `workdir`, resuming from its latest intact checkpoint."""
  wall_start = time.perf_counter()
  layout = parallel.Layout.all_devices()
  config_lib.validate(config, layout.num_devices)
  workdir = os.path.expanduser(workdir)
  report.prepare_workdir(workdir)
  main = parallel.is_main_process()
  say = print if main else lambda *args, **kwargs: None
  ds = data_lib.load(config)
  setup = Setup.create(config, ds, layout)
  cycles, steps, chunk = setup.cycles, setup.steps, setup.chunk
  config_json = json.loads(config.to_json_best_effort())
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), [c.last_epoch * steps for c in cycles])
  restored = ckpt.restore_latest(functools.partial(abstract_state, config, ds))
  # compile_wait_seconds: the part of compile_seconds that training waited for.
  totals = {'train_seconds': 0.0, 'compile_seconds': 0.0, 'compile_wait_seconds': 0.0,
            'wall_seconds': 0.0}
  done, partial = 0, None
  if restored:
    state, meta = restored
    _check_resumable(meta, config, config_json, ds, cycles, steps, chunk, workdir)
    done, partial = meta['epoch'], meta.get('partial')
    totals = {k: meta.get(k, 0.0) for k in totals}  # checkpoints before 2026-11-29 lack the wait
    steps_in = f' and {partial["steps"]} steps' if partial else ''
    say(f'resuming from the checkpoint of step {meta["step"]}, after epoch {done}{steps_in} '
        f'({report.blocks(meta["stage_sizes"])} blocks, h={meta["h"]:g})', flush=True)
  summary_path = os.path.join(workdir, 'summary.json')
  finished = report.read_summary(summary_path) if done == config.num_epochs else None
  if finished:
    ckpt.close()  # its summary stays the one of the run that trained it
    say(f'the run is finished: nothing to train, {summary_path} unchanged', flush=True)
    return finished
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  history = [m for m in report.read_jsonl(metrics_path) if m['epoch'] <= done]
  lost = sorted(set(range(1, done + 1)) - {m['epoch'] for m in history})
  if lost:
    say(f'warning: {metrics_path} lacks {len(lost)} of the {done} epochs the checkpoint has '
        f'trained ({lost[0]} to {lost[-1]}); their lines are lost', file=sys.stderr, flush=True)
  if main:
    report.write_jsonl(metrics_path, history)

  def save(state, epoch: int, cycle: Cycle, running: float, partial=None):
    """Checkpoints `state` after `epoch` whole epochs (and `partial` steps of the next)."""
    ckpt.save(_global_step(state), state, {
        'epoch': epoch, 'cycle': cycle.index, **network(config, ds, cycle), 'steps_per_epoch': steps,
        **totals, 'train_seconds': totals['train_seconds'] + running,
        'wall_seconds': totals['wall_seconds'] + time.perf_counter() - wall_start,
        'config': config_json, **({'partial': partial} if partial else {})})

  train_images, train_labels = layout.replicate((ds.train_images, ds.train_labels))
  test = layout.replicate(_padded_test_set(ds, config.eval_batch_size))
  todo = [c for c in cycles if c.last_epoch > done]
  ahead = config.compile_ahead == 'on' or (config.compile_ahead == 'auto' and
                                           jax.default_backend() != 'cpu')
  with _StopSignals() as stop, Programs(setup, todo, train_images, train_labels, test, ahead) as programs:
    if not restored:
      state = setup.init()  # compiled ahead, the first cycle's programs compile meanwhile
    for cycle in todo:
      if architecture(state['params'])['stage_sizes'] != cycle.stage_sizes:
        state = setup.grow(state)
      train_chunk, evaluate, timing = programs.get(cycle)
      note = 'its compiled programs reused'
      if timing:
        seconds, waited = timing
        totals['compile_seconds'] += seconds
        totals['compile_wait_seconds'] += waited
        note = f'compiled in {seconds:.1f} s, {waited:.1f} s of it waited for'
      say(f'cycle {cycle.index}: {report.blocks(cycle.stage_sizes)} blocks, h={cycle.h:g}, '
          f'{count_params(state["params"]) // config.num_seeds:,} parameters'
          f'{f" x {config.num_seeds} seeds" if config.num_seeds > 1 else ""}, {note}', flush=True)
      for epoch in range(max(done, cycle.first_epoch), cycle.last_epoch):
        t = time.perf_counter()
        resumed, partial = (partial if epoch == done else None), None  # only the first epoch
        first, earlier = (resumed['steps'], resumed['seconds']) if resumed else (0, 0.0)
        outs = [_outputs_from_json(resumed)] if resumed else []
        batches = setup.batches(epoch)
        with report.progress(steps, f'epoch {epoch + 1}/{config.num_epochs}') as bar:
          bar.update(first)
          for start in range(first, steps, chunk):
            state, out = train_chunk(state, train_images, train_labels, batches, start)
            if outs:  # the previous chunk, so that this one is queued while the host waits
              _check_finite(outs[-1], epoch, start - chunk, steps, ckpt)
            outs.append(out)
            bar.update(min(chunk, steps - start))
            if stop.signum and start + chunk < steps:
              outs = jax.device_get(outs)
              _check_finite(outs[-1], epoch, start, steps, ckpt)
              running = time.perf_counter() - t
              save(state, epoch, cycle, running, partial={
                  'steps': start + chunk, 'seconds': earlier + running, **_outputs_to_json(outs)})
              raise _interrupted(stop.signum, f'epoch {epoch + 1}, step {start + chunk} of {steps}',
                                 _global_step(state), ckpt)
          outs = jax.device_get(outs)
          _check_finite(outs[-1], epoch, (steps - 1) // chunk * chunk, steps, ckpt)
        running = time.perf_counter() - t
        totals['train_seconds'] += running
        out = {k: v[..., :steps] for k, v in _concat(outs).items()}  # without discarded steps
        test_loss, test_correct = jax.device_get(evaluate(state, *test))
        per_seed = {'train_loss': out['loss'].mean(-1),
                    'train_accuracy': out['correct'].sum(-1) / (steps * config.batch_size),
                    'test_loss': test_loss / len(ds.test_labels),
                    'test_accuracy': test_correct / len(ds.test_labels)}
        record = {
            'epoch': epoch + 1, 'cycle': cycle.index, 'stage_sizes': list(cycle.stage_sizes),
            'h': cycle.h, 'lr': float(out['lr'].flat[0]),
            **{k: float(np.mean(v)) for k, v in per_seed.items()},
            'epoch_seconds': earlier + running, 'steps_per_second': steps / (earlier + running)}
        if config.num_seeds > 1:
          record['test_accuracy_ci95'] = report.ci95(per_seed['test_accuracy'])
          record['seeds'] = {k: v.tolist() for k, v in per_seed.items()}
        history.append(record)
        if main:
          report.append_jsonl(metrics_path, record)
          report.epoch_line(record, config.num_epochs)
        every = config.checkpoint_every_epochs
        if epoch + 1 == cycle.last_epoch or (every and (epoch + 1) % every == 0) or stop.signum:
          save(state, epoch + 1, cycle, 0.0)
        if stop.signum:
          raise _interrupted(stop.signum, f'the end of epoch {epoch + 1}', _global_step(state), ckpt)
      done = cycle.last_epoch
  ckpt.wait()
  ckpt.close()
  if not history or history[-1]['epoch'] != config.num_epochs:
    raise report.WorkdirError(f'{metrics_path} lacks the last epoch, {config.num_epochs}, whose test '
                              'accuracy the summary reports; restore the file from a copy')
  final = history[-1]
  summary = {
      'name': config.name, 'dataset': config.dataset,
      'stage_sizes': [list(c.stage_sizes) for c in cycles],
      'test_error': 1.0 - final['test_accuracy'], 'test_accuracy': final['test_accuracy'],
      **(_seed_statistics(final) if config.num_seeds > 1 else {}),
      'train_seconds': totals['train_seconds'], 'compile_seconds': totals['compile_seconds'],
      'compile_wait_seconds': totals['compile_wait_seconds'],
      'wall_seconds': totals['wall_seconds'] + time.perf_counter() - wall_start,
      'num_params': count_params(state['params']) // config.num_seeds, 'epochs': final['epoch'],
      'device': jax.devices()[0].device_kind, 'num_devices': layout.num_devices,
      'num_processes': jax.process_count(), 'config': config_json}
  if main:
    report.write_json(summary_path, summary)
  return summary


def _check_resumable(meta, config, config_json, ds, cycles, steps: int, chunk: int,
                     workdir: str) -> None:
  """Refuses a checkpoint of another run, or one this config cannot continue exactly."""
  differ = config_lib.differences(meta['config'], config_json)
  if differ and config.resume != 'any_config':
    raise config_lib.ConfigError(
        f'{workdir} holds a run of another config ({"; ".join(differ)}); use the config that wrote '
        'it, another workdir, or --config.resume=any_config to continue it with this one')
  theirs, ours = _named_network(meta), network(config, ds, cycles[0])
  other = [f'{k}: {theirs[k]} -> {ours[k]}' for k in ('widths', 'num_classes', 'channels', 'num_seeds')
           if theirs[k] != ours[k]]
  if other:
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} holds another network than this config '
        f'builds ({"; ".join(other)}); no config can continue it as another: use another workdir')
  done = meta['epoch'] + (1 if meta.get('partial') else 0)
  planned = next((c for c in cycles if c.first_epoch < done <= c.last_epoch), None)
  if planned is None or (tuple(meta['stage_sizes']), meta['h']) != (planned.stage_sizes, planned.h):
    plans = f'{report.blocks(planned.stage_sizes)} blocks at h = {planned.h:g}' if planned else 'no such epoch'
    raise CheckpointError(
        f'the checkpoint of epoch {meta["epoch"]} in {workdir} holds {report.blocks(meta["stage_sizes"])} '
        f'blocks at h = {meta["h"]:g} but this config plans {plans} there; '
        'use another workdir or the config that wrote it')
  # The learning rate, the augmentation and the checkpoints kept count global steps.
  if meta['steps_per_epoch'] != steps:
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} was trained in epochs of '
        f'{meta["steps_per_epoch"]} steps but this config\'s batch_size={config.batch_size} makes '
        f'epochs of {steps}; its learning-rate schedule counts steps: resume with the batch size '
        'that wrote it')
  partial = meta.get('partial')
  if partial and partial['steps'] % chunk:
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} stopped {partial["steps"]} steps into '
        f'an epoch, which this config\'s chunks of {chunk} steps cannot continue; resume with the '
        'steps_per_dispatch that wrote it')


def _check_finite(out, epoch: int, start: int, steps: int, ckpt: Checkpointer) -> None:
  """Stops on a chunk whose loss or gradients were not finite, before anything is saved; steps
  past the epoch's end, computed only to fill the last chunk, are not looked at."""
  finite = np.asarray(out['finite'])[..., :steps - start]
  if not finite.all():
    saved = ckpt.steps()
    *seed, step = np.argwhere(~finite)[0]
    raise FloatingPointError(
        f'non-finite loss or gradient at epoch {epoch + 1}, step {start + int(step) + 1} of {steps}'
        f'{f" (seed {int(seed[0])})" if seed else ""}; nothing saved, '
        + (f'the last good checkpoint is step {saved[-1]}' if saved else 'and there is no checkpoint yet')
        + f' in {ckpt.directory}')


_OUTPUTS = {'loss': np.float32, 'correct': np.int32, 'lr': np.float32, 'finite': np.bool_}


def _concat(outs) -> dict[str, np.ndarray]:
  """The chunks' per-step outputs as one array each, steps on the last axis (after any seed axis)."""
  return {k: np.concatenate([np.asarray(o[k]) for o in outs], axis=-1) for k in _OUTPUTS}


def _outputs_to_json(outs) -> dict[str, list]:
  """The per-step outputs of a part-done epoch, exactly (float32 values are exact as JSON)."""
  return {k: v.tolist() for k, v in _concat(outs).items()}


def _outputs_from_json(partial) -> dict[str, np.ndarray]:
  return {k: np.asarray(partial[k], dtype) for k, dtype in _OUTPUTS.items()}


def _global_step(state) -> int:
  return int(np.ravel(jax.device_get(state['step']))[0])  # the same for every seed


def _seed_statistics(final) -> dict[str, Any]:
  """Each seed's test error, their mean and the half-width of its 95% t-interval."""
  errors = [1.0 - a for a in final['seeds']['test_accuracy']]
  return {'test_error_seeds': errors, 'test_error_ci95': report.ci95(errors)}


def _interrupted(signum: int, where: str, step: int, ckpt: Checkpointer) -> Interrupted:
  ckpt.wait()
  return Interrupted(f'stopped by {signal.Signals(signum).name} at {where}; saved the checkpoint of '
                     f'step {step} in {ckpt.directory}', signum)


def _padded_test_set(ds, batch_size: int):
  """Test images, labels and a 0/1 mask, padded to whole batches."""
  n = len(ds.test_labels)
  pad = -n % batch_size
  images = np.concatenate([ds.test_images, np.zeros((pad, *ds.test_images.shape[1:]), np.uint8)])
  labels = np.concatenate([ds.test_labels, np.zeros(pad, np.int32)])
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  return images, labels, mask
