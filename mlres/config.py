"""The configuration: every field with its default, the paper's experiments, and validation.

Experiment files in configs/ are thin: they call `paper(...)` or override `default()`. They
import only from this installed package, so a config file works from any directory.
"""
from __future__ import annotations

import json

import ml_collections

from mlres import data
from mlres.model import RESNET_WIDTHS, WIDE_RESNET_WIDTHS, check_architecture

DTYPES = ('float32', 'bfloat16')
MOMENTUM_AT_INTERPOLATION = ('fresh', 'interpolate')
RESUME = ('same_config', 'any_config')
COMPILE_AHEAD = ('auto', 'on', 'off')
# Fields that change how a run is carried out, not what it computes: a run may resume with others.
OPERATIONAL = ('name', 'data_dir', 'eval_batch_size', 'steps_per_dispatch', 'checkpoint_every_epochs',
               'compilation_cache', 'compile_ahead', 'resume', 'distributed')

# Tables 3 and 4: name -> (stage sizes of the three cycles, widths, printed name).
_CHAINS = {'14': ((2, 2, 2),) * 3, '50': ((8, 8, 8),) * 3, '50i': ((2, 2, 2), (4, 4, 4), (8, 8, 8)),
           '32': ((5, 5, 5),) * 3, '122': ((20, 20, 20),) * 3,
           '122i': ((5, 5, 5), (10, 10, 10), (20, 20, 20))}
MODELS = {f'{prefix}{depth}': (chain, widths, f'{printed}-{depth.replace("i", "-i")}')
          for prefix, widths, printed in (('res', RESNET_WIDTHS, 'ResNet'),
                                          ('wres', WIDE_RESNET_WIDTHS, 'WResNet'))
          for depth, chain in _CHAINS.items()}
# Section 5 and Appendix A: batch size and crop padding per dataset.
PAPER_DATASETS = {'cifar10': (100, 4), 'cifar100': (100, 4), 'stl10': (32, 12)}


class ConfigError(ValueError):
  """A configuration that cannot run; the message names the field, the value and what is allowed."""


def default() -> ml_collections.ConfigDict:
  """The embedded default: a multi-level ResNet on scikit-learn's digits, two minutes on a CPU."""
  c = ml_collections.ConfigDict()
  c.name = 'ResNet-50-i'
  c.dataset = 'digits'        # digits | synthetic | cifar10 | cifar100 | stl10
  c.data_dir = ''             # tfds data directory; '' for TFDS_DATA_DIR or ~/tensorflow_datasets
  c.synthetic = ml_collections.ConfigDict(dict(
      num_train=2000, num_test=500, image_size=32, channels=3, num_classes=10))
  c.augment = ml_collections.ConfigDict(dict(pad=1, flip=False))  # digits: no mirror images
  c.model = ml_collections.ConfigDict(dict(widths=(16, 32, 64), h=1.0, dtype='float32'))
  # One entry per cycle; stage sizes double (interpolation) or stay (a baseline's LR restart).
  c.cycles = ml_collections.ConfigDict(dict(
      stage_sizes=((2, 2, 2), (4, 4, 4), (8, 8, 8)), epochs=(12, 10, 10)))
  c.num_epochs = 32
  c.batch_size = 32
  c.eval_batch_size = 1000
  c.optimizer = ml_collections.ConfigDict(dict(
      eta_max=0.5, eta_min=0.001, momentum=0.9,
      weight_decay=2e-4,  # coupled L2 on conv and dense kernels: added to their gradient
      reset_lr=True,      # restart the cosine each cycle (False: one cosine, Fig. 10)
      momentum_at_interpolation='fresh'))  # or 'interpolate': momentum copied like the weights
  c.seed = 0
  # Independent runs trained together, vmapped over a leading seed axis of the train state;
  # run k is exactly config.seed + k alone (own initialization, data order, augmentation).
  c.num_seeds = 1
  # Train steps per jitted call at most (lax.scan over a chunk of the epoch); 0: 1 on CPU, 50
  # elsewhere. Calls are of one size; steps the last one runs past the epoch's end are discarded.
  c.steps_per_dispatch = 0
  c.checkpoint_every_epochs = 10  # besides the one at the end of every cycle; 0: cycle ends only
  c.compilation_cache = '~/.cache/mlres/jax'  # JAX's persistent compilation cache; '' disables
  # 'on': every cycle's programs compile in a background thread from the start, each overlapping
  # the training before it; 'off': each when its cycle starts. 'auto': on, except on a CPU, where
  # the compile would share the cores with the stepping (and bias its timings).
  c.compile_ahead = 'auto'
  # A workdir's run resumes only with the config that wrote it (fields in OPERATIONAL aside);
  # 'any_config' continues it with this one.
  c.resume = 'same_config'
  # jax.distributed.initialize() for a multi-host run; also done when the environment names one
  # (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a SLURM step of several tasks).
  c.distributed = False
  return c


def paper(dataset: str, model: str) -> ml_collections.ConfigDict:
  """One row of Table 3 or 4: `paper('cifar100', 'res122i')` is ResNet-122-i on CIFAR-100."""
  if dataset not in PAPER_DATASETS:
    raise ConfigError(f'dataset={dataset!r}: the paper used {", ".join(PAPER_DATASETS)}')
  if model not in MODELS:
    raise ConfigError(f'model={model!r}: the paper\'s models are {", ".join(MODELS)}')
  chain, widths, printed = MODELS[model]
  batch_size, pad = PAPER_DATASETS[dataset]
  c = default()
  c.name = printed
  c.dataset = dataset
  c.augment.pad, c.augment.flip = pad, True
  c.model.widths = widths
  c.cycles.stage_sizes, c.cycles.epochs = chain, (60, 50, 50)
  c.num_epochs = 160
  c.batch_size = batch_size
  return c


def validate(c, num_devices: int = 1) -> None:
  """Raises ConfigError for the first field that cannot work, before any data or compile."""
  def fail(field, value, allowed):
    raise ConfigError(f'config.{field}={value!r}: {allowed}')

  def positive_int(field, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      fail(field, value, 'must be a positive integer')

  if c.dataset not in data.DATASETS:
    fail('dataset', c.dataset, f'must be one of {", ".join(data.DATASETS)}')
  for field in ('num_train', 'num_test', 'image_size', 'channels', 'num_classes'):
    positive_int(f'synthetic.{field}', c.synthetic[field])
  if c.synthetic.num_classes < 2:
    fail('synthetic.num_classes', c.synthetic.num_classes, 'must be at least 2')
  sequences = lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, (tuple, list)) for x in v)
  if not sequences(c.cycles.stage_sizes):
    fail('cycles.stage_sizes', c.cycles.stage_sizes, 'must hold one tuple of stage sizes per cycle, '
         'e.g. ((2, 2, 2), (4, 4, 4))')
  stage_sizes, epochs = tuple(map(tuple, c.cycles.stage_sizes)), tuple(c.cycles.epochs)
  if not stage_sizes:
    fail('cycles.stage_sizes', stage_sizes, 'needs at least one cycle')
  if len(epochs) != len(stage_sizes):
    fail('cycles.epochs', epochs, f'needs one entry per cycle ({len(stage_sizes)})')
  for i, (sizes, n) in enumerate(zip(stage_sizes, epochs)):
    try:
      check_architecture(sizes, c.model.widths, 1, c.model.h)
    except ValueError as e:
      message = str(e)
      if message.startswith('h='):
        fail('model.h', c.model.h, message.partition(': ')[2])
      if message.startswith('widths='):
        fail('model.widths', c.model.widths, message)
      fail(f'cycles.stage_sizes[{i}]', sizes, message)
    positive_int(f'cycles.epochs[{i}]', n)
  for i in range(1, len(stage_sizes)):
    before, after = stage_sizes[i - 1], stage_sizes[i]
    if after != before and after != tuple(2 * n for n in before):
      fail(f'cycles.stage_sizes[{i}]', after,
           f'must equal the previous cycle\'s {before} or double it {tuple(2 * n for n in before)}')
    if after != before and any(n == 1 for n in before[1:]):
      fail(f'cycles.stage_sizes[{i - 1}]', before,
           'cannot be interpolated: a downsampling stage of one block has no block of its '
           'own shape to copy; give every stage after the first at least two blocks')
  positive_int('num_epochs', c.num_epochs)
  if sum(epochs) != c.num_epochs:
    fail('cycles.epochs', epochs, f'must add up to num_epochs={c.num_epochs}, not {sum(epochs)}')
  positive_int('num_seeds', c.num_seeds)
  for field in ('batch_size', 'eval_batch_size'):
    positive_int(field, c[field])
    if c[field] % num_devices:
      fail(field, c[field], f'the global batch must divide by the {num_devices} devices of this run; '
           f'use a multiple of {num_devices}')
  for field, value in (('seed', c.seed), ('steps_per_dispatch', c.steps_per_dispatch),
                       ('checkpoint_every_epochs', c.checkpoint_every_epochs),
                       ('augment.pad', c.augment.pad)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      fail(field, value, 'must be a non-negative integer')
  o = c.optimizer
  if not 0 < o.eta_max < float('inf'):
    fail('optimizer.eta_max', o.eta_max, 'must be a positive finite number')
  if not 0 <= o.eta_min <= o.eta_max:
    fail('optimizer.eta_min', o.eta_min, f'must lie in [0, eta_max={o.eta_max}]')
  if not 0 <= o.momentum < 1:
    fail('optimizer.momentum', o.momentum, 'must lie in [0, 1)')
  if not 0 <= o.weight_decay < float('inf'):
    fail('optimizer.weight_decay', o.weight_decay, 'must be a non-negative finite number')
  if o.momentum_at_interpolation not in MOMENTUM_AT_INTERPOLATION:
    fail('optimizer.momentum_at_interpolation', o.momentum_at_interpolation,
         f'must be one of {", ".join(MOMENTUM_AT_INTERPOLATION)}')
  if c.model.dtype not in DTYPES:
    fail('model.dtype', c.model.dtype, f'must be one of {", ".join(DTYPES)}')
  if not isinstance(c.distributed, bool):
    fail('distributed', c.distributed, 'must be True or False')
  if c.resume not in RESUME:
    fail('resume', c.resume, f'must be one of {", ".join(RESUME)}')
  if c.compile_ahead not in COMPILE_AHEAD:
    fail('compile_ahead', c.compile_ahead, f'must be one of {", ".join(COMPILE_AHEAD)}')


def differences(stored: dict, current: dict) -> list[str]:
  """'field: stored -> current' for every field (OPERATIONAL aside) in which two configs differ."""
  def flat(d, prefix=''):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
    return out
  a, b = flat(stored), flat(current)
  return [f'{k}: {a.get(k, "absent")} -> {b.get(k, "absent")}' for k in sorted(set(a) | set(b))
          if k not in OPERATIONAL and a.get(k) != b.get(k)]


def stale(summary: dict, config) -> list[str]:
  """How a finished run's summary differs from what `config` would train (OPERATIONAL aside)."""
  return differences(summary['config'], json.loads(config.to_json_best_effort()))
