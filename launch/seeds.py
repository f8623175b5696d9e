"""Runs one of the paper's comparisons with K seeds per variant and prints mean and 95% interval.

  python launch/seeds.py --experiment=reset --config=configs/cifar10_res50i.py --num_seeds=10 --root=runs/fig10
  python launch/seeds.py --experiment=cycles --config=configs/cifar10_res50i.py --num_seeds=10 --root=runs/c

reset:  the multi-level config with its learning rate restarted at every cycle and with one cosine
        over the whole run (Fig. 10).
cycles: the first-cycle model, the last-cycle model and the multi-level model, each trained for
        the config's epochs with its restarts (Tables 3 and 4).
Each variant is one `mlres.main` run of `--config.num_seeds=K` seeds trained together; finished
variants of the same config are not run again (one of another config is refused), an interrupted
one resumes. Extra `--config.*` flags go to every run.
"""
import argparse
import os

from mlres import cli, report
from mlres.config import ConfigError


def variants(experiment: str, config) -> dict[str, list[str]]:
  """Variant name -> the config overrides that make it."""
  if experiment == 'reset':
    return {'reset': ['--config.optimizer.reset_lr=True'],
            'no-reset': ['--config.optimizer.reset_lr=False']}
  chain = [tuple(s) for s in config.cycles.stage_sizes]
  same = lambda sizes: f'--config.cycles.stage_sizes={tuple([sizes] * len(chain))}'
  return {'first-cycle': [same(chain[0])], 'last-cycle': [same(chain[-1])], 'multi-level': []}


def row(name: str, summary: dict) -> list[str]:
  errors = summary.get('test_error_seeds', [summary['test_error']])
  interval = f'± {100 * summary["test_error_ci95"]:.2f}' if 'test_error_ci95' in summary else ''
  return [name, report.chain(summary['stage_sizes']), str(len(errors)),
          f'{100 * summary["test_error"]:.2f}% {interval}'.strip(),
          ' '.join(f'{100 * e:.2f}' for e in errors), f'{summary["train_seconds"]:.1f}']


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--experiment', required=True, choices=['reset', 'cycles'])
  parser.add_argument('--config', required=True, help='a multi-level config file')
  parser.add_argument('--num_seeds', type=int, default=10)
  parser.add_argument('--root', required=True, help='folder that gets one workdir per variant')
  args, overrides = parser.parse_known_args()
  bad = [o for o in overrides if not o.startswith('--config.')]
  if bad:
    parser.error(f'unrecognized arguments: {" ".join(bad)}')
  if args.num_seeds < 2:
    parser.error(f'--num_seeds={args.num_seeds}: an interval needs at least 2 seeds')
  try:
    config = cli.load_config(args.config, overrides)
  except ConfigError as e:
    parser.error(str(e))
  if len({tuple(s) for s in config.cycles.stage_sizes}) < 2:
    parser.error(f'--config={args.config}: not a multi-level config (its stage sizes never change)')
  rows = []
  for name, extra in variants(args.experiment, config).items():
    # The variant's own value of a field replaces the user's (given twice, a tuple would be joined).
    fields = {o.partition('=')[0] for o in extra}
    kept = [o for o in overrides if o.partition('=')[0] not in fields]
    summary = cli.finished_or_run(name, args.config, os.path.join(args.root, name), [
        f'--config.num_seeds={args.num_seeds}', f'--config.name={config.name} {name}', *extra, *kept])
    rows.append(row(name, summary))
  print()
  print(report.columns([['Variant', 'Blocks', 'Seeds', 'Test error (mean ± 95%)', 'Per seed (%)',
                         'Stepping s']] + rows))


if __name__ == '__main__':
  main()
