"""The paper's dynamical-systems analyses of trained runs (Sec. 3, Appendix C), as figures and tables.

  python -m mlres.analyze lesion --workdir=runs/digits
  python -m mlres.analyze gamma-vs-depth --workdir=runs/a --workdir=runs/b@22 --out=figures

A workdir may end in @EPOCH (or --epoch=EPOCH for all) to analyse that checkpoint, not the latest. Each analysis
prints its table and writes NAME.png and NAME.json (or .csv) into --out (default WORKDIR/analysis).

Every family goes through one code path: the blocks are those of the residual stacks its model declares
(`model.stacks`, mlres.growth.stacks), so a ResNet's stages, a ViT's encoder and a GPT's decoder, in either
layout, are lesioned, shuffled and measured alike; the held-out data, its evaluation and its metric are
the task's (mlres.tasks), as the trainer evaluates: test accuracy for images, validation bits per byte
and next-byte accuracy for a language model.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
from typing import Any, Callable

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlres import config as config_lib
from mlres import data as data_lib
from mlres import cli, parallel, report, tasks, train
from mlres.checkpoint import Checkpointer, CheckpointError
from mlres.growth import stacks as stacks_lib
from mlres.growth.depth import architecture, drop_block, stack_sizes
from mlres.growth.stacks import Stack


class NotApplicable(ValueError):
  """An analysis that cannot apply to a run (no declared stacks, no two blocks to shuffle, runs of
  different families or tasks): the command says why in one line."""


@dataclasses.dataclass(frozen=True)
class Measure:
  """What the analyses report of a task's held-out split. columns: a table's column -> the trainer's
  metric it holds ('loss' or 'accuracy' of test_loss, test_accuracy); headline: the column the
  figures plot; scale: 100 shows a fraction as a percentage."""
  columns: dict[str, str]
  headline: str
  axis: str
  scale: float
  show: Callable[[float], str]  # a headline value in a figure's legend
  held_out: str  # the split's name: 'test', or a language model's 'validation'
  examples: str  # what one held-out example is, for the norms' axis


MEASURES = {
    'image_classification': Measure({'accuracy': 'accuracy'}, 'accuracy', 'accuracy (%)', 100,
                                    lambda v: f'{100 * v:.2f}%', 'test', 'test images'),
    'language_model': Measure({'bits_per_byte': 'loss', 'accuracy': 'accuracy'}, 'bits_per_byte',
                              'bits per byte', 1, lambda v: f'{v:.4f}', 'validation', 'validation windows'),
}


@dataclasses.dataclass
class Run:
  """A trained network at one checkpoint, with the task (held-out data and metric) it was trained on.

  stacks: the residual stacks its model declares ({name: Stack}, in the model's order), where the
  analyses find the blocks; build(sizes) makes the network of its family with `sizes` blocks per
  stack (a tuple in that order), so that a lesion can drop a block. A model of one's own enters
  through these two, built like the trainer's (`dtype`, called as model(x, train)); one that declares
  no stacks is refused (NotApplicable)."""
  label: str
  workdir: str
  epoch: int
  config: Any
  variables: dict
  task: tasks.Task
  stacks: dict[str, Stack]
  build: Callable[[tuple[int, ...]], nn.Module]

  @property
  def arch(self) -> dict:
    return architecture(self.variables)

  @property
  def measure(self) -> Measure:
    return MEASURES[self.task.name]

  def sizes(self) -> dict[str, int]:
    """The number of blocks of each declared stack in the variables."""
    if not self.stacks:
      raise NotApplicable(f'{self.label}: its model declares no residual stacks (model.stacks, '
                          '{name: mlres.Stack}), so no analysis can find its blocks')
    found = stack_sizes(self.variables)
    return {name: found[name] for name in self.stacks}

  def model(self, sizes: dict[str, int] | None = None) -> nn.Module:
    return self.build(tuple((sizes or self.sizes()).values()))

  @functools.cached_property
  def held_out(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The task's held-out inputs and labels padded to whole evaluation batches, with their 0/1 mask,
    on the devices: what the trainer evaluates on."""
    return self.layout.replicate(self.task.arrays(self.config.eval_batch_size)[1])

  @functools.cached_property
  def layout(self) -> parallel.Layout:
    return parallel.Layout.all_devices()


def load_run(spec: str, seed: int = 0) -> Run:
  """Loads 'WORKDIR' (latest checkpoint) or 'WORKDIR@EPOCH'; of a run of several seeds, `seed`."""
  workdir, _, epoch = spec.partition('@')
  if epoch and not epoch.isdigit():
    raise ValueError(f'{spec}: the epoch after @ must be a whole number')
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):  # and Checkpointer would make one
    raise CheckpointError(f'{workdir} holds no checkpoint; train it first with mlres.main')
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'))
  try:
    steps = ckpt.steps()
    if not steps:
      raise CheckpointError(f'{workdir} holds no checkpoint; train it first with mlres.main')
    step = ckpt.step_of_epoch(int(epoch)) if epoch else steps[-1]
    meta = ckpt.meta(step)
    config = ml_collections.ConfigDict(meta['config'])
    ds = data_lib.load(config)
    state, _ = ckpt.restore(step, functools.partial(train.abstract_state, ds))
    epoch = meta['epoch']
  finally:
    ckpt.close()
  variables = train.variables(state)
  partial = f' and {meta["partial"]["steps"]} steps' if 'partial' in meta else ''  # a stopped run's
  label = f'{config.name} {report.blocks(meta["stage_sizes"])} h={meta["h"]:g} (epoch {epoch}{partial})'
  if not 0 <= seed < config.num_seeds:
    raise ValueError(f'--seed={seed}: {workdir} holds seeds 0 to {config.num_seeds - 1}')
  if config.num_seeds > 1:
    variables = jax.tree.map(lambda x: x[seed], variables)
    label += f' seed {seed}'
  build = functools.partial(_network, config, meta['num_classes'], config_lib.widths_of(meta))
  model = build(tuple(meta['stage_sizes']))
  return Run(label, workdir, epoch, config, variables, tasks.create(config, ds),
             dict(getattr(model, 'stacks', None) or {}), build)


def _network(config, num_classes: int, widths: dict, sizes: tuple[int, ...]) -> nn.Module:
  """The run's family at the checkpoint's `widths` with `sizes` blocks per stack; its h is the
  variables' (ode/h), not this 1."""
  return train.make_model(config, sizes, num_classes, 1.0, widths)


def evaluate(run: Run, variables, sizes: dict[str, int] | None = None) -> dict[str, float]:
  """The task's held-out metrics of `variables` (with the run's blocks, or `sizes` per stack), computed
  as the trainer evaluates (train.make_evaluate, the same batches): the columns of `run.measure`."""
  loss, correct = jax.device_get(_evaluate(run.model(sizes), run.task, run.config.eval_batch_size,
                                           run.layout, variables, *run.held_out))
  loss, accuracy = run.task.held_out(loss, correct)
  metrics = {'loss': float(loss), 'accuracy': float(accuracy)}
  return {column: metrics[field] for column, field in run.measure.columns.items()}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _evaluate(model, task, batch_size, layout, variables, inputs, labels, mask):
  return train.make_evaluate(model, task, batch_size, layout)(variables, inputs, labels, mask)


def _rebuilt(run: Run, blocks: Callable[[str, list], list]):
  """The run's variables with each stack's blocks replaced by blocks(stack name, its blocks as a
  list), in every collection that has the stack (params, a ResNet's batch_stats), in the run's
  layout: a scanned stack goes through the list layout and back (mlres.to_list, to_scanned)."""
  scanned = any(f.scanned for f in stacks_lib.find(run.variables['params']).values())
  tree = stacks_lib.to_list(run.variables) if scanned else run.variables
  tree = stacks_lib.map_stacks(tree, lambda f, node, decl, coll: {
      f'block{k}': b for k, b in enumerate(blocks(f.name, stacks_lib.list_blocks(node)))}, run.stacks)
  return stacks_lib.to_scanned(tree, stacks=run.stacks) if scanned else tree


def silenced(run: Run, stack: str, index: int):
  """The run's variables with the residual branch of block `index` of `stack` at zero (G = 0), its
  shortcut kept: the leaves its Stack declares as `zero` set to zero. The lesion of a block that
  cannot be removed (a transition, a stack's only block)."""
  zero = run.stacks[stack].zero
  if not zero:
    raise NotApplicable(f'{run.label}: stack {stack} declares no leaves that zero a block\'s residual '
                        f'branch (mlres.Stack(zero=...)), so its block {index} cannot be lesioned')

  def silence(block):
    for path in (tuple(p.split('/')) for p in zero):
      leaf = stacks_lib.lookup(block, path)
      if leaf is not None:
        block = stacks_lib.replace(block, path, jax.tree.map(jnp.zeros_like, leaf))
    return block
  return _rebuilt(run, lambda name, blocks: [
      silence(b) if (name, k) == (stack, index) else b for k, b in enumerate(blocks)])


def _transition(run: Run, stack: str, index: int) -> bool:
  """Whether the block changes the feature shape: block 0 of a stack declared with a transition."""
  return index == 0 and run.stacks[stack].transition


def lesion(run: Run) -> list[dict]:
  """The held-out metrics without each single block (Sec. 3.3); a block that cannot be removed (a
  transition, such as the ResNet's downsampling blocks, or a stack's only block) loses its residual
  branch only. 'stage' is the stack's position among the model's stacks (the ResNet's stage)."""
  sizes = run.sizes()
  rows = [{'stage': None, 'block': None, 'downsampling': False, **evaluate(run, run.variables)}]
  for s, (name, n) in enumerate(sizes.items()):
    for b in range(n):
      down = _transition(run, name, b)
      if down or n == 1:
        metrics = evaluate(run, silenced(run, name, b))
      else:
        dropped = drop_block(run.variables, name, b, stacks=run.stacks)
        metrics = evaluate(run, dropped, {**sizes, name: n - 1})
      rows.append({'stage': s, 'block': b, 'downsampling': down, **metrics})
  return rows


def shuffle(run: Run, permutations: int) -> list[dict]:
  """The held-out metrics after random permutations of the blocks within each stack; transition
  (downsampling) blocks stay in place."""
  sizes = run.sizes()
  movable = {name: [b for b in range(n) if not _transition(run, name, b)] for name, n in sizes.items()}
  if all(len(blocks) < 2 for blocks in movable.values()):
    raise NotApplicable(f'{run.label}: no stack has two blocks that can change places, so there is '
                        'nothing to shuffle')
  rows = [{'permutation': None, **evaluate(run, run.variables)}]
  for seed in range(permutations):
    orders = {}
    for s, (name, blocks) in enumerate(movable.items()):
      orders[name] = list(range(sizes[name]))
      for slot, b in zip(blocks, np.random.default_rng(seed * 1000 + s).permutation(blocks)):
        orders[name][slot] = int(b)
    shuffled = _rebuilt(run, lambda name, blocks: [blocks[i] for i in orders[name]])
    rows.append({'permutation': seed, **evaluate(run, shuffled)})
  return rows


def norms(run: Run, max_examples: int = 1000) -> list[dict]:
  """Per block: mean L2 norms of the input Y_j and the residual G(Y_j) = h F(Y_j) over held-out
  examples (an image, or a validation window, each one vector) (Fig. 4)."""
  sizes, h = run.sizes(), float(run.variables['ode']['h'])
  model, inputs = run.model(), run.held_out[0]
  n, batch = min(max_examples, run.task.num_test), run.config.eval_batch_size
  totals = None
  for i in range(0, n, batch):
    x = run.task.test_inputs(inputs[i:min(i + batch, n)], model.dtype)
    sums = jax.device_get(_block_norms(model, tuple(sizes), run.variables, x))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  rows, j = [], 0
  for s, name in enumerate(sizes):
    for b, (y, g) in enumerate(zip(*totals[name])):
      rows.append({'block': j + 1, 'stage': s, 'index': b, 't': j * h,
                   'input_norm': float(y) / n, 'residual_norm': float(g) / n,
                   'f_norm': float(g) / n / h, 'downsampling': _transition(run, name, b)})
      j += 1
  return rows


@functools.partial(jax.jit, static_argnums=(0, 1))
def _block_norms(model, stack_names, variables, x) -> dict:
  """Per stack: sums over the batch of ||Y_j|| and of ||G(Y_j)|| for each of its blocks, from one
  forward pass. A block is a module whose parent is a stack; its input is recorded as it is called,
  its residual G is what it sows as 'residual' (both families' blocks do)."""
  def record_input(call, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and '/'.join(module.path[:-1]) in stack_names:
      module.sow('intermediates', 'input', args[0])
    return call(*args, **kwargs)
  with nn.intercept_methods(record_input):
    _, state = model.apply(variables, x, mutable=['intermediates'])
  # Per example (an image, a window) one norm over all its features, summed over the batch.
  total = lambda a: jnp.sum(jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32)),
                                              axis=tuple(range(1, a.ndim)))))
  out = {}
  for name in stack_names:
    node = stacks_lib.get(state['intermediates'], tuple(name.split('/')))
    scanned = stacks_lib.SCAN in node  # then each value has a leading axis over the blocks
    blocks = [node[stacks_lib.SCAN]] if scanned else stacks_lib.list_blocks(node)
    if any('residual' not in b for b in blocks):
      raise NotApplicable(f'the blocks of {name} sow no residual G(Y) (self.sow("intermediates", '
                          '"residual", g) in the block), so their norms cannot be read')
    out[name] = tuple(jax.vmap(total)(blocks[0][k][0]) if scanned
                      else jnp.stack([total(b[k][0]) for b in blocks]) for k in ('input', 'residual'))
  return out


def gamma(rows: list[dict]) -> float:
  """The mean residual norm over all blocks (Fig. 3)."""
  return float(np.mean([r['residual_norm'] for r in rows]))


def reciprocal_fits(table: list[dict]) -> dict[float, float]:
  """Per step size h with two runs or more: c of the least-squares fit gamma = c / d (Eq. 5).

  Runs of different h are never fitted together: G = hF, so their gammas differ by h itself,
  not only by depth. Fig. 3 holds h = 1 (the implicit step size) and varies the depth.
  """
  fits = {}
  for h in sorted({row['h'] for row in table}, reverse=True):
    d = np.array([row['blocks'] for row in table if row['h'] == h], float)
    g = np.array([row['gamma'] for row in table if row['h'] == h])
    if len(d) > 1:
      fits[h] = float(np.sum(g / d) / np.sum(1 / d ** 2))
  return fits


def curves(workdir: str, seed: int = 0) -> list[dict]:
  """metrics.jsonl of a run; of a run of several seeds, seed `seed`'s own values."""
  records = report.read_jsonl(os.path.join(workdir.partition('@')[0], 'metrics.jsonl'))
  if not records:
    raise CheckpointError(f'{workdir} has no metrics.jsonl; train it first with mlres.main')
  num_seeds = len(records[0]['seeds']['test_accuracy']) if 'seeds' in records[0] else 1
  if not 0 <= seed < num_seeds:
    raise ValueError(f'--seed={seed}: {workdir} holds seeds 0 to {num_seeds - 1}')
  _say_seed(workdir, seed, num_seeds)
  return [{**r, **{k: v[seed] for k, v in r.get('seeds', {}).items()}} for r in records]


@dataclasses.dataclass(frozen=True)
class Options:
  """What some analyses take beside the runs."""
  permutations: int = 5
  max_examples: int = 1000
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Analysis:
  """An entry of ANALYSES. Its input is the one Run it analyses (one_run), the Runs (checkpoints),
  or the workdirs themselves; compute(input, options) gives what NAME.json holds, rows(result) what
  NAME.csv and the printed table hold, and plot(ax, result, input) draws NAME.png."""
  compute: Callable[[Any, Options], Any]
  plot: Callable[[Any, Any, Any], None]
  rows: Callable[[Any], list[dict]] = lambda result: result
  one_run: bool = False
  checkpoints: bool = True
  legend: str = 'best'


def run_analysis(what: str, specs: list[str], out: str, permutations: int = 5, max_examples: int = 1000,
                 seed: int = 0) -> dict:
  """Runs one analysis, writes OUT/WHAT.png and OUT/WHAT.json, prints its table; returns the numbers."""
  # A Figure of its own, not pyplot's: no display needed, and nothing left open if analysis fails.
  from matplotlib.figure import Figure
  if what not in ANALYSES:
    raise ValueError(f'unknown analysis {what!r}; choose one of {", ".join(ANALYSES)}')
  for name, value in (('permutations', permutations), ('max_examples', max_examples)):
    if value < 1:
      raise ValueError(f'--{name}={value}: must be at least 1')
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f'--out={out}: is a file, not a folder')
  analysis = ANALYSES[what]
  fig = Figure(figsize=(8, 4.5), layout='constrained')
  ax = fig.subplots()
  given = _input(what, specs, seed)
  result = analysis.compute(given, Options(permutations, max_examples, seed))
  table = analysis.rows(result)
  analysis.plot(ax, result, given)
  ax.legend(fontsize='small', loc=analysis.legend)
  ax.grid(alpha=0.3)
  _write(out, what.replace('-', '_'), fig, result, table)
  return {'table': table, 'result': result}


def _write(out: str, name: str, fig, result, table: list[dict]) -> None:
  """OUT/NAME.png, .json and .csv, and the table printed."""
  os.makedirs(out, exist_ok=True)  # only now: a run that cannot be analysed leaves no folder
  path = os.path.join(out, name)
  fig.savefig(f'{path}.png', dpi=110)
  report.write_json(f'{path}.json', result)
  rows = io.StringIO(newline='')
  writer = csv.DictWriter(rows, fieldnames=list(table[0]))
  writer.writeheader()
  writer.writerows(table)
  report.write_text(f'{path}.csv', rows.getvalue())
  print(_format(table))
  print(f'\nwrote {path}.png, .json and .csv')


def _input(what: str, specs: list[str], seed: int):
  """What the analysis takes: the workdirs themselves, their Runs, or the one Run. Says which seed
  it analyses of a run of several."""
  analysis = ANALYSES[what]
  if not analysis.checkpoints:
    return specs
  runs = [load_run(spec, seed) for spec in specs]
  for run in runs:
    _say_seed(run.workdir, seed, run.config.num_seeds)
  if not analysis.one_run:
    _check_alike(what, [run.config.model.name for run in runs], 'family')
    return runs
  if len(runs) != 1:
    raise ValueError(f'{what} analyses one run; got {len(runs)} workdirs')
  return runs[0]


def _say_seed(workdir: str, seed: int, num_seeds: int) -> None:
  """Of a run of several seeds, which one is analysed."""
  if num_seeds > 1:
    print(f'{workdir}: seed {seed} of its {num_seeds} (seeds 0 to {num_seeds - 1}; '
          '--seed=K analyses another)')


def _check_alike(what: str, kinds: list[str], of: str) -> None:
  """Runs compared in one figure must share one family (or task): one depth axis, one metric."""
  if len(set(kinds)) > 1:
    raise NotApplicable(f'{what} compares runs of one {of}; got {", ".join(dict.fromkeys(kinds))}')


def _bar_labels(result) -> tuple[list[str], str]:
  """The blocks' labels, stage.block where the model has several stacks."""
  several = len({r['stage'] for r in result}) > 1
  labels = [f'{r["stage"]}.{r["block"]}' if several else str(r['block']) for r in result]
  return labels, 'removed block (stage.block)' if several else 'removed block'


def _plot_lesion(ax, result, run: Run):
  from matplotlib.patches import Rectangle
  m = run.measure
  base = result[0][m.headline]
  labels, xlabel = _bar_labels(result[1:])
  colors = ['C3' if r['downsampling'] else 'C0' for r in result[1:]]
  ax.bar(labels, [m.scale * r[m.headline] for r in result[1:]], color=colors)
  ax.axhline(m.scale * base, color='k', linestyle='--', label=f'no lesion ({m.show(base)})')
  if any(r['downsampling'] for r in result[1:]):
    ax.add_patch(Rectangle((0, 0), 0, 0, color='C3', label='downsampling block (residual removed)'))
  ax.set(xlabel=xlabel, ylabel=f'{m.held_out} {m.axis}', title=f'Lesion: {run.label}')
  ax.tick_params(axis='x', labelrotation=90)


def _plot_shuffle(ax, result, run: Run):
  m = run.measure
  base = result[0][m.headline]
  ax.bar([str(r['permutation']) for r in result[1:]], [m.scale * r[m.headline] for r in result[1:]],
         color='C0')
  ax.axhline(m.scale * base, color='k', linestyle='--', label=f'original order ({m.show(base)})')
  ax.set(xlabel='permutation', ylabel=f'{m.held_out} {m.axis}',
         title=f'Blocks shuffled within stages: {run.label}')


def _plot_norms(ax, result, run: Run):
  blocks = [r['block'] for r in result]
  ax.plot(blocks, [r['input_norm'] for r in result], 'o-', label='input ||Y_j||')
  ax.plot(blocks, [r['residual_norm'] for r in result], 's-', label='residual ||G(Y_j)||')
  for r in result:
    if r['downsampling']:
      ax.axvline(r['block'], color='C3', alpha=0.3)
  red = '; red: downsampling' if any(r['downsampling'] for r in result) else ''
  ax.set(yscale='log', xlabel='block j', ylabel=f'mean L2 norm over {run.measure.examples}',
         title=f'Norms per block (gamma = {gamma(result):.3g}{red}): {run.label}')


def _norms_per_run(runs: list[Run], options: Options) -> dict[str, list[dict]]:
  return {r.label: norms(r, options.max_examples) for r in runs}


def gamma_vs_depth(runs: list[Run], options: Options) -> list[dict]:
  """Per run: its blocks, h, gamma and the fit c / d of the runs of its h; by h falling, then depth."""
  table = [{'run': label, 'blocks': len(rows), 'h': float(r.variables['ode']['h']), 'gamma': gamma(rows)}
           for r, (label, rows) in zip(runs, _norms_per_run(runs, options).items())]
  table.sort(key=lambda row: (-row['h'], row['blocks']))
  fits = reciprocal_fits(table)
  for row in table:
    row['fit'] = fits[row['h']] / row['blocks'] if row['h'] in fits else None
  return table


def _plot_gamma_vs_depth(ax, table, runs):
  fits = reciprocal_fits(table)
  for i, h in enumerate(dict.fromkeys(row['h'] for row in table)):  # table order: h falling
    rows = [row for row in table if row['h'] == h]
    d = np.array([row['blocks'] for row in rows], float)
    ax.plot(d, [row['gamma'] for row in rows], 'o-', color=f'C{i}', label=f'gamma, h = {h:g}')
    if h in fits:
      grid = np.linspace(d.min(), d.max(), 100)
      ax.plot(grid, fits[h] / grid, ':', color=f'C{i}', label=f'{fits[h]:.3g} / d')
  ax.set(xlabel='number of residual blocks d', ylabel='mean residual norm gamma',
         title='Mean residual norm against depth (Fig. 3)')


def _step_size_rows(per_run) -> list[dict]:
  return [{'run': label, 'block': row['block'], 't': row['t'], 'f_norm': row['f_norm']}
          for label, rows in per_run.items() for row in rows]


def _plot_step_size(ax, per_run, runs):
  for label, rows in per_run.items():
    ax.plot([row['t'] for row in rows], [row['f_norm'] for row in rows], '.-', label=label)
  ax.set(xlabel='time point t_j = j h', ylabel='||F(Y_j)|| = ||G(Y_j)|| / h',
         title='The residual function along the ODE time (Fig. 7)')


def _curves(specs: list[str], options: Options) -> dict[str, list[dict]]:
  result = {spec: curves(spec, options.seed) for spec in specs}
  _check_alike('curves', [records[0]['task'] for records in result.values()], 'task')
  return result


def _curve_measure(result) -> Measure:
  return MEASURES[next(iter(result.values()))[0]['task']]


def _curves_rows(result) -> list[dict]:
  """Per epoch the train and held-out values of the task's columns (train_accuracy, test_accuracy;
  a language model's train_bits_per_byte, validation_bits_per_byte and its accuracies)."""
  m = _curve_measure(result)
  values = lambda r: {f'{split}_{column}': r[f'{key}_{field}'] for column, field in m.columns.items()
                      for split, key in (('train', 'train'), (m.held_out, 'test'))}
  return [{'run': os.path.basename(os.path.normpath(s)), 'epoch': r['epoch'], 'cycle': r['cycle'],
           'blocks': report.blocks(r['stage_sizes']), **values(r)} for s, rs in result.items() for r in rs]


def _plot_curves(ax, result, specs):
  m = _curve_measure(result)
  field = m.columns[m.headline]
  for i, (spec, records) in enumerate(result.items()):
    epochs = [r['epoch'] for r in records]
    name = os.path.basename(os.path.normpath(spec))
    ax.plot(epochs, [m.scale * r[f'train_{field}'] for r in records], f'C{i}--', label=f'{name} train')
    ax.plot(epochs, [m.scale * r[f'test_{field}'] for r in records], f'C{i}-', label=f'{name} {m.held_out}')
    for a, b in zip(records, records[1:]):
      if b['cycle'] != a['cycle']:
        ax.axvline(a['epoch'] + 0.5, color=f'C{i}', alpha=0.3, linestyle=':')
  ax.set(xlabel='epoch', ylabel=m.axis, title=f'Train and {m.held_out} {m.axis}; dotted: new cycle')


ANALYSES = {
    'lesion': Analysis(lambda run, _: lesion(run), _plot_lesion, one_run=True, legend='lower left'),
    'shuffle': Analysis(lambda run, o: shuffle(run, o.permutations), _plot_shuffle, one_run=True,
                        legend='lower left'),
    'norms': Analysis(lambda run, o: norms(run, o.max_examples), _plot_norms, one_run=True),
    'gamma-vs-depth': Analysis(gamma_vs_depth, _plot_gamma_vs_depth),
    'step-size': Analysis(_norms_per_run, _plot_step_size, rows=_step_size_rows),
    'curves': Analysis(_curves, _plot_curves, rows=_curves_rows, checkpoints=False),
}


def _format(rows: list[dict]) -> str:
  cell = lambda v: f'{v:.4g}' if isinstance(v, float) else ('-' if v is None else str(v))
  return report.columns([list(rows[0])] + [[cell(v) for v in r.values()] for r in rows])


FLAGS = flags.FLAGS


def main(argv):
  usage = f'usage: python -m mlres.analyze <{"|".join(ANALYSES)}> --workdir=DIR'
  if len(argv) != 2:
    raise app.UsageError(usage)
  if argv[1] not in ANALYSES:
    raise app.UsageError(f'unknown analysis {argv[1]!r}; {usage}')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required')
  specs = [w if '@' in w or FLAGS.epoch is None else f'{w}@{FLAGS.epoch}' for w in FLAGS.workdir]
  out = FLAGS.out or os.path.join(FLAGS.workdir[0].partition('@')[0],
                                  'analysis' + (f'-seed{FLAGS.seed}' if FLAGS.seed else ''))
  run_analysis(argv[1], specs, out, FLAGS.permutations, FLAGS.max_examples, FLAGS.seed)


if __name__ == '__main__':  # flags only in the program: importing the library defines none
  flags.DEFINE_multi_string('workdir', None, 'A trained run, WORKDIR or WORKDIR@EPOCH; repeat for '
                            'gamma-vs-depth, step-size and curves.')
  flags.DEFINE_integer('epoch', None, 'The epoch whose checkpoint to analyse for each workdir without '
                       '@EPOCH (default: the latest).')
  flags.DEFINE_string('out', None, 'Folder for the figure and numbers (default: FIRST_WORKDIR/analysis, '
                      'or analysis-seedK for --seed=K > 0).')
  flags.DEFINE_integer('permutations', 5, 'Random block orders tried by shuffle.')
  flags.DEFINE_integer('seed', 0, 'Of a run trained with num_seeds > 1, the seed to analyse.')
  flags.DEFINE_integer('max_examples', 1000, 'Held-out examples (images, or validation windows) used '
                       'for norms, gamma-vs-depth and step-size.')
  cli.run(main, errors=(ValueError, CheckpointError, data_lib.DataError, report.WorkdirError))
