"""The paper's dynamical-systems analyses of trained runs (Sec. 3, Appendix C), as figures and tables.

  python -m mlres.analyze lesion --workdir=runs/digits
  python -m mlres.analyze gamma-vs-depth --workdir=runs/a --workdir=runs/b@22 --out=figures

A workdir may end in @EPOCH (or --epoch=EPOCH for all) to analyse that checkpoint, not the latest. Each analysis
prints its table and writes NAME.png and NAME.json (or .csv) into --out (default WORKDIR/analysis).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
from typing import Any, Callable

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlres import data as data_lib
from mlres import cli, report, train
from mlres.checkpoint import Checkpointer, CheckpointError
from mlres.interpolate import architecture, changes_shape, drop_block
from mlres.model import Block


@dataclasses.dataclass
class Run:
  """A trained network at one checkpoint, with the test data it was evaluated on."""
  label: str
  workdir: str
  epoch: int
  config: Any
  variables: dict
  test_images: np.ndarray
  test_labels: np.ndarray
  mean: np.ndarray
  std: np.ndarray

  @property
  def arch(self) -> dict:
    return architecture(self.variables)

  def model(self, stage_sizes=None):
    return train.make_model(self.config, stage_sizes or self.arch['stage_sizes'],
                            self.arch['num_classes'], 1.0)


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
  return Run(label, workdir, epoch, config, variables, ds.test_images, ds.test_labels, ds.mean, ds.std)


def accuracy(run: Run, variables, stage_sizes=None) -> float:
  """Test accuracy of `variables` in the run's architecture (or `stage_sizes`)."""
  model = run.model(stage_sizes)
  correct = 0
  for x, y in _batches(run):
    logits = _apply(model, variables, data_lib.standardize(x, run.mean, run.std))
    correct += int(jnp.sum(jnp.argmax(logits, -1) == y))
  return correct / len(run.test_labels)


@jax.jit
def _zero_conv2(block):
  return {**block, 'conv2': jax.tree.map(jnp.zeros_like, block['conv2'])}


def silence_block(variables, stage: int, index: int):
  """The block's residual branch set to zero (G = 0) while its shortcut stays."""
  params = variables['params']
  name, block = f'stage{stage}', f'block{index}'
  stage_tree = {**params[name], block: _zero_conv2(params[name][block])}
  return {**variables, 'params': {**params, name: stage_tree}}


def lesion(run: Run) -> list[dict]:
  """Accuracy without each single block (Sec. 3.3); a downsampling block loses its residual only."""
  rows = [{'stage': None, 'block': None, 'downsampling': False, 'accuracy': accuracy(run, run.variables)}]
  for s, n in enumerate(run.arch['stage_sizes']):
    for b in range(n):
      down = changes_shape(s, b)
      if down or n == 1:
        acc = accuracy(run, silence_block(run.variables, s, b))
      else:
        sizes = tuple(m - (i == s) for i, m in enumerate(run.arch['stage_sizes']))
        acc = accuracy(run, drop_block(run.variables, s, b), sizes)
      rows.append({'stage': s, 'block': b, 'downsampling': down, 'accuracy': acc})
  return rows


def shuffle(run: Run, permutations: int) -> list[dict]:
  """Accuracy after random permutations of the blocks within each stage; downsampling blocks stay."""
  rows = [{'permutation': None, 'accuracy': accuracy(run, run.variables)}]
  for seed in range(permutations):
    out = {k: dict(v) for k, v in run.variables.items()}
    for coll in ('params', 'batch_stats'):
      for s, n in enumerate(run.arch['stage_sizes']):
        stage = run.variables[coll][f'stage{s}']
        movable = [b for b in range(n) if not changes_shape(s, b)]
        order = list(range(n))
        for slot, b in zip(movable, np.random.default_rng(seed * 1000 + s).permutation(movable)):
          order[slot] = int(b)
        out[coll][f'stage{s}'] = {f'block{i}': stage[f'block{b}'] for i, b in enumerate(order)}
    rows.append({'permutation': seed, 'accuracy': accuracy(run, out)})
  return rows


def norms(run: Run, max_examples: int = 1000) -> list[dict]:
  """Per block: mean L2 norms of the input Y_j and the residual G(Y_j) = h F(Y_j) (Fig. 4)."""
  model, h = run.model(), float(run.variables['ode']['h'])
  totals = None
  count = 0
  for x, _ in _batches(run, max_examples):
    sums = jax.device_get(_block_norms(model, run.variables, data_lib.standardize(x, run.mean, run.std)))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    count += len(x)
  rows, j = [], 0
  for s, n in enumerate(run.arch['stage_sizes']):
    for b in range(n):
      y, g = totals[f'stage{s}/block{b}']
      rows.append({'block': j + 1, 'stage': s, 'index': b, 't': j * h,
                   'input_norm': float(y) / count, 'residual_norm': float(g) / count,
                   'f_norm': float(g) / count / h,
                   'downsampling': changes_shape(s, b)})
      j += 1
  return rows


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


@functools.partial(jax.jit, static_argnums=0)
def _block_norms(model, variables, x) -> dict:
  """Sums over the batch of ||Y_j|| and ||G(Y_j)|| per block, from one forward pass."""
  _, state = model.apply(variables, x, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, Block) or m.name == 'stem')
  inter = state['intermediates']
  y = inter['stem']['__call__'][0]
  out = {}
  norm = lambda a: jnp.sum(jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32)), axis=(1, 2, 3))))
  for s, n in enumerate(model.stage_sizes):
    for b in range(n):
      block = inter[f'stage{s}'][f'block{b}']
      out[f'stage{s}/block{b}'] = (norm(y), norm(block['residual'][0]))
      y = block['__call__'][0]
  return out


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, x):
  return model.apply(variables, x)


def _batches(run: Run, limit: int | None = None, size: int = 500):
  n = len(run.test_labels) if limit is None else min(limit, len(run.test_labels))
  for i in range(0, n, size):
    yield jnp.asarray(run.test_images[i:min(i + size, n)]), jnp.asarray(run.test_labels[i:min(i + size, n)])


def curves(workdir: str) -> list[dict]:
  """metrics.jsonl of a run."""
  records = report.read_jsonl(os.path.join(workdir.partition('@')[0], 'metrics.jsonl'))
  if not records:
    raise CheckpointError(f'{workdir} has no metrics.jsonl; train it first with mlres.main')
  return records


@dataclasses.dataclass(frozen=True)
class Options:
  """What some analyses take beside the runs."""
  permutations: int = 5
  max_examples: int = 1000


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
  result = analysis.compute(given, Options(permutations, max_examples))
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
  """What the analysis takes: the workdirs themselves, their Runs, or the one Run."""
  analysis = ANALYSES[what]
  if not analysis.checkpoints:
    return specs
  runs = [load_run(spec, seed) for spec in specs]
  if not analysis.one_run:
    return runs
  if len(runs) != 1:
    raise ValueError(f'{what} analyses one run; got {len(runs)} workdirs')
  return runs[0]


def _plot_lesion(ax, result, run: Run):
  from matplotlib.patches import Rectangle
  base = result[0]['accuracy']
  labels = [f'{r["stage"]}.{r["block"]}' for r in result[1:]]
  colors = ['C3' if r['downsampling'] else 'C0' for r in result[1:]]
  ax.bar(labels, [100 * r['accuracy'] for r in result[1:]], color=colors)
  ax.axhline(100 * base, color='k', linestyle='--', label=f'no lesion ({100 * base:.2f}%)')
  ax.add_patch(Rectangle((0, 0), 0, 0, color='C3', label='downsampling block (residual removed)'))
  ax.set(xlabel='removed block (stage.block)', ylabel='test accuracy (%)',
         title=f'Lesion: {run.label}')
  ax.tick_params(axis='x', labelrotation=90)


def _plot_shuffle(ax, result, run: Run):
  base = result[0]['accuracy']
  ax.bar([str(r['permutation']) for r in result[1:]], [100 * r['accuracy'] for r in result[1:]],
         color='C0')
  ax.axhline(100 * base, color='k', linestyle='--', label=f'original order ({100 * base:.2f}%)')
  ax.set(xlabel='permutation', ylabel='test accuracy (%)',
         title=f'Blocks shuffled within stages: {run.label}')


def _plot_norms(ax, result, run: Run):
  blocks = [r['block'] for r in result]
  ax.plot(blocks, [r['input_norm'] for r in result], 'o-', label='input ||Y_j||')
  ax.plot(blocks, [r['residual_norm'] for r in result], 's-', label='residual ||G(Y_j)||')
  for r in result:
    if r['downsampling']:
      ax.axvline(r['block'], color='C3', alpha=0.3)
  ax.set(yscale='log', xlabel='block j', ylabel='mean L2 norm over test images',
         title=f'Norms per block (gamma = {gamma(result):.3g}; red: downsampling): {run.label}')


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


def _curves_rows(result) -> list[dict]:
  return [{'run': os.path.basename(os.path.normpath(s)), 'epoch': r['epoch'], 'cycle': r['cycle'],
           'blocks': report.blocks(r['stage_sizes']), 'train_accuracy': r['train_accuracy'],
           'test_accuracy': r['test_accuracy']} for s, rs in result.items() for r in rs]


def _plot_curves(ax, result, specs):
  for i, (spec, records) in enumerate(result.items()):
    epochs = [r['epoch'] for r in records]
    name = os.path.basename(os.path.normpath(spec))
    ax.plot(epochs, [100 * r['train_accuracy'] for r in records], f'C{i}--', label=f'{name} train')
    ax.plot(epochs, [100 * r['test_accuracy'] for r in records], f'C{i}-', label=f'{name} test')
    for a, b in zip(records, records[1:]):
      if b['cycle'] != a['cycle']:
        ax.axvline(a['epoch'] + 0.5, color=f'C{i}', alpha=0.3, linestyle=':')
  ax.set(xlabel='epoch', ylabel='accuracy (%)', title='Train and test accuracy; dotted: new cycle')


ANALYSES = {
    'lesion': Analysis(lambda run, _: lesion(run), _plot_lesion, one_run=True, legend='lower left'),
    'shuffle': Analysis(lambda run, o: shuffle(run, o.permutations), _plot_shuffle, one_run=True,
                        legend='lower left'),
    'norms': Analysis(lambda run, o: norms(run, o.max_examples), _plot_norms, one_run=True),
    'gamma-vs-depth': Analysis(gamma_vs_depth, _plot_gamma_vs_depth),
    'step-size': Analysis(_norms_per_run, _plot_step_size, rows=_step_size_rows),
    'curves': Analysis(lambda specs, _: {spec: curves(spec) for spec in specs}, _plot_curves,
                       rows=_curves_rows, checkpoints=False),
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
  flags.DEFINE_integer('max_examples', 1000, 'Test images used for norms.')
  cli.run(main, errors=(ValueError, CheckpointError, data_lib.DataError, report.WorkdirError))
