"""A cycle plan that widens (config.cycles.widths): each widening keeps the network's function and
compiles its new shape once, checkpoints and resumes across it bit for bit, and the cycle lines, the
records, the summary and the table name the widths; a bad plan is refused in one line per field."""
import contextlib
import io
import os
import shutil

import chex
import jax
import numpy as np
import pytest

import mlres
from mlres import config as config_lib, report, train
from mlres.checkpoint import CheckpointError

from conftest import restore, tiny, tiny_lm

TIMING = ('epoch_seconds', 'steps_per_second', 'tokens_per_second')
# Widths 2-4 for an epoch, widened to 4-8 (cycle 1), then widened to 8-16 and deepened to 4-4
# blocks (cycle 2): 3 epochs of 4 steps, a checkpoint after each.
WIDE = {'model.widths': (8, 16), 'cycles.stage_sizes': ((2, 2), (2, 2), (4, 4)), 'cycles.epochs': (1, 1, 1),
        'cycles.widths': ({'widths': (2, 4)}, {'widths': (4, 8)}, {})}


def tiny_wide(**overrides):
  return tiny(**{**WIDE, **overrides})


def train_quietly(config, workdir):
  """(the summary, what the run printed, the (blocks, widths) each trace of the train step was for)."""
  traces, original = [], train.train_step

  def counting(model, *args):  # a ResNet's stages and widths, a GPT's one stack and width
    traces.append((getattr(model, 'stage_sizes', None) or (model.num_blocks,),
                   getattr(model, 'widths', None) or (model.width,)))
    return original(model, *args)
  train.train_step = counting
  try:
    with contextlib.redirect_stdout(io.StringIO()) as out:
      summary = train.train_and_evaluate(config, workdir)
  finally:
    train.train_step = original
  return summary, out.getvalue(), traces


@pytest.fixture(scope='module')
def wide_run(tmp_path_factory):
  """The uninterrupted tiny ResNet that widens: (workdir, summary, printed, traces)."""
  workdir = str(tmp_path_factory.mktemp('wide'))
  return (workdir, *train_quietly(tiny_wide(), workdir))


def copied(workdir, folder, last_step: int) -> str:
  """A copy of the run in `workdir` with its checkpoints up to `last_step` only: as if stopped there."""
  shutil.copytree(workdir, folder)
  for step in os.listdir(os.path.join(folder, 'checkpoints')):
    if step.isdigit() and int(step) > last_step:
      shutil.rmtree(os.path.join(folder, 'checkpoints', step))
  return str(folder)


def records(workdir):
  rs = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rs]


@pytest.mark.slow  # trains the tiny run that widens (about 25 s, mostly compiling)
def test_each_widening_keeps_the_function_and_each_shape_compiles_once(wide_run):
  """Cloned with its copies split unevenly (width_noise), the widened network's test loss before its
  first step is the narrow one's to float32 rounding; the widened and deepened one's moves by the
  depth operator's O(h^2)."""
  workdir, summary, _, traces = wide_run
  assert traces == [((2, 2), (2, 4)), ((2, 2), (4, 8)), ((4, 4), (8, 16))]
  rs = records(workdir)
  assert [r['widths'] for r in rs] == [{'widths': [2, 4]}, {'widths': [4, 8]}, {'widths': [8, 16]}]
  assert [r['h'] for r in rs] == [1.0, 1.0, 0.5]
  assert rs[1]['test_loss_at_growth'] == pytest.approx(rs[0]['test_loss'], rel=1e-6)
  assert rs[2]['test_loss_at_growth'] != pytest.approx(rs[1]['test_loss'], rel=1e-6)
  assert summary['cycle_widths'] == [r['widths'] for r in rs]
  state, meta = restore(workdir, 3, tiny_wide())
  assert meta['widths'] == [8, 16] and mlres.width_fields(state['params']) == {'widths': (8, 16)}
  assert mlres.stack_sizes(state['params']) == {'stage0': 4, 'stage1': 4}
  assert summary['num_params'] == mlres.count_params(state['params'])


@pytest.mark.slow
def test_the_cycle_lines_and_the_table_name_the_widths(wide_run):
  _, summary, printed, _ = wide_run
  lines = [line for line in printed.splitlines() if line.startswith('cycle ')]
  assert [line.split(', ')[:3] for line in lines] == [
      ['cycle 0: 2-2 blocks', 'widths 2-4', 'h=1'], ['cycle 1: 2-2 blocks', 'widths 4-8', 'h=1'],
      ['cycle 2: 4-4 blocks', 'widths 8-16', 'h=0.5']]
  head, _, row = report.table([summary]).splitlines()
  assert head.split()[:4] == ['Model', '#', 'Blocks', 'Widths']
  assert row.split()[:7] == ['tiny', '2-2', 'to', '4-4', '2-4', 'to', '8-16']


@pytest.mark.slow
@pytest.mark.parametrize('keep', [1, 2], ids=['before-a-widening', 'after-a-widening'])
def test_a_run_resumed_across_a_widening_equals_the_uninterrupted_one(wide_run, tmp_path, keep):
  """Resumed from the end of epoch 1 it widens again, drawing the same split; from the end of epoch
  2 it restores the widened network and then widens and deepens it."""
  workdir, summary, _, _ = wide_run
  resumed = copied(workdir, tmp_path / 'resumed', 4 * keep)  # 4 steps per epoch
  again, printed, traces = train_quietly(tiny_wide(), resumed)
  assert f'resuming from the checkpoint of step {4 * keep}, after epoch {keep} (2-2 blocks, widths ' \
         f'{"2-4" if keep == 1 else "4-8"}, h=1)' in printed
  chex.assert_trees_all_equal(restore(resumed, 3, tiny_wide())[0], restore(workdir, 3, tiny_wide())[0])
  assert records(resumed) == records(workdir)
  assert again['test_error'] == summary['test_error'] and again['cycle_widths'] == summary['cycle_widths']


@pytest.mark.slow
def test_a_checkpoint_of_other_widths_is_refused_even_when_asked(wide_run, tmp_path):
  workdir = copied(wide_run[0], tmp_path / 'other', 8)  # of epoch 2: widths 4-8
  config = tiny_wide(**{'cycles.widths': ({'widths': (2, 4)}, {'widths': (2, 4)}, {}), 'resume': 'any_config'})
  with pytest.raises(CheckpointError, match=r'holds another network than this config builds \(widths: '
                                            r'\[4, 8\] -> \[2, 4\]\)'):
    train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_a_gpt_widens_its_heads_and_adams_moments_per_seed_and_resumes_bit_for_bit(tmp_path):
  """Two seeds of the tiny GPT at width 4 (1 head, MLP 8), widened and deepened to width 8 (2 heads of
  the same dimension, MLP 16) with Adam's moments carried through the widening; its FLOPs are each
  cycle's own; resumed from before the widening, the same run."""
  config = tiny_lm(**{'cycles.widths': ({'width': 4, 'num_heads': 1, 'mlp_dim': 8}, {}), 'num_seeds': 2})
  workdir = str(tmp_path / 'run')
  summary, printed, traces = train_quietly(config, workdir)
  assert traces == [((1,), (4,)), ((2,), (8,))]
  assert 'cycle 1: 2 blocks, width 8, 2 heads, MLP 16, h=0.5, 5,632 parameters x 2 seeds' in printed
  rs = records(workdir)
  assert [r['flops_per_token'] for r in rs] == [
      mlres.gpt.flops_per_token(1, 4, 8, 8), mlres.gpt.flops_per_token(1, 4, 8, 8),
      mlres.gpt.flops_per_token(2, 8, 16, 8)]
  state, meta = restore(workdir, 3, config)
  assert (meta['width'], meta['num_heads'], meta['mlp_dim']) == (8, 2, 16)
  adam = state['opt_state'][0]
  assert int(np.ravel(adam.count)[0]) == 12 and np.abs(jax.tree.leaves(adam.nu)[0]).max() > 0
  resumed = copied(workdir, tmp_path / 'resumed', 8)  # the narrow cycle's end
  train_quietly(config, resumed)
  chex.assert_trees_all_equal(restore(resumed, 3, config)[0], state)
  assert records(resumed) == rs


@pytest.mark.slow
def test_each_seed_of_a_widening_run_is_its_run_alone(tmp_path):
  """Seed k's widening draws its split from seed + k, as its run alone does: seed 1 of two, widened
  from 4-8 to 8-16 after an epoch, is seed 1 alone."""
  plan = {'cycles.stage_sizes': ((2, 2), (2, 2)), 'cycles.epochs': (1, 1), 'num_epochs': 2,
          'cycles.widths': ({'widths': (4, 8)}, {})}
  both, alone = str(tmp_path / 'both'), str(tmp_path / 'alone')
  train_quietly(tiny_wide(**plan, num_seeds=2), both)
  train_quietly(tiny_wide(**plan, seed=1), alone)
  two = restore(both, 2, tiny_wide(**plan, num_seeds=2))[0]['params']
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[1], two),
                              restore(alone, 2, tiny_wide(**plan, seed=1))[0]['params'], rtol=1e-4, atol=1e-5)
  assert len({train.widening_seed(0, 1), train.widening_seed(1, 1), train.widening_seed(1, 2)}) == 3


@pytest.mark.parametrize('family, widths, message', [
    ('resnet', ({'widths': (8, 16, 32)}, {}), r'^config.cycles.widths=.*: needs one entry per cycle \(3\), or none$'),
    ('resnet', ({'widths': (8, 16, 32)}, {'depth': 3}, {}),
     r"^config.cycles.widths\[1\]={'depth': 3}: 'depth' is not a width of a resnet: its widths are widths$"),
    ('resnet', ({'widths': (8, 16)}, {}, {}), r'^config.cycles.widths\[0\]=.*: .*give one width per stage$'),
    ('resnet', ({'widths': (8, 16, 32)}, {'widths': (12, 32, 64)}, {}),
     r'^config.cycles.widths\[1\]=.*: widths: clone repeats each unit a whole number of times, and 12 is '
     r'not a multiple of stage0=8$'),
    ('resnet', ({}, {'widths': (8, 16, 32)}, {}),
     r'^config.cycles.widths\[1\]=.*: widths: stage0 would shrink from 16 to 8; widen only grows$'),
    ('gpt', ({'width': 64, 'num_heads': 2}, {'width': 96, 'num_heads': 3}, {}),
     r'^config.cycles.widths\[1\]=.*: width: clone repeats .* 96 is not a multiple of width=64$'),
    ('gpt', ({'width': 64, 'num_heads': 2}, {'width': 128, 'num_heads': 3}, {}),
     r"^config.cycles.widths\[1\]={'width': 128, 'num_heads': 3}: width=128 is not divisible by num_heads=3"),
    ('gpt', ({'mlp_dim': 1024}, {}, {}),
     r'^config.cycles.widths\[1\]=\{\}: mlp_dim: mlp_dim would shrink from 1024 to 512; widen only grows$'),
    ('gpt', ({'width': 64, 'num_heads': 2}, {}, {}), None),  # heads cloned, their dimension kept
    ('gpt', ({'width': 64, 'num_heads': 2, 'mlp_dim': 256}, {}, {}), None),
    ('gpt', ({'width': 64, 'num_heads': 2, 'mlp_dim': 256}, 'wider', {}),
     r'^config.cycles.widths=.*: must hold one dict of width fields per cycle'),
])
def test_a_plan_that_cannot_widen_is_refused_in_one_line(family, widths, message):
  c = config_lib.default() if family == 'resnet' else config_lib.gpt('i')
  c.cycles.widths = widths
  if message is None:
    config_lib.validate(c)
    return
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.validate(c)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('field, value, message', [
    ('cycles.width_operator', 'net2net', r"^config.cycles.width_operator='net2net': must be one of clone, zero$"),
    ('cycles.width_noise', -0.1, r'^config.cycles.width_noise=-0.1: must be a non-negative finite number$'),
])
def test_the_widening_operator_and_noise_are_checked(field, value, message):
  c = config_lib.default()
  c.update_from_flattened_dict({field: value})
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)


def test_zero_widens_only_where_no_norm_spans_the_new_units():
  """A GPT's MLP may grow by zero; its width, which every LayerNorm spans, may not."""
  c = config_lib.gpt('i')
  c.cycles.width_operator = 'zero'
  c.cycles.widths = ({'mlp_dim': 256}, {}, {})
  config_lib.validate(c)
  c.cycles.widths = ({'width': 64, 'num_heads': 2}, {}, {})
  with pytest.raises(config_lib.ConfigError, match=r"^config.cycles.widths\[1\]=\{\}: zero would not be exact "
                                                   r'for width: \*/norm1/scale spans width'):
    config_lib.validate(c)
