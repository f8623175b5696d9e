"""Times the trainer's own compiled steps, and what the multi-level schedule costs against theory.

  python -m mlres.bench [--chains=res122i,res50i,vit12i,gpt12i] [--dataset=cifar10] [--dtype=bfloat16,float32]
      [--batch=N] [--steps=500] [--warmup=100] [--quick] [--full [--epochs=N]] [--peer=torch]
      [--seeds=1,2,...] [--fsdp=1,2,4,8] [--out=bench.json]
  python -m mlres.bench --config=configs/pystdlib_gpt.py [--config.batch_size=32 ...] [--peer=torch] ...

Per architecture of each chain: seconds to lower and compile the trainer's chunk function, median
ms per step with the data on the device, images per second (a GPT's: tokens per second). Per
multi-level chain: its stepping time over its last-cycle model's for the paper's epoch split, beside
`schedules.relative_cost` (with --full, both protocols also trained end to end, with --epochs in all).
Nothing is downloaded: the image chains' data is synthetic in the shape and size of --dataset, and the
GPT chains read pystdlib (this Python's standard library sources), whatever --dataset says. --quick
shrinks everything to seconds on a CPU, for CI, and names each shrunk chain for the model it is and
the chains it stands for (res122i and res50i shrink to one). --config times a config file's chain
instead, on its own data, as `mlres.main --config` would train it. --peer=torch times the last
model of each ResNet or GPT chain in PyTorch too, beside JAX's step (mlres.torch_peer). --fsdp times
the first chain's last model with its train state sharded over each fsdp size (the rest of the devices
on data; mlres.sharding): each device's bytes of the state beside the step time.
"""
from __future__ import annotations

import datetime
import importlib.util
import itertools
import json
import math
import os
import statistics
import tempfile
import time

from absl import app, flags
import jax
from ml_collections import config_flags

from mlres import config as config_lib
from mlres import data as data_lib
from mlres import cli, input_pipeline, parallel, report, schedules, sharding, tasks, train
from mlres.model import WIDE_RESNET_WIDTHS, count_params

# Image size, classes, train and test images of the datasets that the synthetic data stands in for.
SHAPES = {'cifar10': (32, 10, 50_000, 10_000), 'cifar100': (32, 100, 50_000, 10_000),
          'stl10': (96, 10, 5_000, 8_000)}
REPEATS = 5  # timed batches of steps, each ended by a device sync; their median is reported
# The ViT chains of mlres.config.vit, by the bench's name: the multi-level one and its baselines.
VIT = {'vit12i': 'i', 'vit3': 'first', 'vit12': 'last'}
# The GPU GPT chains of mlres.config.gpt, likewise; they model the bytes of pystdlib.
GPT = {'gpt12i': 'i', 'gpt3': 'first', 'gpt12': 'last'}
CHAINS = (*config_lib.MODELS, *VIT, *GPT)
# The flags that say what is timed, which a --config says itself.
CONFIG_SETS = ('chains', 'dataset', 'dtype', 'batch', 'steps_per_dispatch', 'quick')
# Throughput per task, as a row's key and the table's header: a GPT's window of `context` bytes is
# `context` next-byte predictions, so its steps count tokens, not windows.
RATES = {'image_classification': ('images_per_second', 'Images/s'),
         'language_model': ('tokens_per_second', 'Tokens/s')}


class BenchError(ValueError):
  """A flag that cannot work; the message names it and what is allowed."""


def check(*, chains, dataset, dtypes, batch, steps, warmup, steps_per_dispatch, peer, seeds, full,
          full_epochs, config=None, fsdp=()) -> None:
  """Refuses what `run` cannot do, before any work."""
  def fail(flag, value, allowed):
    raise BenchError(f'--{flag}={value}: {allowed}')
  if (not chains and config is None) or any(k not in CHAINS for k in chains):
    fail('chains', ','.join(chains), f'each must be one of {", ".join(CHAINS)}')
  if dataset not in SHAPES:
    fail('dataset', dataset, f'must be one of {", ".join(SHAPES)}')
  if any(k in VIT for k in chains) and dataset not in config_lib.VIT_CHAINS:
    fail('dataset', dataset, f'the ViT chains are for {", ".join(d for d in SHAPES if d in config_lib.VIT_CHAINS)}')
  if not dtypes or any(d not in config_lib.DTYPES for d in dtypes):
    fail('dtype', ','.join(dtypes), f'each must be one of {", ".join(config_lib.DTYPES)}')
  for flag, value, least in (('batch', batch, 1), ('steps', steps, 1), ('warmup', warmup, 0),
                             ('steps_per_dispatch', steps_per_dispatch, 0)):
    if value is not None and value < least:
      fail(flag, value, 'must be a positive integer' if least else 'must be a non-negative integer')
  if peer not in ('', 'torch'):
    fail('peer', peer, "must be '' or 'torch'")
  vits = [k for k in chains if k in VIT] + ([config.name] if config and config.model.name == 'vit' else [])
  if peer and vits:
    fail('peer', peer, f'has no ViT ({", ".join(vits)}); it times the ResNet and GPT chains')
  if peer and config and config.num_seeds > 1:
    fail('peer', peer, f'trains one seed, not config.num_seeds={config.num_seeds} at once')
  if peer and importlib.util.find_spec('torch') is None:
    fail('peer', peer, 'needs PyTorch, which is not installed (pip install -e ".[peer]")')
  if full_epochs is not None and not full:
    fail('epochs', full_epochs, 'only --full trains whole protocols; add --full')
  if any(k < 1 for k in seeds):
    fail('seeds', ','.join(map(str, seeds)), 'each must be a positive integer')
  unfit = [n for n in fsdp if n < 1 or jax.device_count() % n]
  if unfit:
    fail('fsdp', ','.join(map(str, fsdp)), f'{unfit[0]} is not a divisor of the {jax.device_count()} '
         'devices (XLA_FLAGS=--xla_force_host_platform_device_count=8 makes 8 of a CPU)')


def chain_config(dataset, key, dtype, batch=None, steps_per_dispatch=0, quick=False):
  """The config the trainer would run for `paper(dataset, key)` (or the ViT `vit(dataset, ...)`),
  on synthetic data; for a GPT chain `gpt(..., size='gpu')` on pystdlib, whatever `dataset` is.

  quick: the chain's doublings from 2-2 blocks of widths 4-8 (a ViT's or GPT's from 1 block of
  width 8, 2 heads, MLP 16) on 8x8 images or 8-byte contexts, epochs 6/5/5 of 8 steps.
  """
  if key in GPT:
    c = config_lib.gpt(GPT[key], size='gpu')
  else:
    c = config_lib.vit(dataset, VIT[key]) if key in VIT else config_lib.paper(dataset, key)
    c.dataset = 'synthetic'
  c.model.dtype, c.steps_per_dispatch = dtype, steps_per_dispatch
  c.batch_size = batch or (16 if quick else c.batch_size)
  if quick:
    first = c.cycles.stage_sizes[0][0]
    if c.model.name == 'resnet':
      c.cycles.stage_sizes = tuple((2 * s[0] // first,) * 2 for s in c.cycles.stage_sizes)
      c.model.widths = (4, 8)
    else:
      c.cycles.stage_sizes = tuple((s[0] // first,) for s in c.cycles.stage_sizes)
      c.model.update(dict(width=8, num_heads=2, mlp_dim=16))
      if key in GPT:
        c.model.context = 8
        c.text.update(dict(steps_per_epoch=8, eval_windows=16))
      else:
        c.model.patch_size = 2
    c.cycles.epochs, c.num_epochs = (6, 5, 5), 16
    c.eval_batch_size, c.checkpoint_every_epochs = 32, 0
  if key not in GPT:
    size, classes, num_train, num_test = (8, 4, 8 * c.batch_size, 32) if quick else SHAPES[dataset]
    if c.batch_size > num_train:
      raise BenchError(f'--batch={c.batch_size}: must not exceed the {num_train} training images')
    c.synthetic.update(dict(image_size=size, channels=3, num_classes=classes, num_train=num_train,
                            num_test=num_test))
  config_lib.validate(c, jax.device_count())
  return c


def distinct_chains(dataset, chains, dtypes, batch=None, steps_per_dispatch=0, quick=False) -> dict:
  """(chain, dtype) -> chain_config, one per distinct config: --quick shrinks res122i and res50i (and
  the wide ones) to the same chain of 2-2 to 8-8 blocks, which is timed once. A shrunk chain is named
  for what it is, and for the chains it was shrunk from, e.g. 'ResNet-34-i (shrunk from ResNet-122-i,
  ResNet-50-i)'."""
  configs, sources = {}, {}
  unnamed = lambda config: {**config.to_dict(), 'name': None}
  for key, dtype in itertools.product(chains, dtypes):
    c = chain_config(dataset, key, dtype, batch, steps_per_dispatch, quick)
    same = next((k for k, other in configs.items() if unnamed(other) == unnamed(c)), (key, dtype))
    configs.setdefault(same, c)
    sources.setdefault(same, []).append(c.name)
  if quick:
    for k, c in configs.items():
      sizes = c.cycles.stage_sizes
      grown = '-i' if len(set(map(tuple, sizes))) > 1 else ''
      c.name = f'{depth_name(c, sizes[-1])}{grown} (shrunk from {", ".join(dict.fromkeys(sources[k]))})'
  return configs


def datasets(configs) -> dict:
  """Each dataset the configs name, loaded once: the image chains of a run share one synthetic set
  (one --dataset, --batch and --quick), the GPT chains pystdlib."""
  first = {}
  for c in configs:
    first.setdefault(c.dataset, c)
  return {name: data_lib.load(c) for name, c in first.items()}


def time_chain(config, ds, layout, steps: int, warmup: int, skip=()) -> list[dict]:
  """Times each architecture of the chain not in `skip`, built and compiled by the trainer's Setup,
  on its task's training arrays.

  As in training, only the first architecture is initialized and the next ones are grown from it
  (on a CPU, compiling the initialization takes longer than compiling the step).
  """
  setup = train.Setup.create(config, ds, layout)
  source = input_pipeline.DeviceInput(setup, setup.task.arrays(config.eval_batch_size)[0])
  rate, _ = RATES[setup.task.name]
  # Its compiles are called directly, below: it needs no test set and starts no compile thread.
  programs = train.Programs(setup, [], train.Data(source, None), ahead=False)
  cycles, chunk = setup.cycles, setup.chunk
  inputs = dict(source.chunks(0, 0))
  starts = itertools.cycle(inputs)
  todo, done = [c for c in cycles if c.stage_sizes not in skip], set(skip)
  rows, state = [], None
  for cycle in cycles[:cycles.index(todo[-1]) + 1] if todo else []:
    if state is None:
      state = programs.init()
    elif cycle.stage_sizes != cycles[cycle.index - 1].stage_sizes:
      state = programs.grow(state)
    if cycle.stage_sizes in done:
      continue
    done.add(cycle.stage_sizes)
    t = time.perf_counter()
    step = train.compile_train_chunk(setup, setup.model(cycle), state, source)
    compile_seconds = time.perf_counter() - t
    seconds = []
    for chunks in [math.ceil(warmup / chunk)] + [math.ceil(steps / chunk / REPEATS)] * REPEATS:
      t = time.perf_counter()
      for _ in range(chunks):
        start = next(starts)
        state, _ = step(state, inputs[start], start)
      jax.block_until_ready(state)
      seconds.append((time.perf_counter() - t) / max(chunks * chunk, 1))
    step_ms = 1e3 * statistics.median(seconds[1:])  # the first was the warm-up
    held = sharding.bytes_per_device(state)
    rows.append({'stage_sizes': list(cycle.stage_sizes), 'widths': list(widths(config)),
                 'state_bytes': sharding.total_bytes(state), 'state_bytes_per_device': max(held.values()),
                 'replicated_bytes': sharding.total_bytes(state, replicated_only=True),
                 'num_params': count_params(state['params']), 'dtype': config.model.dtype,
                 'batch': config.batch_size, 'steps_per_dispatch': chunk,
                 'timed_steps': REPEATS * chunks * chunk, 'compile_seconds': compile_seconds,
                 'num_seeds': config.num_seeds, 'step_ms': step_ms,
                 rate: config.num_seeds * config.batch_size * setup.task.units / step_ms * 1e3})
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
    row, = time_chain(last, ds, parallel.Layout.over(devices[:count]), steps, warmup)
    rows.append({'devices': count, **row})
  return rows


def fsdp_scaling(config, ds, sizes, steps: int, warmup: int) -> list[dict]:
  """The chain's last model on every device with its train state sharded `fsdp` ways for each
  size (the global batch fixed, split over all the devices): each device's bytes of the state, what
  the rule leaves whole on every device, and the step time. None where the devices do not divide
  the batch."""
  if config.batch_size % jax.device_count():
    return []
  last = last_cycle_model(config)
  rows = []
  for n in sizes:
    layout = parallel.Layout.over(jax.devices(), fsdp=n, min_shard_size=config.mesh.min_shard_size)
    row, = time_chain(last, ds, layout, steps, warmup)
    rows.append({'fsdp': n, **row})
  return rows


def seed_scaling(config, ds, layout, counts, steps: int, warmup: int) -> list[dict]:
  """The chain trained as K seeds at once: its last model's throughput and the protocol's stepping
  time (the paper's epochs of the task's steps times each architecture's step time), against K = 1."""
  rows, per_epoch = [], tasks.create(config, ds).steps
  for k in counts:
    c = config.copy_and_resolve_references()
    c.num_seeds = k
    timed = time_chain(c, ds, layout, steps, warmup)
    ms = {tuple(r['stage_sizes']): r['step_ms'] for r in timed}
    seconds = sum(n * per_epoch * ms[tuple(sizes)] / 1e3
                  for sizes, n in zip(c.cycles.stage_sizes, c.cycles.epochs))
    last = timed[-1]
    rows.append({'num_seeds': k, 'name': c.name, 'last_step_ms': last['step_ms'],
                 **{rate: last[rate] for rate in _rates([last])}, 'protocol_seconds': seconds})
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


def torch_peer(config, ds, stage_sizes, steps: int, warmup: int, jax_row: dict) -> list[dict]:
  """JAX's row (`jax_row`, of `time_chain`) and the same network and step in PyTorch, eager and
  torch.compile'd, on the same data, at the step size the trainer gives `stage_sizes`
  (mlres.torch_peer, imported only here: torch is optional); 'jax_speedup' is each one's step time
  over JAX's."""
  from mlres.torch_peer import time_steps
  h = next(c.h for c in train.plan(config) if c.stage_sizes == tuple(stage_sizes))
  rate, _ = RATES[tasks.of(ds).name]
  same = {k: jax_row[k] for k in ('stage_sizes', 'widths', 'dtype', 'batch')}
  peers = time_steps(config, ds, stage_sizes, h, steps, warmup, jax_row['step_ms'], REPEATS, rate)
  return [{**jax_row, 'implementation': f'JAX {jax.__version__}', 'jax_speedup': 1.0},
          *({**same, **p} for p in peers)]


def run(*, chains=None, dataset='cifar10', dtypes=('bfloat16',), batch=None, steps_per_dispatch=0,
        steps=None, warmup=None, quick=False, full=False, peer='', seeds=(), full_epochs=None,
        config=None, fsdp=()) -> dict:
  """Every measurement the arguments ask for, as the document that --out writes. `config` (a
  ConfigDict, as `mlres.main --config` reads it) is timed as it is, after the `chains`; without it,
  `chains` default to res122i and res50i."""
  chains = tuple(chains or (() if config else ('res122i', 'res50i')))
  check(chains=chains, dataset=dataset, dtypes=dtypes, batch=batch, steps=steps, warmup=warmup,
        steps_per_dispatch=steps_per_dispatch, peer=peer, seeds=seeds, full=full,
        full_epochs=full_epochs, config=config, fsdp=fsdp)
  steps = steps or (50 if quick else 500)
  warmup = (2 if quick else 100) if warmup is None else warmup
  configs = distinct_chains(dataset, chains, dtypes, batch, steps_per_dispatch, quick)
  if config is not None:
    config_lib.validate(config, jax.device_count())
    configs[config.name, config.model.dtype] = config
  if full and full_epochs is not None:  # refused here, before any work
    for c in configs.values():
      scale_epochs(c.cycles.epochs, full_epochs)
  loaded = datasets(configs.values())
  layout = parallel.Layout.of(config) if config else parallel.Layout.all_devices()
  rows = time_architectures(configs, loaded, layout, steps, warmup)
  ratios, peers, scaled, seeded, sharded = [], {}, [], [], []
  for (key, dtype), c in configs.items():
    ds = loaded[c.dataset]
    sizes, epochs = [tuple(s) for s in c.cycles.stage_sizes], list(c.cycles.epochs)
    if len(set(sizes)) > 1:
      ms = [rows[_arch(c, s)]['step_ms'] for s in sizes]
      ratios.append({'chain': key, 'name': c.name, 'stage_sizes': [list(s) for s in sizes],
                     'dtype': dtype, 'epochs': epochs,
                     'measured': schedules.relative_cost(sizes, epochs, ms),
                     'theory': schedules.relative_cost(sizes, epochs),
                     **(full_protocol(c, full_epochs) if full else {})})
    last = _arch(c, sizes[-1])
    if layout.num_devices > 1 and not scaled:  # the first chain's last model
      scaled = scaling(c, ds, steps, warmup)
    if seeds and not seeded:  # the first chain
      seeded = seed_scaling(c, ds, layout, seeds, steps, warmup)
    if fsdp and not sharded:  # the first chain's last model
      sharded = fsdp_scaling(c, ds, fsdp, steps, warmup)
    if peer and last not in peers:  # each chain's last model, once
      peers[last] = torch_peer(c, ds, sizes[-1], steps, warmup, rows[last])
  return {**environment(),
          'flags': {'chains': list(chains), 'dataset': dataset, 'dtype': list(dtypes),
                    'batch': next(iter(configs.values())).batch_size,
                    'steps_per_dispatch': steps_per_dispatch, 'steps': steps, 'warmup': warmup,
                    'quick': quick, 'full': full, 'epochs': full_epochs, 'peer': peer,
                    'seeds': list(seeds), 'fsdp': list(fsdp),
                    'config': config and json.loads(config.to_json())},
          'rows': list(rows.values()), 'ratios': ratios, 'scaling': scaled, 'seeds': seeded,
          'fsdp': sharded, 'peer': sum(peers.values(), [])}


def _arch(config, stage_sizes) -> tuple:
  """What a step time is of: (blocks, kind); architectures of the same blocks, family, widths and
  dtype step alike."""
  return tuple(stage_sizes), (config.model.name, widths(config), config.model.dtype)


def widths(config) -> tuple:
  """A ResNet's stage widths; a ViT's width, heads, MLP width and patch size; a GPT's width, heads,
  MLP width and context."""
  m = config.model
  if m.name == 'resnet':
    return tuple(m.widths)
  return m.width, m.num_heads, m.mlp_dim, m.context if m.name == 'gpt' else m.patch_size


def depth_name(config, stage_sizes) -> str:
  """ResNet-2n+2 of n blocks (the paper's count of layers; WResNet at the Wide ResNets' widths),
  ViT-n and GPT-n of n transformer blocks."""
  m = config.model
  if m.name != 'resnet':
    return f'{dict(vit="ViT", gpt="GPT")[m.name]}-{sum(stage_sizes)}'
  family = 'WResNet' if tuple(m.widths) == WIDE_RESNET_WIDTHS else 'ResNet'
  return f'{family}-{2 * sum(stage_sizes) + 2}'


def time_architectures(configs, loaded, layout, steps: int, warmup: int) -> dict:
  """The rows of every chain's architectures, each timed once (by `_arch`) on its dataset (in
  `loaded`, by name), named by its depth."""
  rows = {}
  for c in configs.values():
    kind = _arch(c, ())[1]
    skip = [sizes for sizes, other in rows if other == kind]
    for r in time_chain(c, loaded[c.dataset], layout, steps, warmup, skip):
      rows[_arch(c, r['stage_sizes'])] = {'model': depth_name(c, r['stage_sizes']), **r}
  return rows


def _rates(rows) -> list[str]:
  """The throughput keys (of RATES) that some of `rows` have: a table shows a column for each."""
  return [key for key, _ in RATES.values() if any(key in r for r in rows)]


def environment() -> dict:
  """Where and when the numbers were taken."""
  return {'device': jax.devices()[0].device_kind, 'platform': jax.default_backend(),
          'device_count': jax.device_count(), 'jax_version': jax.__version__,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'compilation_cache': jax.config.jax_compilation_cache_dir or ''}


def table(result: dict) -> str:
  """The document as text: step times, then ratios, then the PyTorch peer if any. Throughput is
  in a column per unit that some row has (Images/s, a GPT's Tokens/s), '-' where a row has another."""
  num = lambda x, f: '-' if x is None else format(x, f)
  headers = dict(RATES.values())
  rate_headers = lambda rows: [headers[k] for k in _rates(rows)]
  rates = lambda r, rows: [num(r.get(k), ',.0f') for k in _rates(rows)]
  rows, seeded, scaled = result['rows'], result['seeds'], result['scaling']
  parts = [f'{result["device"]} ({result["platform"]}), JAX {result["jax_version"]}, {result["date"]}',
           report.columns([['Model', 'Blocks', 'Widths', 'dtype', 'Batch', 'Steps/dispatch',
                            'Compile s', 'Step ms', *rate_headers(rows)]] + [
               [r['model'], report.blocks(r['stage_sizes']), report.blocks(r['widths']), r['dtype'],
                str(r['batch']), str(r['steps_per_dispatch']), f'{r["compile_seconds"]:.1f}',
                f'{r["step_ms"]:.2f}', *rates(r, rows)] for r in rows])]
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
  if seeded:
    parts.append(report.columns(
        [['Seeds', 'Chain', 'Last model ms', *rate_headers(seeded), 'Protocol stepping s',
          'Over one seed']] + [
            [str(r['num_seeds']), r['name'], f'{r["last_step_ms"]:.2f}', *rates(r, seeded),
             f'{r["protocol_seconds"]:.1f}', num(r['over_one_seed'], '.2f')] for r in seeded]))
  if scaled:
    base = scaled[0]['step_ms']  # of the same global batch: the speed-up in throughput
    parts.append(report.columns(
        [['Devices', 'Blocks', 'dtype', 'Batch', 'Step ms', *rate_headers(scaled), 'Speed-up']] + [
            [str(r['devices']), report.blocks(r['stage_sizes']), r['dtype'], str(r['batch']),
             f'{r["step_ms"]:.2f}', *rates(r, scaled), f'{base / r["step_ms"]:.2f}'] for r in scaled]))
  sharded = result['fsdp']
  if sharded:
    mib = lambda b: f'{b / 2 ** 20:.2f}'
    parts.append(report.columns(
        [['FSDP', 'Devices', 'Blocks', 'Batch', 'State MiB', 'Whole on each MiB', 'Per device MiB',
          'Ideal MiB', 'Step ms', *rate_headers(sharded)]] + [
            [str(r['fsdp']), str(result['device_count']), report.blocks(r['stage_sizes']), str(r['batch']),
             mib(r['state_bytes']), mib(r['replicated_bytes']), mib(r['state_bytes_per_device']),
             mib((r['state_bytes'] - r['replicated_bytes']) / r['fsdp'] + r['replicated_bytes']),
             f'{r["step_ms"]:.2f}', *rates(r, sharded)] for r in sharded]))
  peers = result['peer']
  if peers:
    errors = ['Error'] if any('error' in p for p in peers) else []
    parts.append(report.columns(
        [['Blocks', 'dtype', 'Implementation', 'Compile s', 'Step ms', *rate_headers(peers),
          'Time / JAX', *errors]] + [
            [report.blocks(p['stage_sizes']), p['dtype'], p['implementation'],
             num(p.get('compile_seconds'), '.1f'), num(p.get('step_ms'), '.2f'), *rates(p, peers),
             num(p.get('jax_speedup'), '.2f'), *[p.get('error', '') for _ in errors]] for p in peers]))
  return '\n\n'.join(parts)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  f = flags.FLAGS
  if f.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(f.compilation_cache))
  config = cli.config_flag() if f['config'].present else None
  for name in CONFIG_SETS if config else ():
    if f[name].present:
      raise BenchError(f'--{name}: not with --config, whose fields say what is timed; override them '
                       '(--config.batch_size=32, --config.model.dtype=bfloat16, ...)')
  if config and config.cycles.widths:
    raise BenchError(f'--config={config_flags.get_config_filename(f["config"])}: its plan widens (config.cycles.widths), and the bench times '
                     'plans that only deepen; time each width as a plan of its own '
                     '(--config.cycles.widths=() --config.model.width=...)')
  for name in ('seeds', 'fsdp'):
    if not all(k.strip().lstrip('-').isdigit() for k in f[name].value):
      raise BenchError(f'--{name}={",".join(f[name].value)}: each must be a positive integer')
  if f.out:  # checked now, not after minutes of measuring
    folder = os.path.dirname(os.path.abspath(f.out))
    if os.path.isdir(f.out):
      raise BenchError(f'--out={f.out}: is a folder; give a file name')
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
      raise BenchError(f'--out={f.out}: {folder} is not a writable folder')
  result = run(chains=None if config else f.chains, dataset=f.dataset, dtypes=f.dtype, batch=f.batch,
               steps_per_dispatch=f.steps_per_dispatch, steps=f.steps, warmup=f.warmup, quick=f.quick,
               full=f.full, peer=f.peer, seeds=[int(k) for k in f.seeds], full_epochs=f.epochs,
               config=config, fsdp=[int(n) for n in f.fsdp])
  print(table(result))
  if f.out:
    report.write_json(f.out, result)
    print(f'\nwrote {f.out}')


if __name__ == '__main__':  # flags only in the program: importing the library defines none
  config_flags.DEFINE_config_file('config', None, 'A config file, as mlres.main takes it (with its '
                                  '--config.FIELD overrides): its chain is timed instead of --chains.',
                                  lock_config=True)
  flags.DEFINE_list('chains', ['res122i', 'res50i'],
                    f'Keys of mlres.config.MODELS ({", ".join(config_lib.MODELS)}), of the ViT '
                    f'chains ({", ".join(VIT)}) or of the GPU GPT chains ({", ".join(GPT)}).')
  flags.DEFINE_string('dataset', 'cifar10', 'Whose image shape, sizes, classes, batch and augmentation '
                      f'the synthetic data takes: {", ".join(SHAPES)}. The GPT chains read pystdlib '
                      '(the standard library sources) whatever it says.')
  flags.DEFINE_list('dtype', ['bfloat16'], 'Compute dtypes to time, e.g. float32,bfloat16.')
  flags.DEFINE_integer('batch', None, "Batch size (default: the paper's for --dataset, a GPT chain's config's "
                       "64 windows; 16 with --quick).")
  flags.DEFINE_integer('steps_per_dispatch', 0, "Steps per compiled call; 0: the trainer's rule.")
  flags.DEFINE_integer('steps', None, 'Timed steps per architecture (default 500; 50 with --quick).')
  flags.DEFINE_integer('warmup', None, 'Untimed steps after compiling (default 100; 2 with --quick).')
  flags.DEFINE_bool('quick', False, 'Tiny images or contexts, widths, chains and step counts: seconds '
                    'on a CPU; each chain is named for what it shrank to.')
  flags.DEFINE_bool('full', False, 'Also train the multi-level and last-cycle protocols end to end.')
  flags.DEFINE_integer('epochs', None, "With --full: the protocols' epochs in all, split in the "
                       "paper's proportions (default: the paper's 160; 16 with --quick).")
  flags.DEFINE_string('peer', '', "'torch': time the same network and step in PyTorch too.")
  flags.DEFINE_list('seeds', [], 'Seed counts K to train together (num_seeds), e.g. 1,2,4,8,16: the '
                    "first chain's images/s and protocol stepping time for each.")
  flags.DEFINE_list('fsdp', [], "FSDP sizes, e.g. 1,2,4,8: the first chain's last model with its "
                    'train state sharded that many ways over the devices (each size must divide them): '
                    "each device's bytes of the state and the step time.")
  flags.DEFINE_string('out', '', 'Write the results as JSON to this path.')
  flags.DEFINE_string('compilation_cache', config_lib.default().compilation_cache,
                      "JAX's persistent compilation cache, the trainer's; '' times cold compiles.")
  cli.run(main, (BenchError, *cli.ERRORS))
