"""The trainer beyond the paper's ResNet and SGD: a ViT, AdamW, every growth operator, long plans."""
import os
import shutil

import chex
import jax
import numpy as np
import pytest

import mlres
from mlres import config as config_lib, report, schedules, train
from mlres.checkpoint import CheckpointError
from mlres.config import ConfigError

import faults
from conftest import restore, tiny


def tiny_vit(**overrides):
  """A two-cycle ViT (1 then 2 blocks of width 8) on the tiny config's 8x8 images, with AdamW whose
  moments are carried through the growth."""
  c = tiny()
  c.model = config_lib.model('vit', width=8, num_heads=2, mlp_dim=16, patch_size=2)
  c.cycles.stage_sizes = ((1,), (2,))
  c.optimizer = config_lib.optimizer('adamw', eta_max=3e-3, eta_min=0.0, weight_decay=0.05,
                                     momentum_at_interpolation='interpolate')
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture(scope='module')
def vit_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('vit'))
  return workdir, train.train_and_evaluate(tiny_vit(), workdir)


def records(workdir, timings=True):
  rs = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return rs if timings else [{k: v for k, v in r.items() if k not in ('epoch_seconds', 'steps_per_second')}
                             for r in rs]


def test_a_vit_grows_with_its_adam_moments(vit_run):
  workdir, summary = vit_run
  assert [(r['stage_sizes'], r['h']) for r in records(workdir)] == [([1], 1.0), ([1], 1.0), ([2], 0.5)]
  before, meta = restore(workdir, 2, tiny_vit())
  after, _ = restore(workdir, 3, tiny_vit())
  assert meta['model'] == 'vit' and meta['optimizer'] == 'adamw' and meta['operator'] == 'copy'
  assert mlres.stack_sizes(after['params']) == {'encoder': 2} and 'batch_stats' not in after
  adam = lambda s: s['opt_state'][0]  # ScaleByAdamState of the chain, then the weight decay's
  assert int(adam(after).count) == 12  # counts kept through the growth: 3 epochs of 4 steps
  assert jax.tree.structure(adam(after).mu) == jax.tree.structure(after['params'])
  assert summary['num_params'] == mlres.count_params(after['params'])


@pytest.mark.parametrize('keep', [1, 2], ids=['mid-cycle', 'cycle-boundary'])
def test_a_vit_run_resumes_bit_for_bit(vit_run, tmp_path, keep):
  workdir, summary = vit_run
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  for step in os.listdir(os.path.join(resumed, 'checkpoints')):
    if step.isdigit() and int(step) > 4 * keep:
      shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  again = train.train_and_evaluate(tiny_vit(), resumed)
  chex.assert_trees_all_equal(restore(resumed, 3, tiny_vit())[0], restore(workdir, 3, tiny_vit())[0])
  assert again['test_error'] == summary['test_error']
  assert records(resumed, timings=False) == records(workdir, timings=False)


def test_a_vit_stopped_in_the_epoch_after_its_growth_resumes_bit_for_bit(vit_run, tmp_path, monkeypatch):
  """SIGTERM after the second step of epoch 3, the first after the growth: the part-done epoch,
  with the grown network's test metrics, is all that a checkpoint needs to continue it."""
  import signal
  workdir, summary = vit_run
  progress = report.progress
  stopped = str(tmp_path / 'stopped')
  monkeypatch.setattr(report, 'progress', faults.signalling_progress(progress, 3, signal.SIGTERM))
  with pytest.raises(train.Interrupted, match='at epoch 3, step 2 of 4'):
    train.train_and_evaluate(tiny_vit(), stopped)
  monkeypatch.setattr(report, 'progress', progress)
  again = train.train_and_evaluate(tiny_vit(), stopped)
  chex.assert_trees_all_equal(restore(stopped, 3, tiny_vit())[0], restore(workdir, 3, tiny_vit())[0])
  assert records(stopped, timings=False) == records(workdir, timings=False)
  assert 'test_loss_at_growth' in records(stopped)[2] and again['test_error'] == summary['test_error']


def test_the_scanned_vit_grows_its_layer_axis_and_its_moments(tmp_path):
  """nn.scan initializes its blocks from other keys than the list layout, so the run is its own."""
  config = tiny_vit(**{'model.scan_blocks': True})
  train.train_and_evaluate(config, str(tmp_path))
  state, _ = restore(str(tmp_path), 3, config)
  scanned = state['params']['encoder']['scan']
  assert {x.shape[0] for x in jax.tree.leaves(scanned)} == {2}
  assert jax.tree.leaves(state['opt_state'][0].mu['encoder']['scan'])[0].shape[0] == 2
  assert set(mlres.to_list(state['params'])['encoder']) == {'block0', 'block1'}
  before, _ = restore(str(tmp_path), 2, config)
  grown = mlres.interpolate({k: before[k] for k in ('params', 'ode')})
  assert jax.tree.structure(grown['params']) == jax.tree.structure(state['params'])


def test_zero_growth_keeps_h_and_the_function(tmp_path):
  workdir = str(tmp_path / 'zero')
  train.train_and_evaluate(tiny(**{'cycles.operator': 'zero'}), workdir)
  rs = records(workdir)
  assert [r['h'] for r in rs] == [1.0, 1.0, 1.0]
  # The grown network before its first step is the one that ended epoch 2, to the last bit.
  assert rs[2]['test_loss_at_growth'] == rs[1]['test_loss']
  assert rs[2]['test_accuracy_at_growth'] == rs[1]['test_accuracy']
  assert 'test_loss_at_growth' not in rs[1]


@pytest.mark.parametrize('operator', ['linear', 'stack'])
def test_every_operator_trains_and_halves_h(tmp_path, operator):
  workdir = str(tmp_path / operator)
  summary = train.train_and_evaluate(tiny(**{'cycles.operator': operator}), workdir)
  rs = records(workdir)
  assert [r['h'] for r in rs] == [1.0, 1.0, 0.5] and rs[2]['stage_sizes'] == [4, 4]
  before, _ = restore(workdir, 2, tiny(**{'cycles.operator': operator}))
  assert np.isfinite(rs[2]['test_loss_at_growth']) and summary['epochs'] == 3
  expected = mlres.interpolate({k: before[k] for k in ('params', 'ode')}, operator)
  assert jax.tree.structure(expected['params']) == jax.tree.structure(
      restore(workdir, 3, tiny(**{'cycles.operator': operator}))[0]['params'])


def test_the_copy_operators_jump_is_recorded(tiny_run):
  rs = records(tiny_run[0])
  assert 'test_loss_at_growth' in rs[2] and not any('test_loss_at_growth' in r for r in rs[:2])


@pytest.mark.parametrize('override, message', [
    ({'cycles.operator': 'zero'}, 'growth operator than this config\'s (operator: copy -> zero)'),
    ({'optimizer': config_lib.optimizer('adamw')}, '(optimizer: sgd -> adamw)'),
    ({'model': config_lib.model('vit', width=8, num_heads=2, mlp_dim=16, patch_size=2),
      'cycles.stage_sizes': ((2,), (4,))}, 'holds another network than this config builds (model: resnet -> vit'),
], ids=['operator', 'optimizer', 'family'])
def test_resume_refuses_another_family_optimizer_or_operator(tiny_run, tmp_path, override, message):
  workdir = str(tmp_path / 'run')
  shutil.copytree(tiny_run[0], workdir)
  for step in os.listdir(os.path.join(workdir, 'checkpoints')):
    if step.isdigit() and int(step) > 8:  # back to the end of the first cycle
      shutil.rmtree(os.path.join(workdir, 'checkpoints', step))
  config = tiny(resume='any_config')
  for field, value in override.items():
    setattr(config.cycles if field.startswith('cycles.') else config, field.split('.')[-1], value)
  with pytest.raises(CheckpointError, match=message.replace('(', r'\(').replace(')', r'\)')):
    train.train_and_evaluate(config, workdir)


def test_four_interpolations_halve_h_four_times_and_cost_what_theory_says(tmp_path):
  """k = 3 and 4: cycle lists of 4 and 5 entries; relative_cost of equal cycles is 1 - Table 2."""
  sizes = ((1,), (2,), (4,), (8,), (16,))
  for k in (3, 4):
    assert schedules.relative_cost(sizes[:k + 1], [1] * (k + 1)) == pytest.approx(
        1 - mlres.theoretical_time_saved(k))
  workdir = str(tmp_path / 'k3')
  config = tiny(**{'cycles.stage_sizes': sizes[:4], 'cycles.epochs': (1, 1, 1, 1), 'num_epochs': 4,
                   'model.widths': (4,), 'synthetic.num_train': 32})
  summary = train.train_and_evaluate(config, workdir)
  rs = records(workdir)
  assert [(r['stage_sizes'], r['h']) for r in rs] == [
      ([1], 1.0), ([2], 0.5), ([4], 0.25), ([8], 0.125)]
  assert summary['stage_sizes'] == [list(s) for s in sizes[:4]]
  assert mlres.architecture(restore(workdir, 4, config)[0]['params'])['stage_sizes'] == (8,)


@pytest.mark.parametrize('override, message', [
    ({'model.name': 'mlp'}, "config.model.name='mlp': must be one of resnet, vit"),
    ({'model.name': 'vit'}, 'a vit takes the fields'),
    ({'optimizer.name': 'lion'}, "config.optimizer.name='lion': must be one of sgd, adamw"),
    ({'cycles.operator': 'grow'}, "config.cycles.operator='grow': must be one of copy, linear, stack, zero"),
], ids=['family', 'fields-of-another-family', 'optimizer', 'operator'])
def test_bad_families_get_one_line(override, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(')):
    config_lib.validate(tiny(**override))


def test_a_vit_config_needs_one_stack_and_patches_that_fit(tmp_path):
  with pytest.raises(ConfigError, match=r'config.cycles.stage_sizes\[0\]=\(1, 1\): a ViT has one stack'):
    config_lib.validate(tiny_vit(**{'cycles.stage_sizes': ((1, 1), (2, 2))}))
  with pytest.raises(ConfigError, match='config.model.width=10: width=10 is not divisible by num_heads=4'):
    config_lib.validate(tiny_vit(**{'model.width': 10, 'model.num_heads': 4}))
  with pytest.raises(ConfigError, match='config.model.patch_size=3: does not divide the 8x8 images'):
    train.train_and_evaluate(tiny_vit(**{'model.patch_size': 3}), str(tmp_path))


@pytest.mark.parametrize('name', ['digits_vit', 'digits_vit_first', 'digits_vit_last', 'cifar10_vit',
                                  'cifar100_vit_last'])
def test_the_vit_configs_are_valid(name):
  from mlres import cli
  config = cli.load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs',
                                        f'{name}.py'))
  config_lib.validate(config)
  assert config.model.name == 'vit' and config.optimizer.name == 'adamw'
  assert all(len(s) == 1 for s in config.cycles.stage_sizes)
