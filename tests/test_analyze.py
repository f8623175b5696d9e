"""The analyses of Sec. 3 and Appendix C on tiny trained runs of every family (ResNet, ViT, GPT) and
both stack layouts: numbers, figure files and refusals."""
import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

import mlres
from mlres import analyze, config as config_lib, report, train
from mlres.checkpoint import CheckpointError

from conftest import tiny, tiny_lm


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('analyzed'))
  config = tiny(**{'cycles.epochs': (1, 1), 'num_epochs': 2, 'synthetic.num_test': 64})
  train.train_and_evaluate(config, path)
  return path


@pytest.fixture(scope='module')
def run(workdir):
  return analyze.load_run(workdir)


def tiny_vit(scan: bool):
  """A ViT of width 8 (1 then 2 blocks of 2 heads over 4x4 patches) on tiny()'s 8x8 images, AdamW."""
  c = tiny(**{'cycles.epochs': (1, 1), 'num_epochs': 2, 'synthetic.num_test': 64})
  c.name = 'tiny-vit'
  c.model = config_lib.model('vit', width=8, num_heads=2, mlp_dim=16, patch_size=4, scan_blocks=scan)
  c.cycles.stage_sizes = ((1,), (2,))
  c.optimizer = config_lib.optimizer('adamw', eta_max=3e-3)
  return c


def tiny_gpt(scan: bool):
  """tiny_lm's GPT (1 then 2 blocks of width 8) for one epoch each."""
  return tiny_lm(**{'cycles.epochs': (1, 1), 'num_epochs': 2, 'model.scan_blocks': scan})


@dataclasses.dataclass
class Trained:
  """A tiny run of two epochs, one block then two (grown by 'copy', h 1 then 0.5)."""
  workdir: str
  first: analyze.Run  # epoch 1
  last: analyze.Run   # epoch 2
  records: list       # its metrics.jsonl


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """trained(family, scan): the tiny run of that family ('vit' or 'gpt') and layout, trained once
  for the module, the first time a test asks for it."""
  runs = {}

  def get(family: str, scan: bool = False) -> Trained:
    if (family, scan) not in runs:
      path = str(tmp_path_factory.mktemp(f'{family}-scan' if scan else family))
      train.train_and_evaluate({'vit': tiny_vit, 'gpt': tiny_gpt}[family](scan), path)
      runs[family, scan] = Trained(path, analyze.load_run(f'{path}@1'), analyze.load_run(path),
                                   report.read_jsonl(os.path.join(path, 'metrics.jsonl')))
    return runs[family, scan]
  return get


LAYOUTS = [('vit', False), ('vit', True), ('gpt', False), ('gpt', True)]
LAYOUT_IDS = ['vit', 'vit-scan', 'gpt', 'gpt-scan']


def own_evaluation(run: analyze.Run, record: dict) -> dict:
  """The metrics the trainer wrote for the epoch, in the analyses' columns."""
  return {column: record[f'test_{field}'] for column, field in run.measure.columns.items()}


def test_load_run_restores_the_latest_checkpoint(run, workdir):
  assert run.epoch == 2 and run.arch['stage_sizes'] == (4, 4) and run.arch['h'] == 0.5
  assert analyze.load_run(f'{workdir}@1').arch['stage_sizes'] == (2, 2)


def test_removing_a_block_with_zero_residual_changes_nothing(run):
  silent = dataclasses.replace(run, variables=analyze.silenced(run, 'stage0', 2))
  rows = analyze.lesion(silent)
  base = rows[0]['accuracy']
  by_block = {(r['stage'], r['block']): r for r in rows[1:]}
  assert by_block[(0, 2)]['accuracy'] == base
  assert by_block[(1, 0)]['downsampling'] and not by_block[(1, 1)]['downsampling']
  assert len(rows) == 1 + 8
  dropped = analyze.evaluate(run, mlres.drop_block(run.variables, 1, 3), {'stage0': 4, 'stage1': 3})
  assert analyze.lesion(run)[-1]['accuracy'] == dropped['accuracy']


def test_the_resnet_tables_keep_their_columns_and_the_runs_accuracy(run, workdir):
  rows = analyze.lesion(run)
  assert list(rows[0]) == ['stage', 'block', 'downsampling', 'accuracy']
  last = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))[-1]
  assert rows[0]['accuracy'] == last['test_accuracy']
  assert list(analyze.norms(run)[0]) == ['block', 'stage', 'index', 't', 'input_norm', 'residual_norm',
                                         'f_norm', 'downsampling']
  assert list(analyze.shuffle(run, 1)[0]) == ['permutation', 'accuracy']
  assert list(analyze.ANALYSES['curves'].rows({workdir: analyze.curves(workdir)})[0]) == [
      'run', 'epoch', 'cycle', 'blocks', 'train_accuracy', 'test_accuracy']


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


@pytest.mark.parametrize('family, scan', LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize('what', analyze.ANALYSES)
def test_every_analysis_has_a_row_per_block_in_every_family_and_layout(trained, family, scan, what):
  t = trained(family, scan)
  columns = list(t.last.measure.columns)
  analysis = analyze.ANALYSES[what]
  given = {'lesion': t.last, 'shuffle': t.last, 'norms': t.last, 'curves': [t.workdir]}.get(
      what, [t.first, t.last])
  result = analysis.compute(given, analyze.Options(permutations=2))
  rows = analysis.rows(result)
  ax = Figure().subplots()
  analysis.plot(ax, result, given)
  assert ax.has_data()
  if what == 'lesion':  # no lesion, then each of the 2 blocks dropped
    assert [(r['stage'], r['block'], r['downsampling']) for r in rows] == [
        (None, None, False), (0, 0, False), (0, 1, False)]
    assert list(rows[0])[3:] == columns
    assert {k: rows[0][k] for k in columns} == own_evaluation(t.last, t.records[-1])
  elif what == 'shuffle':
    assert [r['permutation'] for r in rows] == [None, 0, 1] and list(rows[0])[1:] == columns
  elif what == 'norms':
    assert [(r['block'], r['t']) for r in rows] == [(1, 0.0), (2, 0.5)]
    assert all(r['input_norm'] > 0 and r['residual_norm'] > 0 and not r['downsampling'] for r in rows)
  elif what == 'gamma-vs-depth':
    assert [(r['blocks'], r['h'], r['fit']) for r in rows] == [(1, 1.0, None), (2, 0.5, None)]
  elif what == 'step-size':
    assert [(r['block'], r['t']) for r in rows] == [(1, 0.0), (1, 0.0), (2, 0.5)]
  else:
    held_out = t.last.measure.held_out
    assert [r['epoch'] for r in rows] == [1, 2]
    assert list(rows[0])[4:] == [f'{split}_{c}' for c in columns for split in ('train', held_out)]


@pytest.mark.parametrize('family, scan', LAYOUTS, ids=LAYOUT_IDS)
def test_lesion_of_a_block_whose_branch_is_zero_leaves_the_metric_bit_equal(trained, family, scan):
  t = trained(family, scan)
  grown = mlres.interpolate(t.last.variables, 'zero', stacks=t.last.stacks)  # blocks 1, 3: branch zero
  rows = analyze.lesion(dataclasses.replace(t.last, variables=grown))
  metrics = lambda row: [row[k] for k in t.last.measure.columns]
  # 'zero' keeps the function, and the metric is the run's own evaluation
  assert metrics(rows[0]) == list(own_evaluation(t.last, t.records[-1]).values())
  assert [metrics(r) for r in rows[2::2]] == [metrics(rows[0])] * 2  # blocks 1 and 3 dropped


@pytest.mark.parametrize('what', analyze.ANALYSES)
@pytest.mark.parametrize('family', ['resnet', 'gpt'])  # both tasks; the ViT's figures are plotted above
def test_every_analysis_writes_a_figure_and_numbers(what, family, workdir, trained, tmp_path, capsys):
  path = workdir if family == 'resnet' else trained(family).workdir
  specs = [path, f'{path}@1'] if what in ('gamma-vs-depth', 'step-size') else [path]
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
  if what == 'gamma-vs-depth' and family == 'resnet':  # one run each of h = 1 and h = 0.5: nothing to fit
    assert [(r['blocks'], r['h'], r['fit']) for r in out['table']] == [(4, 1.0, None), (8, 0.5, None)]


def test_gamma_is_fitted_against_depth_per_step_size():
  rows = [{'blocks': d, 'h': 1.0, 'gamma': 60 / d} for d in (6, 12, 24)]
  rows += [{'blocks': 12, 'h': 0.5, 'gamma': 1.0}, {'blocks': 24, 'h': 0.5, 'gamma': 0.5},
           {'blocks': 24, 'h': 0.25, 'gamma': 7.0}]
  assert analyze.reciprocal_fits(rows) == {1.0: pytest.approx(60), 0.5: pytest.approx(12)}


@pytest.mark.slow
def test_an_analysis_that_cannot_apply_says_why_in_one_line(trained, tmp_path):
  gpt, vit = trained('gpt'), trained('vit')
  command = [sys.executable, '-m', 'mlres.analyze', 'shuffle', f'--workdir={gpt.workdir}@1',
             f'--out={tmp_path}']
  out = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and out.stderr == ('error: tiny-lm 1 h=1 (epoch 1): no stack has two blocks '
                                                'that can change places, so there is nothing to shuffle\n')
  with pytest.raises(analyze.NotApplicable,
                     match='^gamma-vs-depth compares runs of one family; got vit, gpt$'):
    analyze.run_analysis('gamma-vs-depth', [vit.workdir, gpt.workdir], str(tmp_path))
  with pytest.raises(analyze.NotApplicable,
                     match='^curves compares runs of one task; got image_classification, language_model$'):
    analyze.run_analysis('curves', [vit.workdir, gpt.workdir], str(tmp_path))
  own = dataclasses.replace(vit.last, stacks={})  # a model of one's own that declares no stacks
  for what in ('lesion', 'shuffle', 'norms'):
    with pytest.raises(analyze.NotApplicable, match=r'declares no residual stacks \(model.stacks'):
      analyze.ANALYSES[what].compute(own, analyze.Options())
  silent = QuietNet()  # one whose blocks do not sow their residual
  variables = {**silent.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), 'ode': {'h': jnp.float32(1)}}
  own = dataclasses.replace(vit.last, variables=variables, stacks={'body': mlres.Stack()},
                            build=lambda _: silent)
  with pytest.raises(analyze.NotApplicable, match='^the blocks of body sow no residual G'):
    analyze.norms(own)
  assert os.listdir(tmp_path) == []


class QuietStep(nn.Module):
  @nn.compact
  def __call__(self, y, h):
    return y + h * nn.Dense(y.shape[-1])(y)


class QuietNet(nn.Module):
  """A residual stack of dense blocks that sow nothing, then a head."""
  dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    y = mlres.ResidualStack(QuietStep, 2, name='body')(x.reshape(x.shape[0], -1), h=1.0)
    return nn.Dense(4, name='head')(y)


def test_a_run_of_several_seeds_says_which_seed_it_analyses(tmp_path, capsys):
  workdir = str(tmp_path / 'seeds')  # the cheapest run of two seeds to compile: a GPT of one block
  train.train_and_evaluate(tiny_lm(**{'num_seeds': 2, 'cycles.stage_sizes': ((1,),), 'cycles.epochs': (1,),
                                      'num_epochs': 1}), workdir)
  said = f'{workdir}: seed 1 of its 2 (seeds 0 to 1; --seed=K analyses another)'
  for what in ('norms', 'curves'):
    analyze.run_analysis(what, [workdir], str(tmp_path / 'out'), seed=1)
    assert said in capsys.readouterr().out
  record = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))[0]
  seed1 = analyze.curves(workdir, seed=1)[0]['test_loss']
  assert seed1 == record['seeds']['test_loss'][1] != record['test_loss']


@pytest.mark.slow
def test_the_command_line_refuses_an_unknown_analysis(workdir):
  run = subprocess.run([sys.executable, '-m', 'mlres.analyze', 'histogram', f'--workdir={workdir}'],
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and run.stderr.startswith("error: unknown analysis 'histogram'; usage: ")
  assert 'lesion|shuffle' in run.stderr and len(run.stderr.strip().splitlines()) == 1
  run = subprocess.run([sys.executable, '-m', 'mlres.analyze', 'lesion', f'--workdir={workdir}',
                        f'--workdir={workdir}'], capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and 'lesion analyses one run; got 2' in run.stderr


@pytest.mark.slow
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
