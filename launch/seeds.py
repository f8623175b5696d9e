"""Runs one of the paper's comparisons with K seeds per variant and prints mean and 95% interval.

  python launch/seeds.py --experiment=reset --config=configs/cifar10_res50i.py --num_seeds=10 --root=runs/fig10
  python launch/seeds.py --experiment=cycles --config=configs/cifar10_res50i.py --num_seeds=10 --root=runs/c
  python launch/seeds.py --experiment=operators --config=configs/digits.py --num_seeds=5 --root=runs/ops
  python launch/seeds.py --experiment=operators --operators=copy,zero --config=configs/pystdlib_gpt.py \
      --num_seeds=2 --root=runs/lm-ops
  python launch/seeds.py --experiment=widths --config=configs/digits_widen.py --num_seeds=5 --root=runs/widths

reset:  the multi-level config with its learning rate restarted at every cycle and with one cosine
        over the whole run (Fig. 10).
cycles: the first-cycle model, the last-cycle model and the multi-level model, each trained for
        the config's epochs with its restarts (Tables 3 and 4).
operators: the two baselines of `cycles` and the multi-level model grown by each operator of
        mlres.interpolate (copy, linear, stack, zero; --operators picks some), at equal epochs.
widths: a config whose plan deepens and widens (config.cycles.widths) against the last cycle's wide
        and deep model trained alone (wide-and-deep), depth growth at the last widths (depth), width
        growth at the last depth (width), the config's own (both), and depth growth at the first
        cycle's widths (narrow), at equal epochs. Under the table, the gap: both's training loss
        less narrow's in the epochs after each widening. The two are the same run up to it (their
        first cycle is bit-equal: the line says so), so the gap is what widening does to training
        at the same learning rate.
The table also gives the jump of the test loss (a language model's: its validation bits per byte) at
each growth (deeper or wider): the grown network's before its first step, less the one it was grown
from (mean over the seeds).
cycles, operators and widths also give G_stack's speedup of each variant over the deep baseline
(last-cycle; wide-and-deep for widths): the stepping seconds the baseline needs to reach its own
final test loss (a language model's validation bits per byte, an image classifier's test loss: the
loss, not the error) over those the variant needs to reach it, seed k against seed k, read from both
runs' metrics.jsonl by linear interpolation between epoch records at the first crossing (a loss
reached within the first epoch counts at its end: nothing is recorded before). A seed that never
reaches it shows '—'; the mean ± 95% interval is over the seeds that reached it, the cell saying how
many did not. The baseline's own is 1 by definition. Under the table of cycles and operators, whether
last-cycle beats first-cycle beyond their 95% intervals.
The definitions and their functions are in launch/speedup.py.
Each variant is one `mlres.main` run of `--config.num_seeds=K` seeds trained together; finished
variants of the same config are not run again (one of another config is refused), an interrupted
one resumes. Extra `--config.*` flags go to every run (not --config.num_seeds: that is --num_seeds).
"""
import os

import numpy as np
from absl import flags

import common
import speedup
from mlres import OPERATORS, cli, report
from mlres import config as config_lib
from mlres.config import ConfigError

flags.DEFINE_enum('experiment', None, ['reset', 'cycles', 'operators', 'widths'], 'The comparison: '
                  'reset (Fig. 10), cycles (Tables 3 and 4), operators (the growth operators) or '
                  'widths (width growth, depth growth, both).')
flags.DEFINE_string('config', None, 'A multi-level config file.')
flags.DEFINE_list('operators', list(OPERATORS), 'With --experiment=operators: the growth operators '
                  'to compare (each a run of K seeds), e.g. copy,zero.')
flags.DEFINE_integer('num_seeds', 10, 'Seeds per variant, trained together.')
flags.DEFINE_string('root', None, 'Folder that gets one workdir per variant.')
flags.mark_flags_as_required(['experiment', 'config', 'root'])


def variants(experiment: str, config, operators=OPERATORS) -> dict[str, list[str]]:
  """Variant name -> the config overrides that make it."""
  if experiment == 'reset':
    return {'reset': ['--config.optimizer.reset_lr=True'],
            'no-reset': ['--config.optimizer.reset_lr=False']}
  chain = [tuple(s) for s in config.cycles.stage_sizes]
  same = lambda sizes: f'--config.cycles.stage_sizes={tuple([sizes] * len(chain))}'
  if experiment == 'widths':
    # The last cycle's widths in every cycle; none where they are config.model's, so that the two
    # variants at those widths are the very configs of `cycles` (a finished run of one is reused).
    last = dict(config.cycles.widths[-1])
    wide = f'--config.cycles.widths={tuple([last] * len(chain)) if last else ()}'
    first = dict(config.cycles.widths[0])
    narrow = f'--config.cycles.widths={tuple([first] * len(chain)) if first else ()}'
    return {'wide-and-deep': [same(chain[-1]), wide], 'depth': [wide], 'width': [same(chain[-1])],
            'both': [], 'narrow': [narrow]}
  baselines = {'first-cycle': [same(chain[0])], 'last-cycle': [same(chain[-1])]}
  if experiment == 'cycles':
    return {**baselines, 'multi-level': []}
  return {**baselines, **{op: [f'--config.cycles.operator={op}'] for op in operators}}


def jumps(workdir: str) -> list[float]:
  """The test loss (bits per byte of a language model's validation split) of the grown network
  before its first step less that of the network it grew from, at each growth (deeper or wider)."""
  records = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [r['test_loss_at_growth'] - before['test_loss']
          for before, r in zip(records, records[1:]) if 'test_loss_at_growth' in r]


def widening_gaps(widened: str, narrow: str, epochs: int = 3) -> str:
  """A line per widening of the `widened` run: its training loss less the `narrow` run's (mean over
  seeds, then per seed) in each of the `epochs` epochs from it, and their largest difference before
  it (0 where the two are one run up to the widening)."""
  wide, thin = (report.read_jsonl(os.path.join(w, 'metrics.jsonl')) for w in (widened, narrow))
  seeds = lambda r: r['seeds']['train_loss'] if 'seeds' in r else [r['train_loss']]
  lines = []
  for i in range(1, min(len(wide), len(thin))):
    if wide[i].get('widths') == wide[i - 1].get('widths'):
      continue
    before = max(abs(a - b) for w, t in zip(wide[:i], thin) for a, b in zip(seeds(w), seeds(t)))
    after = [np.subtract(seeds(w), seeds(t)) for w, t in zip(wide[i:i + epochs], thin[i:i + epochs])]
    cells = '; '.join(f'epoch {wide[i + j]["epoch"]}: {d.mean():+.4f} ({" ".join(f"{x:+.4f}" for x in d)})'
                      for j, d in enumerate(after))
    lines.append(f'Widened at epoch {wide[i]["epoch"]} (cycle {wide[i]["cycle"] + 1}): training loss of both '
                 f'less narrow, mean (per seed): {cells}. Before it they differ by at most {before:.1e}.')
  return '\n'.join(lines)


def row(name: str, summary: dict, workdir: str, speedups: list[float | None] | None = None,
        widths: bool = False) -> list[str]:
  """The variant's blocks (and widths) over its cycles, its headline metric (test error %, or a
  language model's validation bits per byte): mean ± 95% interval, per seed; where given, its speedups
  over the deep baseline (launch/speedup.py): mean ± 95% interval, per seed; its loss jumps at
  growth; its stepping seconds."""
  metric = report.headline(summary)
  key, show = metric.key, metric.show
  values = summary.get(f'{key}_seeds', [summary[key]])
  interval = f'± {show(summary[f"{key}_ci95"])}'.rstrip('%') if f'{key}_ci95' in summary else ''
  return [name, report.chain(summary['stage_sizes']), *([report.width_chain(summary)] if widths else []),
          str(len(values)),
          f'{show(summary[key])} {interval}'.strip(), ' '.join(show(v).rstrip('%') for v in values),
          *(speedup.cells(speedups) if speedups is not None else ()),
          ' '.join(f'{j:+.4f}' for j in jumps(workdir)) or '-', f'{summary["train_seconds"]:.1f}']


def main(overrides: list[str]):
  f = flags.FLAGS
  if f.num_seeds < 2:
    common.refuse(f'--num_seeds={f.num_seeds}: an interval needs at least 2 seeds')
  # --num_seeds seeds every variant; the user's overrides come after it and would win in all of them.
  seeded = [o for o in overrides if o.partition('=')[0] == '--config.num_seeds']
  if seeded:
    common.refuse(f'{seeded[0]}: the seeds of each variant are --num_seeds; give --num_seeds='
                  f'{seeded[0].partition("=")[2]} instead')
  try:
    config = cli.load_config(f.config, overrides)
  except ConfigError as e:
    common.refuse(str(e))
  unknown = sorted(set(f.operators) - set(OPERATORS))
  if unknown or not f.operators:
    common.refuse(f'--operators={",".join(f.operators)}: name one or more of {", ".join(OPERATORS)}')
  if len({tuple(s) for s in config.cycles.stage_sizes}) < 2:
    common.refuse(f'--config={f.config}: not a multi-level config (its stage sizes never change)')
  widths = {tuple(config_lib.cycle_widths(config.model, w).items()) for w in config.cycles.widths}
  if f.experiment == 'widths' and len(widths) < 2:
    common.refuse(f'--config={f.config}: its plan never widens; --experiment=widths needs one whose '
                  'config.cycles.widths grow, such as configs/digits_widen.py')
  runs = {}
  for name, extra in variants(f.experiment, config, f.operators).items():
    # The variant's own value of a field replaces the user's (given twice, a tuple would be joined).
    fields = {o.partition('=')[0] for o in extra}
    kept = [o for o in overrides if o.partition('=')[0] not in fields]
    workdir = os.path.join(f.root, name)
    summary = common.finished_or_run(name, f.config, workdir, [
        f'--config.num_seeds={f.num_seeds}', f'--config.name={config.name} {name}', *extra, *kept])
    runs[name] = summary, workdir
  # Every variant of cycles, operators and widths against the deep baseline, seed k against seed k.
  baseline = 'wide-and-deep' if f.experiment == 'widths' else 'last-cycle'
  deep, widths = runs.get(baseline), f.experiment == 'widths'
  rows = [row(name, summary, workdir, deep and speedup.speedups(deep[1], workdir), widths)
          for name, (summary, workdir) in runs.items()]
  print()
  # The task's names: all variants share it.
  task = report.headline(summary)
  metric, loss = task.name.capitalize(), task.loss.capitalize()
  speedups = ['Speedup (mean ± 95%)', 'Speedup per seed'] if deep else []
  print(report.columns([['Variant', 'Blocks', *([report.width_column(summary)] if widths else []), 'Seeds',
                         f'{metric} (mean ± 95%)', 'Per seed', *speedups, f'{loss} jump at growth',
                         'Stepping s']] + rows))
  if deep:
    print(f'\nSpeedup: the stepping seconds {baseline} needs to reach its own final {task.loss} over '
          f'those the variant needs to reach it, seed k against seed k ({speedup.NOT_REACHED}: not '
          'reached).')
  if widths:
    print(widening_gaps(runs['both'][1], runs['narrow'][1]))
  verdict = 'first-cycle' in runs and speedup.depth_verdict(runs['first-cycle'][0], deep[0])
  if verdict:
    print(verdict)


if __name__ == '__main__':
  common.run(main)
