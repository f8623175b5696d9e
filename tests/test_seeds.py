"""K seeds in one vmapped step: each seed is its run alone; statistics, checkpoints, analyses."""
import glob
import itertools
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from mlres import analyze, bench, report, train

from conftest import ROOT, restore, scalars, tiny

# Each test compares runs of several seeds, or runs a launcher or a benchmark over them.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_run):
  """Seeds 0 and 1 trained together, and each alone (seed 0 alone is the session's tiny run)."""
  out = {'0': tiny_run[:2]}
  for name, config in (('both', tiny(num_seeds=2)), ('1', tiny(seed=1))):
    workdir = str(tmp_path_factory.mktemp(f'seeds-{name}'))
    out[name] = (workdir, train.train_and_evaluate(config, workdir))
  return out


def test_each_seed_equals_its_run_alone(runs):
  both = report.read_jsonl(os.path.join(runs['both'][0], 'metrics.jsonl'))
  state = restore(runs['both'][0], 3, tiny(num_seeds=2))[0]
  for k in (0, 1):
    alone = report.read_jsonl(os.path.join(runs[str(k)][0], 'metrics.jsonl'))
    for b, a in zip(both, alone, strict=True):
      for field in ('train_loss', 'test_loss', 'train_accuracy', 'test_accuracy'):
        assert b['seeds'][field][k] == pytest.approx(a[field], rel=1e-5), (k, field)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[k], state['params']),
                                restore(runs[str(k)][0], 3, tiny(seed=k))[0]['params'], rtol=1e-4, atol=1e-5)
  assert both[0]['seeds']['train_loss'][0] != both[0]['seeds']['train_loss'][1]  # not one run twice


def test_the_summary_reports_each_seed_mean_and_interval(runs):
  summary = runs['both'][1]
  errors = [runs[k][1]['test_error'] for k in ('0', '1')]
  assert summary['test_error_seeds'] == pytest.approx(errors, abs=1e-6)
  assert summary['test_error'] == pytest.approx(np.mean(errors), abs=1e-6)
  assert summary['test_error_ci95'] == pytest.approx(12.706 * np.std(errors, ddof=1) / np.sqrt(2), rel=1e-3)
  assert summary['num_params'] == runs['0'][1]['num_params']
  last = report.read_jsonl(os.path.join(runs['both'][0], 'metrics.jsonl'))[-1]
  assert last['test_accuracy_ci95'] == pytest.approx(summary['test_error_ci95'])


def test_checkpoints_hold_every_seed_and_resume_bit_for_bit(runs, tmp_path):
  workdir = str(tmp_path / 'resumed')
  shutil.copytree(runs['both'][0], workdir)
  for step_dir in glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')):
    if int(os.path.basename(step_dir)) > 8:
      shutil.rmtree(step_dir)
  config = tiny(num_seeds=2)
  summary = train.train_and_evaluate(config, workdir)
  want, got = restore(runs['both'][0], 3, config)[0], restore(workdir, 3, config)[0]
  assert all(x.shape[0] == 2 for x in jax.tree.leaves(got))
  chex.assert_trees_all_equal(got, want)
  assert summary['test_error_seeds'] == runs['both'][1]['test_error_seeds']


def test_analyses_take_one_seed(runs):
  workdir = runs['both'][0]
  state = restore(workdir, 3, tiny(num_seeds=2))[0]
  run = analyze.load_run(workdir, seed=1)
  chex.assert_trees_all_equal(run.variables['params'], jax.tree.map(lambda x: x[1], state['params']))
  assert run.label.endswith('seed 1') and run.arch['stage_sizes'] == (4, 4)
  with pytest.raises(ValueError, match='--seed=2: .* holds seeds 0 to 1'):
    analyze.load_run(workdir, seed=2)


def test_tensorboard_has_every_seeds_values(runs):
  workdir = runs['both'][0]
  got, records = scalars(workdir), report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  for field in ('train_loss', 'test_accuracy'):
    for seed in (0, 1):
      assert got[f'seeds/{field}/{seed}'] == [(r['epoch'], np.float32(r['seeds'][field][seed]))
                                             for r in records]


def test_the_reset_comparison_prints_mean_and_interval(tiny_file, tmp_path):
  # The user's reset_lr gives way to each variant's own (given twice, a tuple would be joined).
  out = subprocess.run([sys.executable, 'launch/seeds.py', '--experiment=reset', f'--config={tiny_file}',
                        '--num_seeds=2', f'--root={tmp_path}', '--config.optimizer.reset_lr=False'], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, 'PYTHONPATH': ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('Variant'))
  reset, no_reset = lines[header + 2].split(), lines[header + 3].split()
  assert reset[:4] == ['reset', '2-2', 'to', '4-4'] and no_reset[0] == 'no-reset'
  for variant, line in (('reset', reset), ('no-reset', no_reset)):
    summary = report.read_jsonl(os.path.join(tmp_path, variant, 'metrics.jsonl'))[-1]
    assert line[4] == '2' and line[6] == '±'
    assert line[5] == f'{100 * (1 - summary["test_accuracy"]):.2f}%'
  lr = lambda v: [r['lr'] for r in report.read_jsonl(os.path.join(tmp_path, v, 'metrics.jsonl'))]
  assert lr('reset')[2] == pytest.approx(0.5) and lr('no-reset')[2] < 0.5


def test_the_benchmark_times_several_seeds():
  result = bench.run(chains=('res14',), quick=True, steps=4, warmup=1, seeds=(1, 2))
  one, two = result['seeds']
  assert (one['num_seeds'], two['num_seeds']) == (1, 2) and one['over_one_seed'] == 1.0
  assert two['over_one_seed'] == pytest.approx(two['protocol_seconds'] / one['protocol_seconds'])
  assert two['images_per_second'] == pytest.approx(2 * 16e3 / two['last_step_ms'])


def test_the_operators_comparison_prints_the_operators_it_is_given_and_their_jumps(tiny_file, tmp_path):
  """Two of the four operators (--operators), each trained and given its row; the others' training
  is tested in tests/test_operators.py and tests/test_train.py."""
  out = subprocess.run([sys.executable, 'launch/seeds.py', '--experiment=operators', '--operators=copy,zero',
                        f'--config={tiny_file}',
                        '--num_seeds=2', f'--root={tmp_path}', '--config.cycles.epochs=(1,1)',
                        '--config.num_epochs=2'], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, 'PYTHONPATH': ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith('Variant'))
  rows = {line.split()[0]: line.split() for line in itertools.takewhile(str.strip, lines[header + 2:])}
  assert list(rows) == ['first-cycle', 'last-cycle', 'copy', 'zero']
  for name in ('first-cycle', 'last-cycle'):
    assert rows[name][-2] == '-'  # no interpolation, no jump
  assert sorted(d.name for d in tmp_path.iterdir() if d.is_dir()) == ['copy', 'first-cycle', 'last-cycle', 'zero']
  for name in ('copy', 'zero'):
    records = report.read_jsonl(os.path.join(tmp_path, name, 'metrics.jsonl'))
    assert rows[name][-2] == f'{records[1]["test_loss_at_growth"] - records[0]["test_loss"]:+.4f}'
  assert rows['zero'][-2] in ('+0.0000', '-0.0000')  # the same function: no jump at all
