"""The analyses of Sec. 3 and Appendix C on a tiny trained run: numbers and figure files."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
from matplotlib import pyplot as plt

import mlres
from mlres import analyze, train
from mlres.checkpoint import CheckpointError


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  from conftest import tiny
  path = str(tmp_path_factory.mktemp('analyzed'))
  config = tiny(**{'cycles.epochs': (1, 1), 'num_epochs': 2, 'synthetic.num_test': 64})
  train.train_and_evaluate(config, path)
  return path


@pytest.fixture(scope='module')
def run(workdir):
  return analyze.load_run(workdir)


def test_load_run_restores_the_latest_checkpoint(run, workdir):
  assert run.epoch == 2 and run.arch['stage_sizes'] == (4, 4) and run.arch['h'] == 0.5
  assert analyze.load_run(f'{workdir}@1').arch['stage_sizes'] == (2, 2)


def test_removing_a_block_with_zero_residual_changes_nothing(run):
  silent = dataclasses.replace(run, variables=analyze.silence_block(run.variables, 0, 2))
  rows = analyze.lesion(silent)
  base = rows[0]['accuracy']
  by_block = {(r['stage'], r['block']): r for r in rows[1:]}
  assert by_block[(0, 2)]['accuracy'] == base
  assert by_block[(1, 0)]['downsampling'] and not by_block[(1, 1)]['downsampling']
  assert len(rows) == 1 + 8
  dropped = analyze.accuracy(run, mlres.drop_block(run.variables, 1, 3), (4, 3))
  assert analyze.lesion(run)[-1]['accuracy'] == dropped


def test_shuffling_identical_blocks_changes_nothing(run):
  v = run.variables
  same = {coll: {**v[coll],
                 'stage0': {f'block{b}': v[coll]['stage0']['block0'] for b in range(4)},
                 'stage1': {f'block{b}': v[coll]['stage1'][f'block{min(b, 1)}'] for b in range(4)}}
          for coll in ('params', 'batch_stats')}
  rows = analyze.shuffle(dataclasses.replace(run, variables={**same, 'ode': v['ode']}), permutations=3)
  assert len(rows) == 4 and len({r['accuracy'] for r in rows}) == 1


def test_norms_and_gamma_of_an_interpolated_model_halve(run):
  rows = analyze.norms(run)
  assert [r['block'] for r in rows] == list(range(1, 9))
  assert [r['t'] for r in rows] == [0.5 * j for j in range(8)]
  for r in rows:
    assert r['f_norm'] == pytest.approx(r['residual_norm'] / 0.5)
    assert r['input_norm'] > 0 and r['residual_norm'] > 0
  finer = dataclasses.replace(run, variables=mlres.interpolate(run.variables))
  ratio = analyze.gamma(analyze.norms(finer)) / analyze.gamma(rows)
  assert 0.4 < ratio < 0.6


@pytest.mark.parametrize('what', analyze.ANALYSES)
def test_every_analysis_writes_a_figure_and_numbers(what, workdir, tmp_path, capsys):
  specs = [workdir, f'{workdir}@1'] if what in ('gamma-vs-depth', 'step-size') else [workdir]
  out = analyze.run_analysis(what, specs, str(tmp_path), permutations=2)
  name = what.replace('-', '_')
  with open(tmp_path / f'{name}.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  image = plt.imread(tmp_path / f'{name}.png')
  assert image.shape[0] > 300 and image.shape[1] > 500
  with open(tmp_path / f'{name}.json') as f:
    assert json.load(f)
  assert (tmp_path / f'{name}.csv').read_text().count('\n') == len(out['table']) + 1
  assert 'wrote' in capsys.readouterr().out
  if what == 'gamma-vs-depth':  # one run each of h = 1 and h = 0.5: nothing to fit
    assert [(r['blocks'], r['h'], r['fit']) for r in out['table']] == [(4, 1.0, None), (8, 0.5, None)]


def test_gamma_is_fitted_against_depth_per_step_size():
  rows = [{'blocks': d, 'h': 1.0, 'gamma': 60 / d} for d in (6, 12, 24)]
  rows += [{'blocks': 12, 'h': 0.5, 'gamma': 1.0}, {'blocks': 24, 'h': 0.5, 'gamma': 0.5},
           {'blocks': 24, 'h': 0.25, 'gamma': 7.0}]
  assert analyze.reciprocal_fits(rows) == {1.0: pytest.approx(60), 0.5: pytest.approx(12)}


def test_the_command_line_refuses_an_unknown_analysis(workdir):
  run = subprocess.run([sys.executable, '-m', 'mlres.analyze', 'histogram', f'--workdir={workdir}'],
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and run.stderr.startswith("error: unknown analysis 'histogram'; usage: ")
  assert 'lesion|shuffle' in run.stderr and len(run.stderr.strip().splitlines()) == 1
  run = subprocess.run([sys.executable, '-m', 'mlres.analyze', 'lesion', f'--workdir={workdir}',
                        f'--workdir={workdir}'], capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and 'lesion analyses one run; got 2' in run.stderr


def test_the_command_line_analyses_an_earlier_checkpoint(workdir, tmp_path):
  subprocess.run([sys.executable, '-m', 'mlres.analyze', 'norms', f'--workdir={workdir}', '--epoch=1',
                  f'--out={tmp_path}'], capture_output=True, text=True, timeout=300, check=True)
  with open(tmp_path / 'norms.json') as f:
    rows = json.load(f)
  assert len(rows) == 4 and rows[1]['t'] == 1.0  # the first cycle: 2-2 blocks, h = 1


@pytest.mark.parametrize('spec, kwargs, message', [
    ('{w}@two', {}, '@two: the epoch after @ must be a whole number'),
    ('{tmp}/never-trained', {}, 'never-trained holds no checkpoint; train it first'),
    ('{w}', {'permutations': 0}, '--permutations=0: must be at least 1'),
    ('{w}', {'max_examples': -1}, '--max_examples=-1: must be at least 1'),
    ('{w}', {'out': '{tmp}/a-file'}, 'a-file: is a file, not a folder'),
], ids=['epoch-not-a-number', 'no-such-run', 'no-permutations', 'no-examples', 'out-is-a-file'])
def test_bad_arguments_are_refused_and_leave_nothing(workdir, tmp_path, spec, kwargs, message):
  (tmp_path / 'a-file').write_text('')
  out = kwargs.pop('out', '{tmp}/analysis').format(tmp=tmp_path)
  with pytest.raises((ValueError, CheckpointError), match=message):
    analyze.run_analysis('shuffle', [spec.format(w=workdir, tmp=tmp_path)], out, **kwargs)
  assert sorted(os.listdir(tmp_path)) == ['a-file']
