"""launch/table.py prints a finished table beside the paper's numbers without re-running rows."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(name, stage_sizes, error, seconds):
  return {'name': name, 'stage_sizes': stage_sizes, 'test_error': error, 'train_seconds': seconds,
          'config': {'cycles': {'epochs': [60, 50, 50]}}}


def test_table_of_finished_runs(tmp_path):
  rows = {'cifar10_res14': summary('ResNet-14', [[2, 2, 2]] * 3, 0.1, 100.0),
          'cifar10_res50': summary('ResNet-50', [[8, 8, 8]] * 3, 0.08, 400.0),
          'cifar10_res50i': summary('ResNet-50-i', [[2, 2, 2], [4, 4, 4], [8, 8, 8]], 0.075, 232.0),
          'cifar10_res32': summary('ResNet-32', [[5, 5, 5]] * 3, 0.09, 200.0),
          'cifar10_res122': summary('ResNet-122', [[20, 20, 20]] * 3, 0.07, 800.0),
          'cifar10_res122i': summary('ResNet-122-i', [[5, 5, 5], [10, 10, 10], [20, 20, 20]], 0.07, 460.0)}
  for name, s in rows.items():
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / 'summary.json', 'w') as f:
      json.dump(s, f)
  out = subprocess.run([sys.executable, 'launch/table.py', '--dataset=cifar10', f'--root={tmp_path}'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
  lines = out.strip().splitlines()
  assert lines[0].split() == ['Model', '#', 'Blocks', 'Error', 'Time', 'Paper', 'error', 'Paper', 'time']
  assert lines[4].split() == ['ResNet-50-i', '2-2-2', 'to', '8-8-8', '7.50%', '3.9m', '7.10%', '67m']
  assert 'ResNet-50-i / ResNet-50 stepping time: 0.580, theory 0.5625' in out
  assert 'ResNet-122-i / ResNet-122 stepping time: 0.575' in out


def test_unknown_arguments_are_refused(tmp_path):
  run = subprocess.run([sys.executable, 'launch/table.py', '--dataset=digits', f'--root={tmp_path}',
                        '--epochs=3'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and '--epochs=3' in run.stderr
