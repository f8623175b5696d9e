"""Times the trainer's own compiled steps, and what the multi-level schedule costs against theory.

  python -m mlres.bench [--chains=res122i,res50i] [--dataset=cifar10] [--dtype=bfloat16,float32]
      [--batch=N] [--steps=500] [--warmup=100] [--quick] [--full [--epochs=N]] [--peer=torch]
      [--seeds=1,2,...] [--out=bench.json]

Per architecture of each chain: seconds to lower and compile the trainer's chunk function, median
ms per step with the data on the device, images per second. Per multi-level chain: its stepping
time over its last-cycle model's for the paper's epoch split, beside `schedules.relative_cost`
(with --full, both protocols also trained end to end, with --epochs in all). The data is synthetic in the shape and size
of --dataset, so nothing is downloaded. --quick shrinks everything to seconds on a CPU, for CI.
"""
from __future__ import annotations

import datetime
import importlib.util
import itertools
import math
import os
import statistics
import tempfile
import time

import jax

from mlres import config as config_lib
from mlres import data as data_lib
from mlres import cli, parallel, report, schedules, train
from mlres.model import count_params

# Image size, classes, train and test images of the datasets that the synthetic data stands in for.
SHAPES = {'cifar10': (32, 10, 50_000, 10_000), 'cifar100': (32, 100, 50_000, 10_000),
          'stl10': (96, 10, 5_000, 8_000)}
REPEATS = 5  # timed batches of steps, each ended by a device sync; their median is reported


class BenchError(ValueError):
  """A flag that cannot work; the message names it and what is allowed."""


def check(chains, dataset, dtypes, batch, steps, warmup, steps_per_dispatch, peer) -> None:
  def fail(flag, value, allowed):
    raise BenchError(f'--{flag}={value}: {allowed}')
  if not chains or any(k not in config_lib.MODELS for k in chains):
    fail('chains', ','.join(chains), f'each must be one of {", ".join(config_lib.MODELS)}')
  if dataset not in SHAPES:
    fail('dataset', dataset, f'must be one of {", ".join(SHAPES)}')
  if not dtypes or any(d not in config_lib.DTYPES for d in dtypes):
    fail('dtype', ','.join(dtypes), f'each must be one of {", ".join(config_lib.DTYPES)}')
  for flag, value, least in (('batch', batch, 1), ('steps', steps, 1), ('warmup', warmup, 0),
                             ('steps_per_dispatch', steps_per_dispatch, 0)):
    if value is not None and value < least:
      fail(flag, value, 'must be a positive integer' if least else 'must be a non-negative integer')
  if peer not in ('', 'torch'):
    fail('peer', peer, "must be '' or 'torch'")
  if peer and importlib.util.find_spec('torch') is None:
    fail('peer', peer, 'needs PyTorch, which is not installed (pip install torch)')


def chain_config(dataset, key, dtype, batch=None, steps_per_dispatch=0, quick=False):
  """The config the trainer would run for `paper(dataset, key)`, on synthetic data.

  quick: the chain's doublings from 2-2 blocks of widths 4-8 on 8x8 images, epochs 6/5/5 of 8 steps.
  """
  c = config_lib.paper(dataset, key)
  size, classes, num_train, num_test = SHAPES[dataset]
  c.dataset, c.model.dtype, c.steps_per_dispatch = 'synthetic', dtype, steps_per_dispatch
  c.batch_size = batch or (16 if quick else c.batch_size)
  if quick:
    first = c.cycles.stage_sizes[0][0]
    c.cycles.stage_sizes = tuple((2 * s[0] // first,) * 2 for s in c.cycles.stage_sizes)
    c.cycles.epochs, c.num_epochs, c.model.widths = (6, 5, 5), 16, (4, 8)
    size, classes, num_train, num_test = 8, 4, 8 * c.batch_size, 32
    c.eval_batch_size, c.checkpoint_every_epochs = 32, 0
  if c.batch_size > num_train:
    raise BenchError(f'--batch={c.batch_size}: must not exceed the {num_train} training images')
  c.synthetic.update(dict(image_size=size, channels=3, num_classes=classes, num_train=num_train,
                          num_test=num_test))
  config_lib.validate(c, jax.device_count())
  return c


def time_chain(config, ds, layout, images, labels, steps: int, warmup: int, skip=()) -> list[dict]:
  """Times each architecture of the chain not in `skip`, built and compiled by the trainer's Setup.

  As in training, only the first architecture is initialized and the next ones are grown from it
  (on a CPU, compiling the initialization takes longer than compiling the step).
  """
  setup = train.Setup.create(config, ds, layout)
  cycles, chunk = setup.cycles, setup.chunk
  batches = setup.batches(0)
  starts = itertools.cycle(range(0, setup.steps, chunk))
  todo, done = [c for c in cycles if c.stage_sizes not in skip], set(skip)
  rows, state = [], None
  for cycle in cycles[:cycles.index(todo[-1]) + 1] if todo else []:
    if state is None:
      state = setup.init()
    elif cycle.stage_sizes != cycles[cycle.index - 1].stage_sizes:
      state = setup.grow(state)
    if cycle.stage_sizes in done:
      continue
    done.add(cycle.stage_sizes)
    t = time.perf_counter()
    step = setup.compile_train_chunk(setup.model(cycle), state, images, labels)
    compile_seconds = time.perf_counter() - t
    seconds = []
    for chunks in [math.ceil(warmup / chunk)] + [math.ceil(steps / chunk / REPEATS)] * REPEATS:
      t = time.perf_counter()
      for _ in range(chunks):
        state, _ = step(state, images, labels, batches, next(starts))
      jax.block_until_ready(state)
      seconds.append((time.perf_counter() - t) / max(chunks * chunk, 1))
    step_ms = 1e3 * statistics.median(seconds[1:])  # the first was the warm-up
    rows.append({'stage_sizes': list(cycle.stage_sizes), 'widths': list(config.model.widths),
                 'num_params': count_params(state['params']), 'dtype': config.model.dtype,
                 'batch': config.batch_size, 'steps_per_dispatch': chunk,
                 'timed_steps': REPEATS * chunks * chunk, 'compile_seconds': compile_seconds,
                 'num_seeds': config.num_seeds, 'step_ms': step_ms,
                 'images_per_second': config.num_seeds * config.batch_size / step_ms * 1e3})
  return rows


def last_cycle_model(config):
  """The config's baseline that trains its last architecture in every cycle."""
  last = config.copy_and_resolve_references()
  last.cycles.stage_sizes = (tuple(config.cycles.stage_sizes[-1]),) * len(config.cycles.epochs)
  return last


def scaling(config, ds, steps: int, warmup: int) -> list[dict]:
  """The chain's last model timed data-parallel on 1, 2, 4, ... and all devices (the global batch
  fixed, so more devices mean a smaller share each); counts that do not divide the batch are left out."""
  last = last_cycle_model(config)
  devices = jax.devices()
  counts = sorted({2 ** i for i in range(len(devices).bit_length())} | {len(devices)})
  rows = []
  for count in counts:
    if config.batch_size % count:
      continue
    layout = parallel.Layout.over(devices[:count])
    images, labels = layout.replicate((ds.train_images, ds.train_labels))
    row, = time_chain(last, ds, layout, images, labels, steps, warmup)
    rows.append({'devices': count, **row})
  return rows


def seed_scaling(config, ds, layout, images, labels, counts, steps: int, warmup: int) -> list[dict]:
  """The chain trained as K seeds at once: its last model's images/s and the protocol's stepping
  time (the paper's epochs times each architecture's step time), against K = 1."""
  rows = []
  for k in counts:
    c = config.copy_and_resolve_references()
    c.num_seeds = k
    timed = time_chain(c, ds, layout, images, labels, steps, warmup)
    ms = {tuple(r['stage_sizes']): r['step_ms'] for r in timed}
    per_epoch = len(ds.train_labels) // c.batch_size
    seconds = sum(n * per_epoch * ms[tuple(sizes)] / 1e3
                  for sizes, n in zip(c.cycles.stage_sizes, c.cycles.epochs))
    rows.append({'num_seeds': k, 'name': c.name, 'last_step_ms': timed[-1]['step_ms'],
                 'images_per_second': timed[-1]['images_per_second'], 'protocol_seconds': seconds})
  one = next((r['protocol_seconds'] for r in rows if r['num_seeds'] == 1), None)
  for r in rows:
    r['over_one_seed'] = r['protocol_seconds'] / one if one else None
  return rows


def scale_epochs(epochs, total: int) -> tuple[int, ...]:
  """The cycles' epochs in the same proportions, at least one each, adding up to `total`."""
  if total < len(epochs):
    raise BenchError(f'--epochs={total}: must give each of the {len(epochs)} cycles an epoch')
  raw = [total * e / sum(epochs) for e in epochs]
  out = [max(1, math.floor(r)) for r in raw]
  by_remainder = sorted(range(len(raw)), key=lambda i: math.floor(raw[i]) - raw[i])
  for i in by_remainder[:max(total - sum(out), 0)]:
    out[i] += 1
  while sum(out) > total:  # the ones raised to one epoch took it from the largest
    out[out.index(max(out))] -= 1
  return tuple(out)


def full_protocol(config, epochs: int | None = None) -> dict:
  """The multi-level and last-cycle protocols trained end to end (their cycles' epochs scaled to
  `epochs` in all, if given): wall, stepping, compile and compile-wait seconds."""
  if epochs is not None:
    config = config.copy_and_resolve_references()
    config.cycles.epochs, config.num_epochs = scale_epochs(config.cycles.epochs, epochs), epochs
  last = last_cycle_model(config)
  with tempfile.TemporaryDirectory() as root:
    multi = train.train_and_evaluate(config, os.path.join(root, 'multi'))
    single = train.train_and_evaluate(last, os.path.join(root, 'last'))
  out = {'full_epochs': list(config.cycles.epochs)}
  for what in ('wall', 'train', 'compile', 'compile_wait'):
    out[f'multi_{what}_seconds'], out[f'last_{what}_seconds'] = (
        multi[f'{what}_seconds'], single[f'{what}_seconds'])
  for what in ('wall', 'train'):
    out[f'{what}_ratio'] = multi[f'{what}_seconds'] / single[f'{what}_seconds']
  return out


def torch_peer(config, ds, stage_sizes, steps: int, warmup: int, jax_ms: float) -> list[dict]:
  """The same network and SGD step in PyTorch, eager and torch.compile'd, on the same data.

  As mlres.model: pre-activation blocks, residual times h, parameter-free shortcuts. As the
  trainer: augmentation on the device in the step, coupled L2 on conv and dense kernels only.
  bf16 is autocast; memory is channels-last (the faster layout for PyTorch's convolutions).
  """
  import torch
  import torch.nn.functional as F
  from torch import nn
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  widths, pad, o = tuple(config.model.widths), config.augment.pad, config.optimizer

  class Block(nn.Module):
    def __init__(self, width_in, width, stride):
      super().__init__()
      self.stride, self.extra = stride, width - width_in
      self.norm1, self.norm2 = nn.BatchNorm2d(width_in), nn.BatchNorm2d(width)  # flax momentum 0.9
      self.conv1 = nn.Conv2d(width_in, width, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)

    def forward(self, y, h):
      f = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(y))))))
      return F.pad(y[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra)) + h * f

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Conv2d(ds.train_images.shape[-1], widths[0], 3, 1, 1, bias=False)
      self.blocks = nn.ModuleList(Block(w if b else widths[max(s - 1, 0)], w, 2 if s and not b else 1)
                                  for s, (n, w) in enumerate(zip(stage_sizes, widths)) for b in range(n))
      self.norm, self.head = nn.BatchNorm2d(widths[-1]), nn.Linear(widths[-1], ds.num_classes)
      self.register_buffer('h', torch.tensor(next(
          c.h for c in train.plan(config) if c.stage_sizes == tuple(stage_sizes))))

    def forward(self, x):
      y = self.stem(x)
      for block in self.blocks:
        y = block(y, self.h)
      return self.head(F.relu(self.norm(y)).mean((2, 3)))

  torch.manual_seed(config.seed)
  images = torch.from_numpy(ds.train_images).to(device)
  labels = torch.from_numpy(ds.train_labels).long().to(device)
  mean, std = torch.from_numpy(ds.mean).to(device), torch.from_numpy(ds.std).to(device)
  batch = config.batch_size
  per_epoch = len(labels) // batch
  order = torch.randperm(len(labels), device=device)[:per_epoch * batch].view(per_epoch, batch)

  def augment(x):  # uint8 NHWC -> standardized NCHW, channels-last in memory
    b, height, width, _ = x.shape
    if pad:
      x = F.pad(x, (0, 0, pad, pad, pad, pad))
      at = torch.randint(0, 2 * pad + 1, (b, 2), device=device)
      rows = at[:, :1] + torch.arange(height, device=device)
      cols = at[:, 1:] + torch.arange(width, device=device)
      x = x[torch.arange(b, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if config.augment.flip:
      x = torch.where(torch.rand(b, 1, 1, 1, device=device) < 0.5, x.flip(2), x)
    return ((x.float() - mean) / std).permute(0, 3, 1, 2)

  def measure(compiled: bool) -> dict:
    net = Net().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD([{'params': [p for p in net.parameters() if p.ndim > 1]},
                           {'params': [p for p in net.parameters() if p.ndim <= 1], 'weight_decay': 0.0}],
                          lr=o.eta_max, momentum=o.momentum, weight_decay=o.weight_decay)
    forward = torch.compile(net, mode='reduce-overhead') if compiled else net
    counter = itertools.count()

    def run(count):
      for _ in range(count):
        idx = order[next(counter) % per_epoch]
        with torch.autocast(device, torch.bfloat16, enabled=config.model.dtype == 'bfloat16'):
          loss = F.cross_entropy(forward(augment(images[idx])), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
      if device == 'cuda':
        torch.cuda.synchronize()

    t = time.perf_counter()
    run(1)
    first = time.perf_counter() - t
    run(max(warmup, 3))  # CUDA graphs are recorded on the second and third call
    count, seconds = math.ceil(steps / REPEATS), []
    for _ in range(REPEATS):
      t = time.perf_counter()
      run(count)
      seconds.append((time.perf_counter() - t) / count)
    step_ms = 1e3 * statistics.median(seconds)
    return {'compile_seconds': first if compiled else None, 'step_ms': step_ms,
            'images_per_second': batch / step_ms * 1e3, 'jax_speedup': step_ms / jax_ms}

  common = {'stage_sizes': list(stage_sizes), 'widths': list(widths), 'dtype': config.model.dtype,
            'num_params': sum(p.numel() for p in Net().parameters()),
            'batch': batch, 'torch_version': torch.__version__,
            'torch_device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}
  rows = [{**common, 'implementation': 'PyTorch eager', **measure(False)}]
  if hasattr(torch, 'compile'):
    common['implementation'] = "torch.compile(mode='reduce-overhead')"
    try:
      rows.append({**common, **measure(True)})
    except Exception as e:  # a failing compiler backend must not lose the numbers already taken
      rows.append({**common, 'error': report.error_line(e)})
  return rows


def run(chains=('res122i', 'res50i'), dataset='cifar10', dtypes=('bfloat16',), batch=None,
        steps_per_dispatch=0, steps=None, warmup=None, quick=False, full=False, peer='',
        seeds=(), full_epochs=None) -> dict:
  """Every measurement the arguments ask for, as the document that --out writes."""
  check(chains, dataset, dtypes, batch, steps, warmup, steps_per_dispatch, peer)
  if full_epochs is not None and not full:
    raise BenchError(f'--epochs={full_epochs}: only --full trains whole protocols; add --full')
  if any(k < 1 for k in seeds):
    raise BenchError(f'--seeds={",".join(map(str, seeds))}: each must be a positive integer')
  steps = steps or (50 if quick else 500)
  warmup = (2 if quick else 100) if warmup is None else warmup
  configs = {(key, dtype): chain_config(dataset, key, dtype, batch, steps_per_dispatch, quick)
             for key in chains for dtype in dtypes}
  if full and full_epochs is not None:  # refused here, before any work
    for c in configs.values():
      scale_epochs(c.cycles.epochs, full_epochs)
  ds = data_lib.load(next(iter(configs.values())))  # every config asks for the same synthetic data
  layout = parallel.Layout.all_devices()
  images, labels = layout.replicate((ds.train_images, ds.train_labels))
  rows, ratios, peers, scaled, seeded = {}, [], {}, [], []
  arch = lambda c, sizes: (tuple(sizes), tuple(c.model.widths), c.model.dtype)
  for (key, _), c in configs.items():
    family = config_lib.MODELS[key][2].split('-')[0]
    skip = [sizes for sizes, *rest in rows if tuple(rest) == (tuple(c.model.widths), c.model.dtype)]
    for r in time_chain(c, ds, layout, images, labels, steps, warmup, skip):
      rows[arch(c, r['stage_sizes'])] = {'model': f'{family}-{2 * sum(r["stage_sizes"]) + 2}', **r}
  for (key, dtype), c in configs.items():
    sizes, epochs = [tuple(s) for s in c.cycles.stage_sizes], list(c.cycles.epochs)
    if len(set(sizes)) > 1:
      ms = [rows[arch(c, s)]['step_ms'] for s in sizes]
      ratios.append({'chain': key, 'name': c.name, 'stage_sizes': [list(s) for s in sizes],
                     'dtype': dtype, 'epochs': epochs,
                     'measured': schedules.relative_cost(sizes, epochs, ms),
                     'theory': schedules.relative_cost(sizes, epochs),
                     **(full_protocol(c, full_epochs) if full else {})})
    last = arch(c, sizes[-1])
    if layout.num_devices > 1 and not scaled:  # the first chain's last model
      scaled = scaling(c, ds, steps, warmup)
    if seeds and not seeded:  # the first chain
      seeded = seed_scaling(c, ds, layout, images, labels, seeds, steps, warmup)
    if peer and last not in peers:  # each chain's last-cycle model, once
      peers[last] = torch_peer(c, ds, sizes[-1], steps, warmup, rows[last]['step_ms'])
  return {'device': jax.devices()[0].device_kind, 'platform': jax.default_backend(),
          'device_count': jax.device_count(), 'jax_version': jax.__version__,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'compilation_cache': jax.config.jax_compilation_cache_dir or '',
          'flags': {'chains': list(chains), 'dataset': dataset, 'dtype': list(dtypes),
                    'batch': next(iter(configs.values())).batch_size,
                    'steps_per_dispatch': steps_per_dispatch, 'steps': steps, 'warmup': warmup,
                    'quick': quick, 'full': full, 'epochs': full_epochs, 'peer': peer,
                    'seeds': list(seeds)},
          'rows': list(rows.values()), 'ratios': ratios, 'scaling': scaled, 'seeds': seeded,
          'peer': sum(peers.values(), [])}


def table(result: dict) -> str:
  """The document as text: step times, then ratios, then the PyTorch peer if any."""
  num = lambda x, f: '-' if x is None else format(x, f)
  parts = [f'{result["device"]} ({result["platform"]}), JAX {result["jax_version"]}, {result["date"]}',
           report.columns([['Model', 'Blocks', 'Widths', 'dtype', 'Batch', 'Steps/dispatch',
                            'Compile s', 'Step ms', 'Images/s']] + [
               [r['model'], report.blocks(r['stage_sizes']), report.blocks(r['widths']), r['dtype'],
                str(r['batch']), str(r['steps_per_dispatch']), f'{r["compile_seconds"]:.1f}',
                f'{r["step_ms"]:.2f}', f'{r["images_per_second"]:,.0f}'] for r in result['rows']])]
  full = result['flags']['full']
  if result['ratios']:
    parts.append(report.columns(
        [['Chain', 'Blocks', 'dtype', 'Epochs', 'Measured', 'Theory'] +
         (['Trained epochs', 'Wall multi s', 'Wall last s', 'Wall ratio', 'Stepping ratio']
          if full else [])] + [
            [r['name'], report.chain(r['stage_sizes']), r['dtype'], '/'.join(map(str, r['epochs'])),
             f'{r["measured"]:.3f}', f'{r["theory"]:.4f}'] +
            (['/'.join(map(str, r['full_epochs'])),
              f'{r["multi_wall_seconds"]:.1f}', f'{r["last_wall_seconds"]:.1f}',
              f'{r["wall_ratio"]:.3f}', f'{r["train_ratio"]:.3f}'] if full else [])
            for r in result['ratios']]))
  if result['seeds']:
    parts.append(report.columns(
        [['Seeds', 'Chain', 'Last model ms', 'Images/s', 'Protocol stepping s', 'Over one seed']] + [
            [str(r['num_seeds']), r['name'], f'{r["last_step_ms"]:.2f}', f'{r["images_per_second"]:,.0f}',
             f'{r["protocol_seconds"]:.1f}', num(r['over_one_seed'], '.2f')] for r in result['seeds']]))
  if result['scaling']:
    base = result['scaling'][0]['images_per_second']
    parts.append(report.columns(
        [['Devices', 'Blocks', 'dtype', 'Batch', 'Step ms', 'Images/s', 'Speed-up']] + [
            [str(r['devices']), report.blocks(r['stage_sizes']), r['dtype'], str(r['batch']),
             f'{r["step_ms"]:.2f}', f'{r["images_per_second"]:,.0f}',
             f'{r["images_per_second"] / base:.2f}'] for r in result['scaling']]))
  if result['peer']:
    parts.append(report.columns(
        [['Blocks', 'dtype', 'Implementation', 'Compile s', 'Step ms', 'Images/s', 'Time / JAX']] + [
            [report.blocks(p['stage_sizes']), p['dtype'], p['implementation'],
             num(p.get('compile_seconds'), '.1f'), num(p.get('step_ms'), '.2f'),
             num(p.get('images_per_second'), ',.0f'), num(p.get('jax_speedup'), '.2f'),
             p.get('error', '')] for p in result['peer']]))
  return '\n\n'.join(parts)


def main(argv):
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  f = flags.FLAGS
  if f.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(f.compilation_cache))
  if not all(k.strip().lstrip('-').isdigit() for k in f.seeds):
    raise BenchError(f'--seeds={",".join(f.seeds)}: each must be a positive integer')
  if f.out:  # checked now, not after minutes of measuring
    folder = os.path.dirname(os.path.abspath(f.out))
    if os.path.isdir(f.out):
      raise BenchError(f'--out={f.out}: is a folder; give a file name')
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
      raise BenchError(f'--out={f.out}: {folder} is not a writable folder')
  result = run(f.chains, f.dataset, f.dtype, f.batch, f.steps_per_dispatch, f.steps, f.warmup,
               f.quick, f.full, f.peer, [int(k) for k in f.seeds], f.epochs)
  print(table(result))
  if f.out:
    report.write_json(f.out, result)
    print(f'\nwrote {f.out}')


def define_flags():
  """Only when run as a program: mlres.analyze, imported beside this in the tests, owns --out."""
  from absl import flags
  flags.DEFINE_list('chains', ['res122i', 'res50i'],
                    f'Keys of mlres.config.MODELS: {", ".join(config_lib.MODELS)}.')
  flags.DEFINE_string('dataset', 'cifar10', 'Whose image shape, sizes, classes, batch and augmentation '
                      f'the synthetic data takes: {", ".join(SHAPES)}.')
  flags.DEFINE_list('dtype', ['bfloat16'], 'Compute dtypes to time, e.g. float32,bfloat16.')
  flags.DEFINE_integer('batch', None, "Batch size (default: the paper's for --dataset; 16 with --quick).")
  flags.DEFINE_integer('steps_per_dispatch', 0, "Steps per compiled call; 0: the trainer's rule.")
  flags.DEFINE_integer('steps', None, 'Timed steps per architecture (default 500; 50 with --quick).')
  flags.DEFINE_integer('warmup', None, 'Untimed steps after compiling (default 100; 2 with --quick).')
  flags.DEFINE_bool('quick', False, 'Tiny images, widths, chains and step counts: seconds on a CPU.')
  flags.DEFINE_bool('full', False, 'Also train the multi-level and last-cycle protocols end to end.')
  flags.DEFINE_integer('epochs', None, "With --full: the protocols' epochs in all, split in the "
                       "paper's proportions (default: the paper's 160; 16 with --quick).")
  flags.DEFINE_string('peer', '', "'torch': time the same network and step in PyTorch too.")
  flags.DEFINE_list('seeds', [], 'Seed counts K to train together (num_seeds), e.g. 1,2,4,8,16: the '
                    "first chain's images/s and protocol stepping time for each.")
  flags.DEFINE_string('out', '', 'Write the results as JSON to this path.')
  flags.DEFINE_string('compilation_cache', config_lib.default().compilation_cache,
                      "JAX's persistent compilation cache, the trainer's; '' times cold compiles.")


if __name__ == '__main__':
  define_flags()
  cli.run(main, (BenchError, *cli.ERRORS))
