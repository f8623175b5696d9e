"""Runs every row of Table 3 or 4 for one dataset into one folder, then prints the table.

  python launch/table.py --dataset=cifar100 --table=3 --root=runs/cifar100-t3
  python launch/table.py --dataset=digits --root=runs/digits    # the embedded default's rows
  python launch/table.py --dataset=digits --model=vit --root=runs/digits-vit   # the ViT's three
  python launch/table.py --dataset=pystdlib --model=gpt --root=runs/gpt         # the GPT's three

Rows already finished with the same config are not run again (one of another config is refused);
an interrupted row resumes.
Extra `--config.*` overrides are passed to every row, e.g. --config.data_dir=/data/tfds.
"""
import os

from absl import flags

import common
from mlres import relative_cost, report

# Tables 3 and 4 of the paper: (test error %, training minutes on a GTX 1080) per dataset.
PAPER = {
    'cifar10': {'ResNet-14': (9.75, 38), 'ResNet-50': (7.58, 114), 'ResNet-50-i': (7.10, 67),
                'ResNet-32': (7.74, 76), 'ResNet-122': (6.47, 266), 'ResNet-122-i': (6.56, 154),
                'WResNet-14': (7.38, 51), 'WResNet-50': (5.87, 174), 'WResNet-50-i': (5.95, 101),
                'WResNet-32': (6.29, 111), 'WResNet-122': (5.38, 406), 'WResNet-122-i': (5.46, 239)},
    'cifar100': {'ResNet-14': (33.34, 38), 'ResNet-50': (28.64, 115), 'ResNet-50-i': (28.71, 68),
                 'ResNet-32': (29.96, 74), 'ResNet-122': (26.74, 266), 'ResNet-122-i': (26.81, 154),
                 'WResNet-14': (27.92, 51), 'WResNet-50': (24.49, 173), 'WResNet-50-i': (24.92, 101),
                 'WResNet-32': (25.32, 111), 'WResNet-122': (23.11, 406), 'WResNet-122-i': (23.04, 237)},
    'stl10': {'ResNet-14': (27.78, 33), 'ResNet-50': (25.95, 114), 'ResNet-50-i': (25.98, 68),
              'ResNet-32': (26.02, 71), 'ResNet-122': (25.16, 266), 'ResNet-122-i': (24.36, 162),
              'WResNet-14': (24.58, 63), 'WResNet-50': (23.82, 222), 'WResNet-50-i': (22.82, 131),
              'WResNet-32': (23.51, 136), 'WResNet-122': (22.00, 516), 'WResNet-122-i': (22.65, 307)},
}
ROWS = ('14', '50', '50i', '32', '122', '122i')  # first-cycle, last-cycle, multi-level; twice
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

flags.DEFINE_enum('dataset', None, ['digits', *PAPER, 'pystdlib'], "Whose table's rows to run.")
flags.DEFINE_integer('table', 3, "3: ResNets, 4: Wide ResNets (the paper's datasets, --model=resnet).",
                     lower_bound=3, upper_bound=4)
flags.DEFINE_enum('model', 'resnet', ['resnet', 'vit', 'gpt'], "resnet: the paper's rows; vit: the "
                  'multi-level ViT of configs/*_vit.py and its two baselines (not on stl10); gpt: '
                  'the multi-level GPT of configs/pystdlib_gpt.py and its two baselines (pystdlib only).')
flags.DEFINE_string('root', None, 'Folder that gets one workdir per row.')
flags.mark_flags_as_required(['dataset', 'root'])


def rows(dataset: str, table: int, model: str = 'resnet') -> list[str]:
  if model in ('vit', 'gpt'):
    return [f'{dataset}_{model}_first', f'{dataset}_{model}_last', f'{dataset}_{model}']
  if dataset == 'digits':
    return ['digits_first', 'digits_last', 'digits']
  prefix = 'res' if table == 3 else 'wres'
  return [f'{dataset}_{prefix}{depth}' for depth in ROWS]


def main(overrides: list[str]):
  f = flags.FLAGS
  if f.model == 'vit' and f.dataset in ('stl10', 'pystdlib'):
    common.refuse(f'--model=vit: there is no ViT config for {f.dataset}; use digits, cifar10 or cifar100')
  if (f.model == 'gpt') != (f.dataset == 'pystdlib'):
    common.refuse(f'--model={f.model} --dataset={f.dataset}: the GPT configs are for pystdlib, and '
                  'pystdlib is for --model=gpt')
  if f['table'].present and (f.model != 'resnet' or f.dataset not in PAPER):
    common.refuse(f'--table={f.table}: Tables 3 and 4 are the paper\'s ResNets and Wide ResNets on '
                  f'{", ".join(PAPER)}; --dataset={f.dataset} --model={f.model} has one set of rows, '
                  'so leave --table out')
  summaries = []
  for name in rows(f.dataset, f.table, f.model):
    config_path = os.path.join(CONFIGS, name + '.py')
    summaries.append(common.finished_or_run(name, config_path, os.path.join(f.root, name), overrides))
  print()
  print(report.table(summaries, PAPER.get(f.dataset) if f.model == 'resnet' else None))
  by_name = {s['name']: s for s in summaries}
  metric = report.headline(summaries[0])
  for multi in [s for s in summaries if s['name'].endswith('-i')]:
    last = by_name.get(multi['name'][:-2])
    if last:
      print(f'{multi["name"]} / {last["name"]} stepping time: '
            f'{multi["train_seconds"] / last["train_seconds"]:.3f}, theory '
            f'{_theory(multi):.4f}; {metric.name} {metric.show(multi[metric.key])} vs '
            f'{metric.show(last[metric.key])}')


def _theory(summary) -> float:
  return relative_cost(summary['stage_sizes'], summary['config']['cycles']['epochs'])


if __name__ == '__main__':
  common.run(main)
