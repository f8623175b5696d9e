"""The configuration: every field with its default, the paper's experiments, and validation.

Experiment files in configs/ are thin: they call `paper(...)` or override `default()`. They
import only from this installed package, so a config file works from any directory.
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import ml_collections

from mlres import data
from mlres.growth import width as width_lib
from mlres.growth.depth import OPERATORS
from mlres.gpt import check_gpt
from mlres.model import RESNET_WIDTHS, WIDE_RESNET_WIDTHS, check_architecture
from mlres.sharding import MIN_SHARD_SIZE
from mlres.vit import check_patches, check_vit

DTYPES = ('float32', 'bfloat16')
MOMENTUM_AT_INTERPOLATION = ('fresh', 'interpolate')
RESUME = ('same_config', 'any_config')
COMPILE_AHEAD = ('auto', 'on', 'off')
INPUTS = ('auto', 'device', 'host')
# config.model and config.optimizer by name: each family's own fields and their defaults.
MODELS_BY_NAME = {'resnet': dict(widths=RESNET_WIDTHS),
                  'vit': dict(width=64, num_heads=4, mlp_dim=128, patch_size=4, scan_blocks=False),
                  'gpt': dict(width=64, num_heads=4, mlp_dim=256, context=64, scan_blocks=False)}
# The family's fields that a cycle may widen (config.cycles.widths).
WIDTH_FIELDS = {'resnet': ('widths',), 'vit': ('width', 'num_heads', 'mlp_dim'),
                'gpt': ('width', 'num_heads', 'mlp_dim')}
OPTIMIZERS = {'sgd': dict(momentum=0.9), 'adamw': dict(b1=0.9, b2=0.999, eps=1e-8)}
# The fields every optimizer has, with their defaults.
OPTIMIZER_SHARED = dict(
    eta_max=0.5, eta_min=0.001,
    # Steps of linear warmup to eta_max before each cycle's cosine (with reset_lr=False, before the
    # run's one cosine); shorter than the cycle. 0: the paper's schedule.
    warmup_steps=0,
    # sgd: coupled L2 on conv and dense kernels and embeddings (mlres.train.DECAYED), added to their
    # gradient before momentum; adamw: decoupled decay of the same leaves, scaled by the learning rate.
    weight_decay=2e-4,
    # The gradient scaled to this global norm where it is larger, per seed, before the optimizer
    # (and before SGD's weight decay); 0: no clipping.
    clip_norm=0.0,
    reset_lr=True,  # restart the cosine each cycle (False: one cosine, Fig. 10)
    # 'interpolate': every params-shaped part of the optimizer state (SGD's momentum, Adam's
    # moments) goes through the cycle's growth operator like the weights (a widening's as the
    # gradients it sums, mlres.widen_opt_state); 'fresh': started anew.
    momentum_at_interpolation='fresh')
# Fields that change how a run is carried out, not what it computes: a run may resume with others.
OPERATIONAL = ('name', 'data_dir', 'download', 'data_url', 'eval_batch_size', 'steps_per_dispatch',
               'checkpoint_every_epochs', 'compilation_cache', 'compile_ahead', 'resume', 'distributed',
               'tensorboard', 'mesh.seeds', 'mesh.data', 'mesh.fsdp', 'mesh.min_shard_size')
# The axes of config.mesh (mlres.sharding).
MESH_AXES = ('seeds', 'data', 'fsdp')

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
  c.dataset = 'digits'  # digits | synthetic | cifar10 | cifar100 | stl10 | imagefolder | pystdlib | text | tokens
  # The published datasets' folder; '' searches TFDS_DATA_DIR or ~/tensorflow_datasets, then
  # $MLRES_DATA_DIR or ~/.cache/mlres/data. A dataset in none is downloaded into the last (docs/data.md).
  c.data_dir = ''
  c.download = True           # False: never touch the network; a dataset not found is an error
  c.data_url = ''             # a mirror to fetch the archives from, by file name; '' for the published URLs
  c.synthetic = ml_collections.ConfigDict(dict(
      num_train=2000, num_test=500, image_size=32, channels=3, num_classes=10))
  # Byte corpora (pystdlib, text): an epoch is `steps_per_epoch` steps of windows at random offsets;
  # evaluation reads `eval_windows` fixed, non-overlapping windows spread over the validation split
  # (0: all of them).
  c.text = ml_collections.ConfigDict(dict(steps_per_epoch=100, eval_windows=0))
  c.augment = ml_collections.ConfigDict(dict(pad=1, flip=False))  # digits: no mirror images
  # dataset='imagefolder': the side its images are cropped and resized to on the host.
  c.image_size = 224
  c.model = model('resnet')
  # One entry per cycle; stage sizes double (interpolation) or stay (a baseline's LR restart). A
  # ViT has one stack: ((2,), (4,), (8,)). The operator fills the new blocks (mlres.growth.depth).
  # widths: none (config.model's widths in every cycle), or one dict per cycle of the model's width
  # fields that differ from config.model's in that cycle (WIDTH_FIELDS: a ResNet's widths, a ViT's
  # or GPT's width, num_heads, mlp_dim), e.g. ({'width': 64, 'num_heads': 2, 'mlp_dim': 256}, {}, {}):
  # half the width, then config.model's. A cycle whose widths grow starts from the cycle before
  # widened by width_operator (mlres.widen: 'clone' exact, 'zero' where exact); clone's copies are
  # split unevenly by width_noise (0: exact copies, which train as one unit), seeded by the run's
  # seed and the cycle.
  c.cycles = ml_collections.ConfigDict(dict(
      stage_sizes=((2, 2, 2), (4, 4, 4), (8, 8, 8)), epochs=(12, 10, 10), operator='copy',
      widths=(), width_operator='clone', width_noise=0.1))
  c.num_epochs = 32
  c.batch_size = 32
  c.eval_batch_size = 1000
  c.optimizer = optimizer('sgd')
  c.seed = 0
  # Independent runs trained together, vmapped over a leading seed axis of the train state;
  # run k is exactly config.seed + k alone (own initialization, data order, augmentation).
  c.num_seeds = 1
  # Train steps per jitted call at most (lax.scan over a chunk of the epoch); 0: 1 on CPU, 50
  # elsewhere. Calls are of one size; steps the last one runs past the epoch's end are discarded.
  c.steps_per_dispatch = 0
  # Where each step's batch is read (mlres.input_pipeline): 'device' keeps the training split on every
  # device and gathers there (fastest); 'host' reads each process's rows of every batch on the host,
  # in an order of its own, while the devices step (for data larger than the devices); 'auto' keeps a
  # split of up to 1 GiB on the devices.
  c.input = 'auto'
  # The devices as a mesh (mlres.sharding, docs/scaling.md): `seeds` splits the num_seeds seeds among
  # groups of devices, `data` and `fsdp` together split every batch, and `fsdp` also splits each leaf
  # of the train state of at least min_shard_size elements along one dimension (FSDP). -1: the
  # devices the other axes leave. The default, every device on `data`, replicates the state.
  c.mesh = ml_collections.ConfigDict(dict(seeds=1, data=-1, fsdp=1, min_shard_size=MIN_SHARD_SIZE))
  c.checkpoint_every_epochs = 10  # besides the one at the end of every cycle; 0: cycle ends only
  # JAX's persistent compilation cache: JAX's own $JAX_COMPILATION_CACHE_DIR where set, else mlres's
  # folder; '' disables it.
  c.compilation_cache = os.environ.get('JAX_COMPILATION_CACHE_DIR') or '~/.cache/mlres/jax'
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
  # TensorBoard event files of the per-epoch metrics in the workdir, when tensorboardX is installed.
  c.tensorboard = True
  return c


def model(name: str, **fields) -> ml_collections.ConfigDict:
  """config.model of a family ('resnet', 'vit' or 'gpt'): h, the compute dtype and the family's
  fields."""
  # h: the initial explicit step size, halved at each interpolation. dtype: float32 or bfloat16
  # compute, with float32 parameters.
  return ml_collections.ConfigDict(dict(name=name, h=1.0, dtype='float32', **MODELS_BY_NAME[name]) | fields)


def optimizer(name: str, **fields) -> ml_collections.ConfigDict:
  """config.optimizer by name ('sgd', the paper's, or 'adamw'), with the learning rates and the
  state at interpolation that every optimizer shares."""
  return ml_collections.ConfigDict(dict(name=name, **OPTIMIZER_SHARED, **OPTIMIZERS[name]) | fields)


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


# The ViT's chains: the multi-level one and its first- and last-cycle baselines, per dataset.
VIT_CHAINS = {'digits': (2, 4, 8), 'cifar10': (3, 6, 12), 'cifar100': (3, 6, 12)}


def vit(dataset: str, variant: str = 'i') -> ml_collections.ConfigDict:
  """A multi-level ViT (variant 'i') or its 'first'- or 'last'-cycle baseline, trained with AdamW.

  On digits a small one (width 64, 4 heads, patches of 2x2: 16 tokens) that trains on a CPU in
  minutes, without the random crop: shifted by a pixel, an 8x8 digit moves its patches off their
  position embeddings (docs/growth.md has the figures). On CIFAR the width, heads and MLP of ViT-Tiny (192, 3, 768) with 4x4 patches (64
  tokens of 32x32 images), grown to ViT-Tiny's 12 blocks from 3, under the paper's protocol.
  """
  if dataset not in VIT_CHAINS:
    raise ConfigError(f'dataset={dataset!r}: the ViT configs are for {", ".join(VIT_CHAINS)}')
  depths = _variant(VIT_CHAINS[dataset], variant)
  if dataset == 'digits':
    c = default()
    c.model = model('vit', width=64, num_heads=4, mlp_dim=128, patch_size=2)
    c.augment.pad = 0
  else:
    c = paper(dataset, 'res50i')
    c.model = model('vit', width=192, num_heads=3, mlp_dim=768, patch_size=4)
    c.batch_size = 128
  c.name = f'ViT-{depths[-1]}' + ('-i' if variant == 'i' else '')
  c.cycles.stage_sizes = tuple((n,) for n in depths)
  c.optimizer = optimizer('adamw', eta_max=3e-3 if dataset == 'digits' else 1e-3, eta_min=1e-5,
                          weight_decay=0.05)
  return c


def _variant(chain: tuple[int, ...], variant: str) -> tuple[int, ...]:
  """One stack's blocks per cycle: the multi-level `chain` ('i'), or its first or last depth kept."""
  variants = {'first': (chain[0],) * len(chain), 'last': (chain[-1],) * len(chain), 'i': chain}
  if variant not in variants:
    raise ConfigError(f'variant={variant!r}: one of {", ".join(variants)}')
  return variants[variant]


# The GPT's chains (blocks per cycle): 'cpu' and 'long' train on a 2-core CPU, 'gpu' is for a device.
GPT_CHAINS = {'cpu': (1, 2, 4), 'long': (1, 2, 4), 'gpu': (3, 6, 12)}


def gpt(variant: str = 'i', size: str = 'cpu', dataset: str = 'pystdlib') -> ml_collections.ConfigDict:
  """A multi-level GPT on bytes (variant 'i') or its 'first'- or 'last'-cycle baseline, with AdamW.

  'cpu': 1, 2, then 4 blocks of width 128 (4 heads, MLP 512), context 128, batch 32; 12 epochs
  (4/4/4) of 165 steps, 8.1M tokens (0.84 passes over pystdlib's train split), every validation
  window read each epoch so that the figure compares with the compressors' (python -m mlres.data
  baselines). 'long': the same model for 330 steps an epoch. Both warm up for 50 steps at every cycle
  and clip the gradient at norm 1, as language models are trained; their sizes come from the search
  in docs/growth.md. 'gpu': width 384, 6 heads, context 256, batch 64, 160 epochs of 200 steps (the
  paper's 60/50/50 split).
  """
  if size not in GPT_CHAINS:
    raise ConfigError(f'size={size!r}: one of {", ".join(GPT_CHAINS)}')
  depths = _variant(GPT_CHAINS[size], variant)
  c = default()
  c.dataset = dataset
  c.name = f'GPT-{depths[-1]}' + ('-i' if variant == 'i' else '')
  c.cycles.stage_sizes = tuple((n,) for n in depths)
  c.optimizer = optimizer('adamw', eta_max=3e-3, eta_min=1e-5, weight_decay=0.05)
  if size == 'gpu':
    c.model = model('gpt', width=384, num_heads=6, mlp_dim=1536, context=256)
    c.cycles.epochs, c.num_epochs = (60, 50, 50), 160
    c.text.update(dict(steps_per_epoch=200, eval_windows=1024))
    c.batch_size, c.eval_batch_size = 64, 256
    c.optimizer.eta_max = 1e-3
    return c
  c.model = model('gpt', width=128, num_heads=4, mlp_dim=512, context=128)
  c.cycles.epochs, c.num_epochs = (4, 4, 4), 12
  c.text.update(dict(steps_per_epoch=165 if size == 'cpu' else 330, eval_windows=0))
  c.eval_batch_size = 256
  c.optimizer.update(dict(warmup_steps=50, clip_norm=1.0))
  return c


def validate(c, num_devices: int = 1) -> None:
  """Raises ConfigError for the first field that cannot work, before any data or compile."""
  def fail(field, value, allowed):
    raise ConfigError(f'config.{field}={value!r}: {allowed}')

  def positive_int(field, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      fail(field, value, 'must be a positive integer')

  def non_negative_int(field, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      fail(field, value, 'must be a non-negative integer')

  if c.dataset not in data.DATASETS:
    fail('dataset', c.dataset, f'must be one of {", ".join(data.DATASETS)}')
  lm = c.dataset in data.TEXT
  if lm != (c.model.get('name') == 'gpt'):
    fail('model.name', c.model.get('name'), f'dataset {c.dataset!r} needs a gpt model' if lm else
         f'a gpt is a language model of bytes: use dataset {" or ".join(map(repr, data.TEXT))}, or a '
         f'resnet or a vit for {c.dataset!r}')
  positive_int('text.steps_per_epoch', c.text.steps_per_epoch)
  positive_int('image_size', c.image_size)
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
  m = c.model
  if m.get('name') not in MODELS_BY_NAME:
    fail('model.name', m.get('name'), f'must be one of {", ".join(MODELS_BY_NAME)}')
  fields = set(MODELS_BY_NAME[m.name]) | {'name', 'h', 'dtype'}
  if set(m) != fields:
    fail('model', sorted(m), f'a {m.name} takes the fields {", ".join(sorted(fields))}: build it '
         f'with mlres.config.model({m.name!r}, ...)')
  widths = _check_widths(c, len(stage_sizes), fail)
  for i, (sizes, n) in enumerate(zip(stage_sizes, epochs)):
    _check_model(m, i, sizes, fail, widths[i] if widths else {})
    positive_int(f'cycles.epochs[{i}]', n)
  _check_widening(c, widths, fail)
  for i in range(1, len(stage_sizes)):
    before, after = stage_sizes[i - 1], stage_sizes[i]
    if after != before and after != tuple(2 * n for n in before):
      fail(f'cycles.stage_sizes[{i}]', after,
           f'must equal the previous cycle\'s {before} or double it {tuple(2 * n for n in before)}')
    if after != before and m.name == 'resnet' and any(n == 1 for n in before[1:]):
      fail(f'cycles.stage_sizes[{i - 1}]', before,
           'cannot be interpolated: a downsampling stage of one block has no block of its '
           'own shape to copy; give every stage after the first at least two blocks')
  if c.cycles.operator not in OPERATORS:
    fail('cycles.operator', c.cycles.operator, f'must be one of {", ".join(OPERATORS)}')
  positive_int('num_epochs', c.num_epochs)
  if sum(epochs) != c.num_epochs:
    fail('cycles.epochs', epochs, f'must add up to num_epochs={c.num_epochs}, not {sum(epochs)}')
  positive_int('num_seeds', c.num_seeds)
  sizes = mesh_sizes(c.mesh, num_devices)
  if c.num_seeds % sizes['seeds']:
    fail('num_seeds', c.num_seeds, f'mesh.seeds={sizes["seeds"]} groups of devices share the seeds, so '
         f'they must divide them; use a multiple of {sizes["seeds"]}')
  split = sizes['data'] * sizes['fsdp']  # the devices one seed's batch is split over
  for field in ('batch_size', 'eval_batch_size'):
    positive_int(field, c[field])
    if c[field] % split and split == num_devices and sizes['fsdp'] == 1:
      fail(field, c[field], f'the global batch must divide by the {num_devices} devices of this run; '
           f'use a multiple of {num_devices}')
    if c[field] % split:
      fail('mesh.fsdp' if sizes['fsdp'] > 1 else 'mesh.data', sizes['fsdp' if sizes['fsdp'] > 1 else 'data'],
           f'a batch is split over mesh.data x mesh.fsdp = {sizes["data"]} x {sizes["fsdp"]} devices, '
           f'which must divide {field}={c[field]}')
  for field, value in (('seed', c.seed), ('steps_per_dispatch', c.steps_per_dispatch),
                       ('checkpoint_every_epochs', c.checkpoint_every_epochs),
                       ('augment.pad', c.augment.pad), ('text.eval_windows', c.text.eval_windows)):
    non_negative_int(field, value)
  o = c.optimizer
  if o.get('name') not in OPTIMIZERS:
    fail('optimizer.name', o.get('name'), f'must be one of {", ".join(OPTIMIZERS)}')
  fields = {'name', *OPTIMIZER_SHARED, *OPTIMIZERS[o.name]}
  if set(o) != fields:
    fail('optimizer', sorted(o), f'{o.name} takes the fields {", ".join(sorted(fields))}: build it '
         f'with mlres.config.optimizer({o.name!r}, ...)')
  if not 0 < o.eta_max < float('inf'):
    fail('optimizer.eta_max', o.eta_max, 'must be a positive finite number')
  if not 0 <= o.eta_min <= o.eta_max:
    fail('optimizer.eta_min', o.eta_min, f'must lie in [0, eta_max={o.eta_max}]')
  for field in OPTIMIZERS[o.name]:
    if field != 'eps' and not 0 <= o[field] < 1:
      fail(f'optimizer.{field}', o[field], 'must lie in [0, 1)')
  if o.name == 'adamw' and not 0 < o.eps < float('inf'):
    fail('optimizer.eps', o.eps, 'must be a positive finite number')
  for field in ('weight_decay', 'clip_norm'):
    if not 0 <= o[field] < float('inf'):
      fail(f'optimizer.{field}', o[field], 'must be a non-negative finite number')
  non_negative_int('optimizer.warmup_steps', o.warmup_steps)
  if lm:  # its steps per epoch are the config's own; an image dataset's are known once it is read
    check_warmup(c, c.text.steps_per_epoch)
  if o.momentum_at_interpolation not in MOMENTUM_AT_INTERPOLATION:
    fail('optimizer.momentum_at_interpolation', o.momentum_at_interpolation,
         f'must be one of {", ".join(MOMENTUM_AT_INTERPOLATION)}')
  if c.model.dtype not in DTYPES:
    fail('model.dtype', c.model.dtype, f'must be one of {", ".join(DTYPES)}')
  for field in ('distributed', 'tensorboard', 'download'):
    if not isinstance(c[field], bool):
      fail(field, c[field], 'must be True or False')
  if c.resume not in RESUME:
    fail('resume', c.resume, f'must be one of {", ".join(RESUME)}')
  if c.input not in INPUTS:
    fail('input', c.input, f'must be one of {", ".join(INPUTS)}')
  if c.compile_ahead not in COMPILE_AHEAD:
    fail('compile_ahead', c.compile_ahead, f'must be one of {", ".join(COMPILE_AHEAD)}')
  if not isinstance(c.data_url, str) or c.data_url and not c.data_url.startswith(('http://', 'https://')):
    fail('data_url', c.data_url, "must be '' (the published URLs) or a base URL that starts with "
         'http:// or https://')


def mesh_sizes(mesh, num_devices: int) -> dict[str, int]:
  """config.mesh's axis sizes on `num_devices` devices, its -1 given the devices the others leave;
  raises ConfigError naming the field that cannot work."""
  fields = {'seeds', 'data', 'fsdp', 'min_shard_size'}
  if set(mesh) != fields:
    raise ConfigError(f'config.mesh={sorted(mesh)}: takes the fields {", ".join(sorted(fields))}')
  size = mesh.min_shard_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 0:
    raise ConfigError(f'config.mesh.min_shard_size={size!r}: must be a non-negative integer (elements)')
  sizes = {a: mesh[a] for a in MESH_AXES}
  for axis, n in sizes.items():
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 and n != -1:
      raise ConfigError(f'config.mesh.{axis}={n!r}: must be a positive integer, or -1 for the devices '
                        'the other axes leave')
  free = [a for a, n in sizes.items() if n == -1]
  if len(free) > 1:
    raise ConfigError(f'config.mesh.{free[1]}=-1: only one axis may take the devices the others '
                      f'leave, and mesh.{free[0]} is -1 too')
  given = math.prod(n for n in sizes.values() if n != -1)
  if free and num_devices % given:
    raise ConfigError(f'config.mesh.{free[0]}=-1: the other axes take {given} devices, which do not '
                      f'divide the {num_devices} of this run')
  if free:
    sizes[free[0]] = num_devices // given
  if given * (num_devices // given if free else 1) != num_devices:
    shown = ' x '.join(f'{a} {n}' for a, n in sizes.items())
    raise ConfigError(f'config.mesh: {shown} is {given} devices, but this run has {num_devices}; the '
                      'axes must multiply to the device count (or one be -1)')
  return sizes


def check_input(c, shape, dataset: str) -> None:
  """The model against one example of the data (its shape), which `validate` cannot see before the
  data is read: a ViT's patches must tile the images. Raises ConfigError naming the field."""
  if c.model.name == 'vit':
    try:
      check_patches(c.model.patch_size, shape[:2])
    except ValueError as e:
      raise ConfigError(f'config.model.{e} of {dataset}') from e


def check_warmup(c, steps_per_epoch: int) -> None:
  """Refuses a warmup that leaves its cosine no step: it must be shorter than every cycle, each of
  which re-warms, or with reset_lr=False than the whole run. Raises ConfigError naming the field, the
  cycle and its steps."""
  o = c.optimizer
  spans = ([(f"cycle {i}'s", n) for i, n in enumerate(c.cycles.epochs)] if o.reset_lr else
           [("the run's", c.num_epochs)])
  for name, epochs in spans:
    if o.warmup_steps >= epochs * steps_per_epoch:
      raise ConfigError(f'config.optimizer.warmup_steps={o.warmup_steps}: must be shorter than {name} '
                        f'{epochs * steps_per_epoch} steps ({epochs} epoch{"s" * (epochs != 1)} of '
                        f'{steps_per_epoch})')


def _check_model(m, i: int, sizes, fail, widened) -> None:
  """One cycle's architecture: a ResNet's stage sizes and widths, or a ViT's or GPT's one stack, with
  the cycle's own width fields `widened` (of cycles.widths) in place of config.model's."""
  if m.name != 'resnet' and len(sizes) != 1:
    fail(f'cycles.stage_sizes[{i}]', sizes,
         f'a {dict(vit="ViT", gpt="GPT")[m.name]} has one stack of blocks: give one size, e.g. (4,)')
  f = {**m, **widened}
  try:
    if m.name == 'resnet':
      check_architecture(sizes, f['widths'], 1, m.h)
    elif m.name == 'vit':
      check_vit(sizes[0], f['width'], f['num_heads'], f['mlp_dim'], m.patch_size, 1, m.h, m.scan_blocks)
    else:
      check_gpt(sizes[0], f['width'], f['num_heads'], f['mlp_dim'], m.context, data.text.VOCAB_SIZE, m.h,
                m.scan_blocks)
  except ValueError as e:
    message = str(e)
    field = message.partition('=')[0]
    if widened and field in WIDTH_FIELDS[m.name]:  # of the cycle's widths, not config.model's
      fail(f'cycles.widths[{i}]', dict(widened), message)
    if field == 'h' or field in MODELS_BY_NAME[m.name]:
      fail(f'model.{field}', m[field], message.removeprefix(f'{field}={m[field]!r}: '))
    fail(f'cycles.stage_sizes[{i}]', sizes, message)


def _check_widths(c, num_cycles: int, fail) -> tuple:
  """cycles.widths and its operator's fields: none, or one dict per cycle of the model's width fields;
  the entries, checked one field at a time."""
  cy, name = c.cycles, c.model.name
  if cy.width_operator not in width_lib.OPERATORS:
    fail('cycles.width_operator', cy.width_operator, f'must be one of {", ".join(width_lib.OPERATORS)}')
  noise = cy.width_noise
  if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float('inf'):
    fail('cycles.width_noise', noise, 'must be a non-negative finite number')
  widths = cy.widths
  if not isinstance(widths, (tuple, list)) or not all(isinstance(w, (Mapping, ml_collections.ConfigDict)) for w in widths):
    fail('cycles.widths', widths, "must hold one dict of width fields per cycle, e.g. ({'width': 64}, {}), "
         'or none')
  if widths and len(widths) != num_cycles:
    fail('cycles.widths', tuple(widths), f'needs one entry per cycle ({num_cycles}), or none')
  for i, entry in enumerate(widths):
    unknown = sorted(set(entry) - set(WIDTH_FIELDS[name]))
    if unknown:
      fail(f'cycles.widths[{i}]', dict(entry), f'{unknown[0]!r} is not a width of a {name}: its widths are '
           f'{", ".join(WIDTH_FIELDS[name])}')
  return tuple(widths)


def _check_widening(c, widths, fail) -> None:
  """Each cycle's widths reached from the cycle before's by cycles.width_operator (mlres.widen's
  checks: no width shrinks, clone's factors are whole, heads divide the width, zero only where exact)."""
  before = None
  for i, entry in enumerate(widths):
    after = cycle_widths(c.model, entry)
    if before is not None and after != before:
      try:
        width_lib.check_fields(before, after, c.cycles.width_operator)
      except ValueError as e:
        fail(f'cycles.widths[{i}]', dict(entry), str(e).removeprefix('widen: '))
    before = after


def cycle_widths(model, entry) -> dict:
  """A cycle's width fields (WIDTH_FIELDS): its entry of cycles.widths over `model`'s (config.model, or
  the dict a checkpoint stores); a ResNet's widths as a tuple."""
  fields = {f: entry[f] if f in entry else model[f] for f in WIDTH_FIELDS[model['name']]}
  return {f: tuple(v) if f == 'widths' else v for f, v in fields.items()}


def widths_of(meta) -> dict:
  """The width fields of the network that a checkpoint's metadata names (mlres.train.Setup.network)."""
  return {f: tuple(meta[f]) if f == 'widths' else meta[f] for f in WIDTH_FIELDS[meta['model']]}


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
