"""The multi-level trainer: cycles of SGD with restarted cosine learning rates, interpolating
the network between cycles (paper, Sec. 4 and 5.2).

The train state is a plain dict {step, params, batch_stats, ode, opt_state}, laid out on the
device mesh by mlres.sharding's rule (replicated by default, each large leaf split over `fsdp`)
while each batch is split across the devices (mlres.parallel); with num_seeds > 1 each leaf has a
leading seed axis and the step is vmapped over it. Each architecture gets its own chunk function,
compiled ahead of time so it cannot retrace (with `compile_ahead`, in a background thread while
the cycles before it train); a chunk is `lax.scan` over several steps, its batches gathered from
the data on the devices or read by the host (mlres.input_pipeline), and augmented on the devices.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlres import config as config_lib
from mlres import data as data_lib
from mlres import input_pipeline, parallel, report, schedules, sharding, tasks
from mlres.checkpoint import CheckpointError, Checkpointer
from mlres.gpt import GPT
from mlres.growth.depth import h_factor, interpolate
from mlres.growth.optimizer import grow_opt_state, widen_opt_state
from mlres.growth.width import widen
from mlres.model import ResNet, count_params
from mlres.vit import ViT
from mlres.signals import Interrupted, StopSignals


@dataclasses.dataclass(frozen=True)
class Cycle:
  index: int
  stage_sizes: tuple[int, ...]
  h: float
  first_epoch: int  # epochs completed before this cycle
  last_epoch: int   # epochs completed at its end
  # The family's width fields in this cycle (config.WIDTH_FIELDS): config.model's, or its entry of
  # config.cycles.widths over them.
  widths: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

  @property
  def architecture(self) -> tuple:
    """What its programs' shapes depend on: its blocks and widths."""
    return self.stage_sizes, tuple(self.widths.items())


def plan(config) -> list[Cycle]:
  """The cycles with their epochs, step sizes and widths; at every interpolation h changes by the
  growth operator's rule (halves, or is kept by 'zero'), at a widening it is kept."""
  cycles, epoch, h = [], 0, float(config.model.h)
  widths = tuple(config.cycles.widths) or ({},) * len(config.cycles.epochs)
  for i, (sizes, n, entry) in enumerate(zip(config.cycles.stage_sizes, config.cycles.epochs, widths)):
    sizes = tuple(sizes)
    if cycles and sizes != cycles[-1].stage_sizes:
      h *= h_factor(config.cycles.operator)
    cycles.append(Cycle(i, sizes, h, epoch, epoch + n, config_lib.cycle_widths(config.model, entry)))
    epoch += n
  return cycles


def make_model(config, stage_sizes, num_classes: int, h: float, widths=None) -> nn.Module:
  """The network of `config`'s model fields (a ConfigDict, or the dict a checkpoint stores) with
  `stage_sizes` blocks: a ResNet's stages, or a ViT's or GPT's one stack (stage_sizes =
  (num_blocks,)); a GPT's vocabulary is `num_classes`. `widths`: a cycle's width fields in place of
  config.model's (Cycle.widths)."""
  m, dtype = {**config['model'], **(widths or {})}, jnp.dtype(config['model']['dtype'])
  if m['name'] == 'vit':
    return ViT(num_blocks=stage_sizes[0], width=m['width'], num_heads=m['num_heads'],
               mlp_dim=m['mlp_dim'], patch_size=m['patch_size'], num_classes=num_classes, h=h,
               dtype=dtype, scan_blocks=m['scan_blocks'])
  if m['name'] == 'gpt':
    return GPT(num_blocks=stage_sizes[0], width=m['width'], num_heads=m['num_heads'],
               mlp_dim=m['mlp_dim'], context=m['context'], vocab_size=num_classes, h=h, dtype=dtype,
               scan_blocks=m['scan_blocks'])
  return ResNet(stage_sizes=tuple(stage_sizes), widths=tuple(m['widths']), num_classes=num_classes,
                h=h, dtype=dtype)


def make_optimizer(config) -> optax.GradientTransformation:
  """The update direction without the learning rate, which the step applies from the global step.

  'sgd': momentum, with coupled L2 weight decay (added to the gradient before momentum, as in
  TensorFlow's L2 loss and PyTorch's SGD). 'adamw': Adam with decoupled weight decay, as
  optax.adamw. What is decayed is chosen by role (`decayed`), not by rank: the attention's biases
  are (heads, head_dim) matrices. With clip_norm > 0 the gradient is first clipped to that global
  norm (`clipped`). `config` is a ConfigDict or the dict a checkpoint stores.
  """
  o = config['optimizer']
  decay = optax.add_decayed_weights(o['weight_decay'], mask=decayed)
  if o['name'] == 'adamw':
    tx = optax.chain(optax.scale_by_adam(o['b1'], o['b2'], o['eps']), decay)
  else:
    tx = optax.chain(decay, optax.trace(o['momentum']))
  clip_norm = o['clip_norm']
  return clipped(tx, clip_norm) if clip_norm else tx


def clipped(tx: optax.GradientTransformation, max_norm: float) -> optax.GradientTransformation:
  """`tx` applied to the gradient scaled down to global norm `max_norm` where its norm is larger
  (optax.clip_by_global_norm), as PyTorch's clip_grad_norm_ before the optimizer's step. Its state is
  `tx`'s own, so a checkpoint's optimizer state is the same with or without clipping. Under vmapped
  seeds each seed's gradient is clipped by its own norm: the update is traced for one seed."""
  clip = optax.clip_by_global_norm(max_norm)

  def update(grads, state, params=None):
    return tx.update(clip.update(grads, optax.EmptyState())[0], state, params)
  return optax.GradientTransformation(tx.init, update)


# The leaves, by name, that weight decay pulls to zero: conv and dense kernels, token and position
# embeddings. Biases and norm scales shift and scale features, and decaying them only biases the fit;
# the step size h is not a parameter (variables['ode']). The embeddings are decayed as nanoGPT decays
# every 2-D tensor (its token embedding is also its tied head), but for a reason of this model's
# own: they are the ODE's initial state Y0, whose scale no LayerNorm removes from the stream. Each
# block adds h F(LN(Y)), of a size that does not grow with Y, so embeddings left to grow would shrink
# every block's step relative to the stream, as a smaller h would; decay holds them at the scale of
# the branches, as it holds the kernels (the untied head's among them).
DECAYED = ('kernel', 'embedding', 'pos_embed')


def decayed(params):
  """The mask of weight decay over `params` (a tree of the model's params, either stack layout): True
  at the leaves whose name is in DECAYED."""
  return jax.tree_util.tree_map_with_path(lambda path, _: str(path[-1].key) in DECAYED, params)


def init_state(model: nn.Module, tx, rng, input_shape, input_dtype=jnp.float32) -> dict[str, Any]:
  variables = model.init(rng, jnp.zeros((1, *input_shape), input_dtype), train=False)
  return {'step': jnp.zeros((), jnp.int32), **variables, 'opt_state': tx.init(variables['params'])}


def variables(state) -> dict[str, Any]:
  """The model's collections of a train state: params, ode and (a ResNet's) batch_stats."""
  return {k: v for k, v in state.items() if k not in ('step', 'opt_state')}


def grow(state, tx, momentum: str, operator: str = 'copy', stacks=None):
  """The interpolation between cycles by `operator` (mlres.interpolate): blocks doubled, h as the
  operator says, the optimizer state fresh or carried through the same map as the weights."""
  fn = functools.partial(interpolate, operator=operator, stacks=stacks)
  grown = fn(variables(state))
  if momentum == 'fresh':
    opt_state = tx.init(grown['params'])
  else:
    opt_state = grow_opt_state(state['opt_state'], state['params'], fn)
  return {'step': state['step'], **grown, 'opt_state': opt_state}


def widen_state(state, sizes, tx, momentum: str, operator: str = 'clone', noise: float = 0.0,
                seed: int | None = None):
  """The widening between cycles (mlres.widen): every width to `sizes` (the family's width fields) by
  `operator`, clone's copies split unevenly by `noise` drawn from `seed` (the function kept); h and
  the step kept; the optimizer state fresh or widened as the gradients its moments sum
  (mlres.widen_opt_state)."""
  split = seed if operator == 'clone' and noise > 0 else None
  wide = widen(variables(state), sizes, operator, seed=split, noise=noise)
  if momentum == 'fresh':
    opt_state = tx.init(wide['params'])
  else:
    opt_state = widen_opt_state(state['opt_state'], state['params'], sizes, operator)
  return {'step': state['step'], **wide, 'opt_state': opt_state}


def widening_seed(seed: int, cycle: int) -> int:
  """The seed of clone's uneven split into `cycle`: the run's seed (seed + k for seed k of several) and
  the cycle, so that each widening of each seed draws its own."""
  return int(np.random.SeedSequence([seed, cycle]).generate_state(1)[0])


def train_step(model, tx, lr_schedule, task: tasks.Task, state, inputs, labels, rng):
  """One step on one batch (the task's raw inputs: uint8 images or bytes); returns the new state and
  the batch's metrics. Labels are a class per image or a next byte per position."""
  x = task.train_inputs(rng, inputs, model.dtype)
  fixed = variables(state)
  mutable = [k for k in ('batch_stats',) if k in fixed]

  def loss_fn(params):
    logits, updated = model.apply({**fixed, 'params': params}, x, train=True, mutable=mutable)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32)).mean()
    return loss, (logits, updated)

  (loss, (logits, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  lr = lr_schedule(state['step'])
  params = jax.tree.map(lambda p, u: p - lr * u, state['params'], updates)
  # Leaf by leaf: a norm of large but finite gradients could itself overflow to inf.
  finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
      [jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
  metrics = {'loss': loss, 'correct': jnp.sum(jnp.argmax(logits, -1) == labels), 'finite': finite,
             'lr': lr}
  new_state = {**state, **updated, 'step': state['step'] + 1, 'params': params,
               'opt_state': opt_state}
  return new_state, metrics


def make_train_chunk(model, tx, lr_schedule, task: tasks.Task, aug_key, chunk: int,
                     layout: parallel.Layout, steps: int, fetch):
  """`chunk` train steps in one call from steps `start` on; `fetch(inputs, start, i)` is step i's raw
  batch, taken from the call's inputs (mlres.input_pipeline: from the training arrays on the devices
  by a row of the epoch's batch matrix, or the batch the host read).

  Where chunks do not divide the epoch's `steps`, a step past its end leaves the state as it was.

  Several steps are a lax.scan (fewer dispatches: 1.3x on a GPU); a single step is not, because
  XLA's CPU backend runs convolutions inside a loop about 6x slower.
  """
  overrun = steps % chunk != 0

  def train_chunk(state, inputs, start):
    def step(state, i):
      rng = jax.random.fold_in(aug_key, state['step'])
      x, y = layout.split_batch(fetch(inputs, start, i))
      new, metrics = train_step(model, tx, lr_schedule, task, state, x, y, rng)
      if overrun:  # the host drops their metrics
        new = jax.tree.map(lambda n, o: jnp.where(start + i < steps, n, o), new, state)
      return new, metrics
    if chunk == 1:
      state, metrics = step(state, 0)
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(step, state, jnp.arange(chunk))
  return train_chunk


def make_evaluate(model, task: tasks.Task, batch_size: int, layout: parallel.Layout):
  """Loss and correct-count sums over a padded held-out set, in one call (lax.map over batches)."""
  def evaluate(state, inputs, labels, mask):
    fixed = variables(state)

    def batch(args):
      x, y, m = layout.split_batch(args)
      logits = model.apply(fixed, task.test_inputs(x, model.dtype))
      y = y.astype(jnp.int32)
      m = m.reshape(m.shape + (1,) * (y.ndim - 1))  # a window's positions share its mask
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(loss * m), jnp.sum((jnp.argmax(logits, -1) == y) * m)
    shape = lambda a: a.reshape(-1, batch_size, *a.shape[1:])
    loss, correct = jax.lax.map(batch, (shape(inputs), shape(labels), shape(mask)))
    return loss.sum(), correct.sum()
  return evaluate


def steps_per_dispatch(steps_per_epoch: int, limit: int) -> int:
  """Steps per call: the fewest calls of at most `limit` steps that cover the epoch, all of one
  size (one program per cycle). Where they overrun the epoch, the last call's extra steps (fewer
  than one per call, so under 1/limit of the work) are computed and discarded."""
  calls = -(-steps_per_epoch // limit)
  return -(-steps_per_epoch // calls)


class Keys(NamedTuple):
  """A run's random keys; with several seeds, one row per seed."""
  init: jax.Array
  order: jax.Array    # of the training images, per epoch
  augment: jax.Array


def seed_keys(config) -> Keys:
  """Seed k of several gets exactly the keys of a run with config.seed + k alone."""
  split = lambda seed: jax.random.split(jax.random.key(seed), 3)
  if config.num_seeds == 1:
    return Keys(*split(config.seed))
  keys = jax.vmap(split)(config.seed + jnp.arange(config.num_seeds))
  return Keys(keys[:, 0], keys[:, 1], keys[:, 2])


def per_seed(fn, num_seeds: int, in_axes=0, mesh_axis: str | None = None):
  """fn itself for one seed; vmapped over a leading seed axis for several, that axis laid along
  `mesh_axis` of the mesh where given (the `seeds` axis: batches inside then split per seed group)."""
  return fn if num_seeds == 1 else jax.vmap(fn, in_axes=in_axes, spmd_axis_name=mesh_axis)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run is made of: its task (with its data), devices, cycles, optimizer, schedule and keys.
  mlres.bench builds its steps from this too, so the benchmark times exactly what the trainer runs."""
  config: Any
  task: tasks.Task
  layout: parallel.Layout
  cycles: list[Cycle]
  steps: int  # per epoch
  chunk: int  # steps per dispatch
  tx: optax.GradientTransformation
  lr_schedule: Any
  keys: Keys
  input: str  # where the train batches are read: 'device' or 'host' (mlres.input_pipeline)

  @classmethod
  def create(cls, config, ds, layout: parallel.Layout) -> 'Setup':
    task = tasks.create(config, ds)
    config_lib.check_input(config, task.input[0], ds.name)
    config_lib.check_warmup(config, task.steps)
    cycles, o, steps = plan(config), config.optimizer, task.steps
    lr_schedule = schedules.learning_rate([(c.last_epoch - c.first_epoch) * steps for c in cycles],
                                          o.eta_max, o.eta_min, o.reset_lr, o.warmup_steps)
    chunk = steps_per_dispatch(steps, config.steps_per_dispatch or
                               (1 if jax.default_backend() == 'cpu' else 50))
    return cls(config, task, layout, cycles, steps, chunk, make_optimizer(config), lr_schedule,
               seed_keys(config), input_pipeline.mode(config, task))

  @property
  def rows(self) -> int:
    """Rows of the epoch's index matrix: its steps rounded up to whole chunks."""
    return -(-self.steps // self.chunk) * self.chunk

  def model(self, cycle: Cycle) -> nn.Module:
    return make_model(self.config, cycle.stage_sizes, self.task.num_classes, cycle.h, cycle.widths)

  def seeded(self, fn, in_axes=0):
    return per_seed(fn, self.config.num_seeds, in_axes, self.layout.seeds_axis)

  def shardings(self, state_shapes):
    """Where each leaf of a train state of this run's seeds lies (parallel.Layout.shardings)."""
    return self.layout.shardings(state_shapes, self.config.num_seeds)

  def cost(self, cycle: Cycle, epochs: int | None = None) -> dict[str, int]:
    """What `epochs` epochs of `cycle` (default: all of them) cost per seed: a language model's
    tokens and model FLOPs (Task.cost); {} for an image classifier."""
    epochs = cycle.last_epoch - cycle.first_epoch if epochs is None else epochs
    return self.task.cost(cycle.stage_sizes, cycle.widths, epochs * self.steps)

  def spent(self, epochs: int) -> dict[str, int]:
    """The tokens and model FLOPs per seed of the run's first `epochs` epochs over the cycles they
    span ({} for an image classifier): from the epochs, not accumulated, so a resumed run counts the
    same."""
    costs = [self.cost(c, min(epochs, c.last_epoch) - c.first_epoch) for c in self.cycles
             if c.first_epoch < epochs]
    return {k: sum(c[k] for c in costs) for k in ('tokens', 'flops') if k in costs[0]}

  def network(self, cycle: Cycle) -> dict[str, Any]:
    """What a checkpoint's metadata says of the network it holds (all that its shapes depend on:
    the family and its fields, blocks, classes, an image's channels, seeds), its h, and how it is
    trained."""
    m = self.config.model
    family = _listed({**{f: m[f] for f in config_lib.MODELS_BY_NAME[m.name]}, **cycle.widths})
    return {'model': m.name, **family, 'stage_sizes': list(cycle.stage_sizes), 'h': cycle.h,
            **self.task.network(), 'num_seeds': self.config.num_seeds,
            'optimizer': self.config.optimizer.name, 'operator': self.config.cycles.operator}

  @property
  def widens(self) -> bool:
    """Whether the config plans widths per cycle (config.cycles.widths): its lines and records name them."""
    return bool(self.config.cycles.widths)

  def abstract_state(self, meta) -> dict[str, Any]:
    return abstract_state(self.task.ds, meta, self.layout)


def abstract_state(ds, meta, layout: parallel.Layout | None = None):
  """The train state's shapes and dtypes for the network that `meta` (a checkpoint's metadata)
  names, whatever the config of this run says, laid out on `layout` by its rule (default: replicated
  on every device of this process's run), whatever the mesh that wrote it."""
  stored = meta['config']
  model = make_model(stored, meta['stage_sizes'], meta['num_classes'], meta['h'],
                     config_lib.widths_of(meta))
  example = tasks.of(ds).example(ds, meta)
  init = per_seed(lambda key: init_state(model, make_optimizer(stored), key, *example),
                  meta['num_seeds'])
  key = jax.random.key(0)  # its values are never used: shapes only
  keys = key if meta['num_seeds'] == 1 else jax.random.split(key, meta['num_seeds'])
  return (layout or parallel.Layout.all_devices()).abstract(jax.eval_shape(init, keys),
                                                            meta['num_seeds'])


class Data(NamedTuple):
  """Where the train steps' batches come from (mlres.input_pipeline: the devices' copy of the split,
  or the host's), and the held-out arrays padded to whole batches (with a 0/1 mask) on every device."""
  input: Any
  test: tuple[jax.Array, jax.Array, jax.Array]

  @classmethod
  def of(cls, setup: Setup) -> 'Data':
    train, test = setup.task.arrays(setup.config.eval_batch_size)
    return cls(input_pipeline.create(setup, train), setup.layout.replicate(test))


def compile_train_chunk(setup: Setup, model: nn.Module, state, source):
  """The chunk function compiled ahead of time for `model`'s architecture, taking its inputs from
  `source` (mlres.input_pipeline): it cannot retrace."""
  def one_seed(state, inputs, start, aug_key):
    return make_train_chunk(model, setup.tx, setup.lr_schedule, setup.task, aug_key, setup.chunk,
                            setup.layout, setup.steps, source.fetch)(state, inputs, start)
  chunk = setup.seeded(one_seed, (0, source.in_axes, None, 0))
  shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
  return jax.jit(lambda state, inputs, start: chunk(state, inputs, start, setup.keys.augment),
                 donate_argnums=0, out_shardings=(shardings, setup.layout.replicated)).lower(
      state, source.abstract(), 0).compile()


def compile_evaluate(setup: Setup, model: nn.Module, state, test):
  evaluate = setup.seeded(make_evaluate(model, setup.task, setup.config.eval_batch_size,
                                        setup.layout), (0, None, None, None))
  return jax.jit(evaluate, out_shardings=setup.layout.replicated).lower(state, *test).compile()


def compile_cycle(setup: Setup, data: Data, cycle: Cycle):
  """The cycle's train chunk and evaluation, compiled against its abstract state: no grown
  state is needed, so this can run before the cycle starts."""
  model = setup.model(cycle)
  state = setup.abstract_state({**setup.network(cycle), 'config': setup.config})
  return (compile_train_chunk(setup, model, state, data.input),
          compile_evaluate(setup, model, state, data.test))


class Programs:
  """A run's compiled programs: the first state, the growth between cycles, each epoch's batches,
  and every architecture's train chunk and evaluation.

  Ahead: the cycles' programs compile one after another in a background thread, in the order the
  cycles need them, so that each cycle's compile overlaps the training before it (the plain H200
  reference step of ResNet-122 took 21.6 s to compile). Otherwise each compiles when its first
  cycle starts, so that no compile slows the stepping beside it."""

  def __init__(self, setup: Setup, cycles, data: Data, ahead: bool | None = None):
    self.setup = setup
    self._compile = functools.partial(_timed, compile_cycle, setup, data)
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='mlres-compile')
    self._futures, self._handed_out = {}, set()
    if ahead is None:
      ahead = setup.config.compile_ahead == 'on' or (setup.config.compile_ahead == 'auto' and
                                                     jax.default_backend() != 'cpu')
    if ahead:
      for cycle in cycles:
        self._submit(cycle)

  def init(self):
    """The first cycle's train state (per seed), created where the layout puts it: no device
    holds more of it than its share."""
    s = self.setup
    model = s.model(s.cycles[0])
    init = s.seeded(lambda key: init_state(model, s.tx, key, *s.task.input))
    return _laid_out(s, init, s.keys.init)

  def grown(self, state, before: Cycle, cycle: Cycle):
    """The state of `before`'s network grown into `cycle`'s: deeper where the blocks double, then
    wider where the widths grow."""
    if cycle.stage_sizes != before.stage_sizes:
      state = self.grow(state)
    if cycle.widths != before.widths:
      state = self.widen(state, cycle)
    return state

  def grow(self, state):
    """The interpolated state, computed on the devices and laid out there by the rule."""
    return _laid_out(self.setup, self._grow, state)

  def widen(self, state, cycle: Cycle):
    """The state widened to `cycle`'s widths, each seed's copies split by its own draw (`widen_state`,
    `widening_seed`), computed on the devices and laid out there by the rule."""
    s, c = self.setup, self.setup.config
    one = functools.partial(widen_state, sizes=cycle.widths, tx=s.tx,
                            momentum=c.optimizer.momentum_at_interpolation,
                            operator=c.cycles.width_operator, noise=c.cycles.width_noise)
    seeds = [widening_seed(c.seed + k, cycle.index) for k in range(c.num_seeds)]
    return _laid_out(s, functools.partial(_each_seed, one, seeds), state)

  @functools.cached_property
  def _grow(self):
    s = self.setup
    model = s.model(s.cycles[0])
    return s.seeded(functools.partial(
        grow, tx=s.tx, momentum=s.config.optimizer.momentum_at_interpolation,
        operator=s.config.cycles.operator, stacks=getattr(model, 'stacks', None)))

  def _submit(self, cycle: Cycle) -> None:
    if cycle.architecture not in self._futures:  # a baseline's restarts keep their architecture
      self._futures[cycle.architecture] = self._pool.submit(self._compile, cycle)

  def get(self, cycle: Cycle, clock: 'Clock'):
    """(train chunk, evaluate, a note on their compile); the first time an architecture is asked
    for, its compile's seconds, and those training waited for it, go on the clock."""
    t = time.perf_counter()
    self._submit(cycle)
    (chunk, evaluate), seconds = self._futures[cycle.architecture].result()
    if cycle.architecture in self._handed_out:
      return chunk, evaluate, 'its compiled programs reused'
    self._handed_out.add(cycle.architecture)
    waited = min(time.perf_counter() - t, seconds)  # of the compile, not of the thread's hand-over
    clock.compile_seconds += seconds
    clock.compile_wait_seconds += waited
    return chunk, evaluate, f'compiled in {seconds:.1f} s, {waited:.1f} s of it waited for'

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    """Drops what has not started; on an error or a signal does not wait here for a compile under
    way (it cannot be stopped). The interpreter still joins it before exiting, unless the program
    leaves at once, as mlres.main does after a signal; an error's exit may wait for it."""
    self._pool.shutdown(wait=exc_type is None, cancel_futures=True)


def _laid_out(setup: Setup, fn, *args):
  """fn(*args) jitted with its outputs (a train state) laid out by the rule on their own shapes, so
  a grown state is never gathered whole onto one device."""
  shapes = jax.eval_shape(fn, *args)
  return jax.jit(fn, out_shardings=setup.shardings(shapes))(*args)


def _each_seed(fn, seeds: list[int], state):
  """fn(state, seed=seeds[0]) of one seed's state; of several (a leading seed axis), fn of each seed's
  with its own seed, stacked again. Unlike vmap, each seed may take another seed: a static argument."""
  if len(seeds) == 1:
    return fn(state, seed=seeds[0])
  each = [fn(jax.tree.map(lambda x: x[k], state), seed=seed) for k, seed in enumerate(seeds)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *each)


def _timed(fn, *args):
  t = time.perf_counter()
  return fn(*args), time.perf_counter() - t


@dataclasses.dataclass
class Clock:
  """A run's seconds over all its starts: stepping, compiling (and the part of it training waited
  for), and wall time. Saved with every checkpoint, so a resumed run's summary counts them all."""
  train_seconds: float = 0.0
  compile_seconds: float = 0.0
  compile_wait_seconds: float = 0.0
  wall_seconds: float = 0.0  # of the starts before this one
  started: float = dataclasses.field(default_factory=time.perf_counter)

  @classmethod
  def resumed(cls, meta) -> 'Clock':
    return cls(meta['train_seconds'], meta['compile_seconds'], meta['compile_wait_seconds'],
               meta['wall_seconds'])

  def seconds(self, stepping: float = 0.0) -> dict[str, float]:
    """The totals now, with `stepping` seconds not yet added to train_seconds."""
    return {'train_seconds': self.train_seconds + stepping, 'compile_seconds': self.compile_seconds,
            'compile_wait_seconds': self.compile_wait_seconds,
            'wall_seconds': self.wall_seconds + time.perf_counter() - self.started}


@dataclasses.dataclass(frozen=True)
class EpochSums:
  """A part-done epoch: all that continues it exactly. Sums per seed of the steps' losses (float64)
  and correct predictions, the learning rate of its first step, its stepping seconds so far, and
  in the first epoch after an interpolation the test-set sums of loss and correct predictions of
  the grown network before its first step."""
  steps: int = 0
  seconds: float = 0.0
  loss: Any = 0.0
  correct: Any = 0
  lr: float | None = None
  growth: tuple[Any, Any] | None = None

  def add(self, out, valid: int) -> 'EpochSums':
    """With the first `valid` steps of one chunk's host outputs added."""
    return dataclasses.replace(
        self, steps=self.steps + valid,
        loss=self.loss + np.asarray(out['loss'], np.float64)[..., :valid].sum(-1),
        correct=self.correct + np.asarray(out['correct'], np.int64)[..., :valid].sum(-1),
        lr=float(np.ravel(out['lr'])[0]) if self.lr is None else self.lr)

  def to_json(self) -> dict[str, Any]:
    return {'steps': self.steps, 'seconds': self.seconds, 'loss': np.asarray(self.loss).tolist(),
            'correct': np.asarray(self.correct).tolist(), 'lr': self.lr,
            'growth': self.growth and [np.asarray(x).tolist() for x in self.growth]}

  @classmethod
  def from_json(cls, d) -> 'EpochSums':
    growth = d['growth'] and tuple(np.asarray(x, np.float32) for x in d['growth'])
    return cls(d['steps'], d['seconds'], np.asarray(d['loss'], np.float64),
               np.asarray(d['correct'], np.int64), d['lr'], growth)


@dataclasses.dataclass
class Run:
  """A run in its workdir: what it is made of, its checkpoints, its clock, where it speaks, and how
  far it has trained."""
  setup: Setup
  ckpt: Checkpointer
  clock: Clock
  out: report.Output
  workdir: str
  config_json: dict[str, Any]
  done: int = 0                      # whole epochs
  partial: EpochSums | None = None   # what the next epoch starts from: a stopped one's steps,
                                     # or the test metrics of the network just grown

  def save(self, state, cycle: Cycle, epoch: int, partial: EpochSums | None = None,
           stepping: float = 0.0) -> None:
    """Checkpoints `state` after `epoch` whole epochs (and `partial`'s steps of the next), with
    `stepping` seconds not yet on the clock."""
    self.ckpt.save(_global_step(state), state, {
        'epoch': epoch, 'cycle': cycle.index, **self.setup.network(cycle),
        'steps_per_epoch': self.setup.steps, **self.clock.seconds(stepping),
        'config': self.config_json, 'data': self.setup.task.ds.fingerprint,
        **({'partial': partial.to_json()} if partial else {}),
        **({'input': input_pipeline.position(self.setup, _global_step(state))}
           if self.setup.input == 'host' else {})})

  def grows_into(self, cycle: Cycle) -> bool:
    """Whether `cycle` starts here with another architecture than the cycle before."""
    before = self.setup.cycles[cycle.index - 1] if cycle.index else cycle
    return (before.architecture != cycle.architecture and self.done == cycle.first_epoch and
            self.partial is None)

  def stop(self, signum: int, where: str, state) -> Interrupted:
    self.ckpt.wait()
    return Interrupted(signum, f'at {where}; saved the checkpoint of step {_global_step(state)} '
                       f'in {self.ckpt.directory}')


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains the config's cycle plan in `workdir`, resuming from its latest intact checkpoint."""
  clock = Clock()
  config_lib.validate(config, jax.device_count())
  layout = parallel.Layout.of(config)
  workdir = os.path.expanduser(workdir)
  setup = Setup.create(config, data_lib.load(config), layout)  # bad data: nothing written
  report.prepare_workdir(workdir)
  out = report.Output(parallel.is_main_process())
  out.say(f'{config.name} on {setup.task.description()}: JAX {jax.__version__} on '
          f'{jax.device_count()} {jax.devices()[0].device_kind} device(s), {jax.process_count()} '
          'process(es)')
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'),
                      [c.last_epoch * setup.steps for c in setup.cycles])
  run = Run(setup, ckpt, clock, out, workdir,
            json.loads(config.to_json_best_effort()))
  state = resume(run)
  finished = report.read_summary(os.path.join(workdir, 'summary.json'))
  if run.done == config.num_epochs and finished:
    ckpt.close()  # its summary stays the one of the run that trained it
    run.out.say(f'the run is finished: nothing to train, {os.path.join(workdir, "summary.json")} '
                'unchanged')
    return finished
  metrics = report.MetricWriter(workdir, run.done, run.out, config.tensorboard)
  data = Data.of(setup)
  todo = [c for c in setup.cycles if c.last_epoch > run.done]
  with StopSignals() as stop, Programs(setup, todo, data) as programs:
    state = programs.init() if state is None else state
    for cycle in todo:
      state, train_chunk, evaluate = start_cycle(run, state, cycle, programs, data)
      for epoch in range(max(run.done, cycle.first_epoch), cycle.last_epoch):
        state, sums = train_epoch(run, state, cycle, epoch, train_chunk, data, stop)
        metrics.write(epoch_record(setup, cycle, epoch, sums, evaluate(state, *data.test)),
                      config.num_epochs)
        end_epoch(run, state, cycle, epoch + 1, stop)
  ckpt.wait()
  ckpt.close()
  metrics.close()
  return write_summary(run, state, metrics)


def resume(run: Run):
  """The latest intact checkpoint's state, with `run` moved to where it stopped; None if none."""
  restored = run.ckpt.restore_latest(run.setup.abstract_state)
  if not restored:
    return None
  state, meta = restored
  check_resumable(meta, run)
  run.clock = dataclasses.replace(Clock.resumed(meta), started=run.clock.started)
  run.done = meta['epoch']
  run.partial = EpochSums.from_json(meta['partial']) if 'partial' in meta else None
  steps_in = f' and {run.partial.steps} steps' if run.partial else ''
  wide = f'{report.describe_widths(config_lib.widths_of(meta))}, ' if run.setup.widens else ''
  run.out.say(f'resuming from the checkpoint of step {meta["step"]}, after epoch {run.done}'
              f'{steps_in} ({report.blocks(meta["stage_sizes"])} blocks, {wide}h={meta["h"]:g})')
  return state


def start_cycle(run: Run, state, cycle: Cycle, programs: Programs, data: Data):
  """The cycle's programs, and its first state: grown from the last cycle's (deeper, wider) where the
  architecture changes here, its test metrics then taken before any step (the jump that the growth
  operator makes, kept in the next epoch's record)."""
  train_chunk, evaluate, note = programs.get(cycle, run.clock)
  if run.grows_into(cycle):
    state = programs.grown(state, run.setup.cycles[cycle.index - 1], cycle)
    run.partial = EpochSums(growth=jax.device_get(evaluate(state, *data.test)))
  num_seeds = run.setup.config.num_seeds
  run.out.say(report.cycle_line(cycle, count_params(state['params']) // num_seeds, num_seeds, note,
                                run.setup.cost(cycle), cycle.widths if run.setup.widens else None))
  layout = run.setup.layout
  if layout.sizes[sharding.FSDP] > 1:
    run.out.say(sharding.describe(state, layout.min_shard_size, num_seeds))
  return state, train_chunk, evaluate


def train_epoch(run: Run, state, cycle: Cycle, epoch: int, train_chunk, data: Data,
                stop: StopSignals):
  """Trains one epoch (or what a stopped run left of it) chunk by chunk, reading each chunk's
  outputs while the next one runs. Stops on a non-finite step; on a signal, saves the part-done
  epoch and raises Interrupted. Returns the state and the epoch's sums."""
  setup, t = run.setup, time.perf_counter()
  sums = run.partial if run.partial and epoch == run.done else EpochSums()
  earlier, pending = sums.seconds, None
  with report.progress(setup.steps, f'epoch {epoch + 1}/{setup.config.num_epochs}') as bar, \
      contextlib.closing(data.input.chunks(epoch, sums.steps)) as chunks:
    bar.update(sums.steps)
    for start, inputs in chunks:
      state, chunk_out = train_chunk(state, inputs, start)
      if pending:  # the previous chunk, so that this one is queued while the host waits
        sums = _absorb(run, sums, epoch, *pending)
      pending = (start, chunk_out)
      bar.update(min(setup.chunk, setup.steps - start))
      if stop.signum and start + setup.chunk < setup.steps:
        sums, running = _absorb(run, sums, epoch, *pending), time.perf_counter() - t
        run.save(state, cycle, epoch, dataclasses.replace(sums, seconds=earlier + running), running)
        raise run.stop(stop.signum, f'epoch {epoch + 1}, step {sums.steps} of {setup.steps}', state)
    sums = _absorb(run, sums, epoch, *pending)
  running = time.perf_counter() - t
  run.clock.train_seconds += running
  run.partial = None
  return state, dataclasses.replace(sums, seconds=earlier + running)


def _absorb(run: Run, sums: EpochSums, epoch: int, start: int, chunk_out) -> EpochSums:
  """`sums` with a chunk's outputs added, after checking that its steps were finite; steps past the
  epoch's end, computed only to fill the last chunk, are not looked at."""
  chunk_out = jax.device_get(chunk_out)
  valid = min(run.setup.chunk, run.setup.steps - start)
  finite = np.asarray(chunk_out['finite'])[..., :valid]
  if not finite.all():
    saved = run.ckpt.steps()
    *seed, step = np.argwhere(~finite)[0]
    raise FloatingPointError(
        f'non-finite loss or gradient at epoch {epoch + 1}, step {start + int(step) + 1} of '
        f'{run.setup.steps}{f" (seed {int(seed[0])})" if seed else ""}; nothing saved, '
        + (f'the last good checkpoint is step {saved[-1]}' if saved else 'and there is no checkpoint yet')
        + f' in {run.ckpt.directory}')
  return sums.add(chunk_out, valid)


def epoch_record(setup: Setup, cycle: Cycle, epoch: int, sums: EpochSums, test) -> dict[str, Any]:
  """The epoch's line of metrics.jsonl: means over seeds, and each seed's values where several."""
  per_seed = setup.task.metrics(sums, jax.device_get(test))
  record = {
      'task': setup.task.name, 'epoch': epoch + 1, 'cycle': cycle.index,
      'stage_sizes': list(cycle.stage_sizes),
      **({'widths': _listed(cycle.widths)} if setup.widens else {}), 'h': cycle.h, 'lr': sums.lr, **{k: float(np.mean(v)) for k, v in per_seed.items()},
      'epoch_seconds': sums.seconds, 'steps_per_second': sums.steps / sums.seconds}
  cost = setup.task.cost(cycle.stage_sizes, cycle.widths, sums.steps)
  if cost:  # a language model's tokens and model FLOPs so far, and its speed in tokens
    record |= {**setup.spent(epoch + 1), 'flops_per_token': cost['flops_per_token'],
               'tokens_per_second': cost['tokens'] / sums.seconds}
  if setup.config.num_seeds > 1:
    record['test_accuracy_ci95'] = report.ci95(per_seed['test_accuracy'])
    record['seeds'] = {k: np.asarray(v).tolist() for k, v in per_seed.items()}
  return record


def end_epoch(run: Run, state, cycle: Cycle, epochs_done: int, stop: StopSignals) -> None:
  """Checkpoints at the end of a cycle, every `checkpoint_every_epochs` and on a signal (then
  raises Interrupted)."""
  every = run.setup.config.checkpoint_every_epochs
  run.done = epochs_done
  if epochs_done == cycle.last_epoch or (every and epochs_done % every == 0) or stop.signum:
    run.save(state, cycle, epochs_done)
  if stop.signum:
    raise run.stop(stop.signum, f'the end of epoch {epochs_done}', state)


def write_summary(run: Run, state, metrics: report.MetricWriter) -> dict[str, Any]:
  """summary.json: the last epoch's test error (per seed where several), the clock, the network; a
  language model's tokens and model FLOPs, per cycle too."""
  config = run.setup.config
  final = metrics.last(config.num_epochs)
  costs = [run.setup.cost(c) for c in run.setup.cycles]
  summary = {
      'name': config.name, 'task': run.setup.task.name, 'dataset': config.dataset,
      'stage_sizes': [list(c.stage_sizes) for c in run.setup.cycles],
      **({'cycle_widths': [_listed(c.widths) for c in run.setup.cycles]} if run.setup.widens else {}),
      **({'cycle_costs': costs} if costs[0] else {}), **run.setup.spent(config.num_epochs),
      'test_error': 1.0 - final['test_accuracy'], 'test_accuracy': final['test_accuracy'],
      **(_seed_statistics(final) if config.num_seeds > 1 else {}), **run.setup.task.summary(final),
      **run.clock.seconds(),
      'data': run.setup.task.ds.fingerprint,
      'num_params': count_params(state['params']) // config.num_seeds, 'epochs': final['epoch'],
      'device': jax.devices()[0].device_kind, 'num_devices': run.setup.layout.num_devices,
      'num_processes': jax.process_count(), 'config': run.config_json}
  run.out.write_json(os.path.join(run.workdir, 'summary.json'), summary)
  return summary


def check_resumable(meta, run: Run) -> None:
  """Refuses a checkpoint of another run, or one this config cannot continue exactly. Other data
  (another corpus in data_dir, files edited since, pystdlib of another Python) is another run, which
  the config alone cannot tell: data_dir is operational, and the same path may hold other files."""
  setup, workdir = run.setup, run.workdir
  config, cycles = setup.config, setup.cycles
  changed = config_lib.differences(meta['config'], run.config_json)
  if changed and config.resume != 'any_config':
    raise config_lib.ConfigError(
        f'{workdir} holds a run of another config ({"; ".join(changed)}); use the config that wrote '
        'it, another workdir, or --config.resume=any_config to continue it with this one')
  reads = setup.task.ds.fingerprint
  if meta['data'] != reads:
    other = (f'the checkpoint of step {meta["step"]} in {workdir} was trained on '
             f'{data_lib.describe(meta["data"])}, but this run reads {data_lib.describe(reads)}')
    if config.resume != 'any_config':
      raise config_lib.ConfigError(f'{other}; give it the data that wrote it, another workdir, or '
                                   '--config.resume=any_config to continue it on this data')
    run.out.say(f'warning: {other}; continuing on this data (resume=any_config)')
  done = meta['epoch'] + (1 if meta.get('partial') else 0)
  planned = next((c for c in cycles if c.first_epoch < done <= c.last_epoch), None)
  ours = setup.network(planned or cycles[0])  # the widths this config plans for the checkpoint's epoch
  differ = lambda keys: [f'{k}: {meta.get(k, "absent")} -> {ours.get(k, "absent")}' for k in keys
                         if meta.get(k) != ours.get(k)]
  families = config_lib.MODELS_BY_NAME
  other = differ(dict.fromkeys(['model', *families[meta['model']], *families[ours['model']],
                                'num_classes', 'channels', 'num_seeds']))
  if other:
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} holds another network than this config '
        f'builds ({"; ".join(other)}); no config can continue it as another: use another workdir')
  trained = differ(('optimizer', 'operator'))
  if trained:
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} was trained with another optimizer or '
        f'growth operator than this config\'s ({"; ".join(trained)}); use the config that wrote it or '
        'another workdir')
  if planned is None or (tuple(meta['stage_sizes']), meta['h']) != (planned.stage_sizes, planned.h):
    plans = f'{report.blocks(planned.stage_sizes)} blocks at h = {planned.h:g}' if planned else 'no such epoch'
    raise CheckpointError(
        f'the checkpoint of epoch {meta["epoch"]} in {workdir} holds {report.blocks(meta["stage_sizes"])} '
        f'blocks at h = {meta["h"]:g} but this config plans {plans} there; '
        'use another workdir or the config that wrote it')
  # The learning rate, the augmentation and the checkpoints kept count global steps.
  if meta['steps_per_epoch'] != setup.steps:
    field = setup.task.steps_field
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} was trained in epochs of '
        f'{meta["steps_per_epoch"]} steps but this config\'s {field}={_field(config, field)} makes '
        f'epochs of {setup.steps}; its learning-rate schedule counts steps: resume with the {field} '
        'that wrote it')
  if setup.input == 'host' and 'input' in meta:  # it reads next what the checkpoint's run would have
    input_pipeline.check_position(setup, meta['input'], meta['step'])
  partial = meta.get('partial')
  if partial and partial['steps'] % setup.chunk:
    raise CheckpointError(
        f'the checkpoint of step {meta["step"]} in {workdir} stopped {partial["steps"]} steps into '
        f'an epoch, which this config\'s chunks of {setup.chunk} steps cannot continue; resume with the '
        'steps_per_dispatch that wrote it')


def _field(config, dotted: str):
  """config.a.b for 'a.b'."""
  return functools.reduce(lambda node, key: node[key], dotted.split('.'), config)


def _listed(fields: dict[str, Any]) -> dict[str, Any]:
  """Model fields as JSON holds them: tuples as lists."""
  return {f: list(v) if isinstance(v, tuple) else v for f, v in fields.items()}


def _global_step(state) -> int:
  return int(np.ravel(jax.device_get(state['step']))[0])  # the same for every seed


def _seed_statistics(final) -> dict[str, Any]:
  """Each seed's test error, their mean and the half-width of its 95% t-interval."""
  errors = [1.0 - a for a in final['seeds']['test_accuracy']]
  return {'test_error_seeds': errors, 'test_error_ci95': report.ci95(errors)}
