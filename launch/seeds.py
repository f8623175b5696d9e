"""Runs one of the paper's comparisons with K seeds per variant and prints mean and 95% interval.

  python launch/seeds.py --experiment=reset --config=configs/cifar10_res50i.py --num_seeds=10 --root=runs/fig10
  python launch/seeds.py --experiment=cycles --config=configs/cifar10_res50i.py --num_seeds=10 --root=runs/c

reset:  the multi-level config with its learning rate restarted at every cycle and with one cosine
        over the whole run (Fig. 10).
cycles: the first-cycle model, the last-cycle model and the multi-level model, each trained for
        the config's epochs with its restarts (Tables 3 and 4).
Each variant is one `mlres.main` run of `--config.num_seeds=K` seeds trained together; finished
variants are not run again, an interrupted one resumes. Extra `--config.*` flags go to every run.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

from mlres import report


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
  spec = importlib.util.spec_from_file_location('experiment_config', args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if len({tuple(s) for s in config.cycles.stage_sizes}) < 2:
    parser.error(f'--config={args.config}: not a multi-level config (its stage sizes never change)')
  rows = []
  for name, extra in variants(args.experiment, config).items():
    workdir = os.path.join(args.root, name)
    summary_path = os.path.join(workdir, 'summary.json')
    if not os.path.exists(summary_path):
      print(f'== {name}', flush=True)
      command = [sys.executable, '-m', 'mlres.main', f'--config={args.config}', f'--workdir={workdir}',
                 f'--config.num_seeds={args.num_seeds}', f'--config.name={config.name} {name}',
                 *extra, *overrides]
      if subprocess.run(command).returncode:
        sys.exit(f'error: the run of {name} failed; re-run this command to resume it')
    with open(summary_path) as f:
      rows.append(row(name, json.load(f)))
  print()
  print(report.columns([['Variant', 'Blocks', 'Seeds', 'Test error (mean ± 95%)', 'Per seed (%)',
                         'Stepping s']] + rows))


if __name__ == '__main__':
  main()
