"""The trainer end to end on tiny synthetic data: outputs, interpolation, compiles, resume."""
import json
import os
import shutil
import subprocess
import sys
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlres
from mlres import config as config_lib, events, report, tasks, train
from mlres.checkpoint import CheckpointError

from conftest import restore, scalars, train_counting_traces

METRICS = {'epoch', 'cycle', 'stage_sizes', 'h', 'lr', 'train_loss', 'train_accuracy', 'test_loss',
           'test_accuracy', 'epoch_seconds', 'steps_per_second'}
SUMMARY = {'test_error', 'train_seconds', 'wall_seconds', 'compile_seconds', 'compile_wait_seconds',
           'num_params', 'config'}


@pytest.fixture
def finished(tiny_run):
  """The session's uninterrupted tiny run: (workdir, summary, traced architectures)."""
  return tiny_run


def test_metrics_and_summary(finished):
  workdir, summary, _ = finished
  records = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['epoch'] for r in records] == [1, 2, 3]
  assert all(METRICS <= set(r) and not {'tokens', 'flops'} & set(r) for r in records)  # a classifier's
  assert [r['stage_sizes'] for r in records] == [[2, 2], [2, 2], [4, 4]]
  assert [r['h'] for r in records] == [1.0, 1.0, 0.5]
  assert [r['cycle'] for r in records] == [0, 0, 1]
  assert records[0]['lr'] == pytest.approx(0.5) and records[2]['lr'] == pytest.approx(0.5)
  assert records[1]['lr'] < 0.5
  with open(os.path.join(workdir, 'summary.json')) as f:
    saved = json.load(f)
  assert SUMMARY <= set(saved) and saved == json.loads(json.dumps(summary))
  assert saved['test_error'] == pytest.approx(1 - records[-1]['test_accuracy'])
  deeper = mlres.ResNet(stage_sizes=(4, 4), widths=(4, 8), num_classes=4)
  shapes = jax.eval_shape(lambda: deeper.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32)))
  assert saved['num_params'] == mlres.count_params(shapes['params'])
  assert saved['train_seconds'] > 0 and saved['wall_seconds'] >= saved['train_seconds']
  assert saved['config']['cycles']['epochs'] == [2, 1]


def test_each_cycle_compiles_its_step_once(finished):
  _, _, traces = finished
  assert traces == [(2, 2), (4, 4)]


def test_the_next_cycle_compiles_while_this_one_trains(tmp_path, tiny_config, monkeypatch):
  """The first epoch's end waits until the deeper model's step has been traced: without a
  background compile that would never happen, and the wait would time out."""
  deeper_traced, traced = threading.Event(), []
  step, epoch_line = train.train_step, report.epoch_line

  def tracing(model, *args):
    traced.append((model.stage_sizes, threading.current_thread() is threading.main_thread()))
    if model.stage_sizes == (4, 4):
      deeper_traced.set()
    return step(model, *args)

  def after_epoch(record, num_epochs):
    if record['epoch'] == 1:
      assert deeper_traced.wait(120), 'the deeper model did not compile during the first cycle'
    epoch_line(record, num_epochs)
  monkeypatch.setattr(train, 'train_step', tracing)
  monkeypatch.setattr(report, 'epoch_line', after_epoch)
  summary = train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert traced == [((2, 2), False), ((4, 4), False)]  # both traced off the main thread
  assert 0 <= summary['compile_wait_seconds'] <= summary['compile_seconds']


def test_on_a_cpu_each_cycle_compiles_when_it_starts(tmp_path, tiny_config, monkeypatch):
  """'auto' compiles nothing beside the stepping on a CPU: the deeper model after epoch 2."""
  assert jax.default_backend() == 'cpu'
  events, step, epoch_line = [], train.train_step, report.epoch_line
  monkeypatch.setattr(train, 'train_step', lambda model, *a: events.append(model.stage_sizes) or step(model, *a))
  monkeypatch.setattr(report, 'epoch_line', lambda r, n: events.append(r['epoch']) or epoch_line(r, n))
  summary = train.train_and_evaluate(tiny_config(compile_ahead='auto'), str(tmp_path))
  assert events == [(2, 2), 1, 2, (4, 4), 3]
  assert summary['compile_wait_seconds'] == pytest.approx(summary['compile_seconds'], abs=0.1)


def test_a_baseline_restarts_the_learning_rate_with_one_compile(tmp_path, tiny_config):
  config = tiny_config(**{'cycles.stage_sizes': ((2, 2), (2, 2)), 'cycles.epochs': (1, 2)})
  summary, traces = train_counting_traces(config, str(tmp_path))
  assert traces == [(2, 2)]
  records = report.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert [r['lr'] for r in records[:2]] == [pytest.approx(0.5)] * 2
  assert records[2]['lr'] < 0.5 and [r['h'] for r in records] == [1.0] * 3
  assert summary['stage_sizes'] == [[2, 2], [2, 2]]


def test_checkpoints_name_their_architecture(finished, tiny_config):
  workdir, _, _ = finished
  state, meta = restore(workdir, 2, tiny_config())
  assert meta['stage_sizes'] == [2, 2] and meta['h'] == 1.0 and meta['epoch'] == 2
  assert mlres.architecture(state['params'])['stage_sizes'] == (2, 2)
  state, meta = restore(workdir, 3, tiny_config())
  assert meta['stage_sizes'] == [4, 4] and meta['h'] == 0.5 and float(state['ode']['h']) == 0.5


def test_the_deeper_model_starts_from_the_interpolated_weights(tmp_path, tiny_config):
  config = tiny_config(**{'optimizer.eta_max': 1e-30, 'optimizer.eta_min': 0.0,
                          'checkpoint_every_epochs': 0})
  train.train_and_evaluate(config, str(tmp_path))
  before, _ = restore(str(tmp_path), 2, config)
  after, _ = restore(str(tmp_path), 3, config)
  chex.assert_trees_all_close(after['params'], mlres.interpolate(before['params']), rtol=1e-6, atol=1e-20)
  assert int(after['step']) == int(before['step']) + 4  # 64 images / 16 per batch


def test_momentum_can_be_interpolated_like_the_weights(finished, tiny_config):
  workdir, _, _ = finished
  config = tiny_config(**{'optimizer.momentum_at_interpolation': 'interpolate'})
  state, _ = restore(workdir, 2, config)
  tx = train.make_optimizer(config)
  grown = train.grow(state, tx, 'interpolate')
  momentum = lambda s: [x for x in jax.tree.leaves(s['opt_state'])]
  chex.assert_trees_all_equal(momentum(grown), jax.tree.leaves(mlres.interpolate(momentum_tree(state))))
  fresh = train.grow(state, tx, 'fresh')
  assert all(float(np.abs(x).max()) == 0 for x in momentum(fresh))


# Every leaf that weight decay reaches, of a tiny ResNet, ViT and GPT of one block per stack: kernels
# and embeddings, never a bias (the attention's are (heads, head_dim) matrices), a norm's scale or h.
ATTENTION = [f'attn/{p}/kernel' for p in ('key', 'out', 'query', 'value')]
DECAYED = {
    'resnet': (mlres.ResNet(stage_sizes=(1, 1), widths=(4, 8)), np.zeros((1, 8, 8, 3), np.float32),
               ['head/kernel', 'stage0/block0/conv1/kernel', 'stage0/block0/conv2/kernel',
                'stage1/block0/conv1/kernel', 'stage1/block0/conv2/kernel', 'stem/kernel']),
    'vit': (mlres.ViT(num_blocks=1, width=8, num_heads=2, mlp_dim=16, patch_size=4),
            np.zeros((1, 8, 8, 3), np.float32),
            ['embed/kernel', *(f'encoder/block0/{p}' for p in ATTENTION + ['mlp1/kernel', 'mlp2/kernel']),
             'head/kernel', 'pos_embed']),
    'gpt': (mlres.GPT(num_blocks=1, width=8, num_heads=2, mlp_dim=16, context=8),
            np.zeros((1, 8), np.int32),
            ['decoder/block0/' + p for p in ATTENTION + ['mlp1/kernel', 'mlp2/kernel']] +
            ['embed/embedding', 'head/kernel', 'pos_embed']),
}


@pytest.mark.parametrize('optimizer', ['sgd', 'adamw'])
@pytest.mark.parametrize('family', list(DECAYED))
def test_weight_decay_reaches_kernels_and_embeddings_only(family, optimizer):
  """The mask of decay (train.decayed) holds exactly the expected leaves, and with zero gradients the
  optimizer's direction is the decay alone: nonzero exactly there."""
  model, x, expected = DECAYED[family]
  params = jax.tree.map(lambda s: np.ones(s.shape, s.dtype),
                        jax.eval_shape(model.init, jax.random.key(0), x)['params'])
  named = lambda tree: {'/'.join(str(k.key) for k in path): leaf
                        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert sorted(name for name, masked in named(train.decayed(params)).items() if masked) == sorted(expected)
  tx = train.make_optimizer({'optimizer': config_lib.optimizer(optimizer, weight_decay=0.5)})
  updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
  assert sorted(name for name, u in named(updates).items() if np.any(u != 0)) == sorted(expected)


def sgd(**fields):
  """make_optimizer's config of plain SGD: the update is the (clipped) gradient itself."""
  return {'optimizer': config_lib.optimizer('sgd', momentum=0.0, weight_decay=0.0, **fields)}


def test_a_gradient_above_the_clip_norm_is_scaled_to_it():
  """Global norm sqrt(3^2 + 4^2) = 5, clipped to 1: every leaf times 1/5. Vmapped over seeds (as the
  trainer's step is), each seed is clipped by its own norm: the second's, 0.5, is left alone."""
  grads = {'a': np.array([3.0, 0.0], np.float32), 'kernel': np.array([[4.0]], np.float32)}
  tx = train.make_optimizer(sgd(clip_norm=1.0))
  updates, _ = tx.update(grads, tx.init(grads), grads)
  chex.assert_trees_all_close(updates, {'a': np.array([0.6, 0.0]), 'kernel': np.array([[0.8]])})
  below, _ = train.make_optimizer(sgd(clip_norm=10.0)).update(grads, tx.init(grads), grads)
  chex.assert_trees_all_equal(below, grads)
  seeds = jax.tree.map(lambda g: np.stack([g, g / 10]), grads)
  updates, _ = jax.vmap(tx.update)(seeds, jax.vmap(tx.init)(seeds), seeds)
  chex.assert_trees_all_close(updates, {'a': np.array([[0.6, 0.0], [0.3, 0.0]]),
                                        'kernel': np.array([[[0.8]], [[0.4]]])})


@pytest.mark.parametrize('optimizer', ['sgd', 'adamw'])
def test_clip_norm_0_is_no_clipping_and_clipping_keeps_the_state(optimizer):
  """clip_norm=0 updates bit for bit as a norm no gradient reaches (nothing clipped), not as a clip
  to 0. A clipped gradient reaches the optimizer's state (the momentum, Adam's moments: Adam's first
  update is scale-free), whose structure is the same either way, so a checkpoint fits both."""
  params = {'dense': {'kernel': np.full((3, 2), 0.5, np.float32), 'bias': np.ones(2, np.float32)}}
  grads = jax.tree.map(lambda p: np.arange(p.size, dtype=np.float32).reshape(p.shape), params)
  def update(clip_norm):
    tx = train.make_optimizer({'optimizer': config_lib.optimizer(optimizer, clip_norm=clip_norm)})
    return tx.update(grads, tx.init(params), params)
  off, state = update(0.0)
  chex.assert_trees_all_equal((off, state), update(1e30))
  _, clipped = update(1.0)
  assert jax.tree.structure(clipped) == jax.tree.structure(state)
  moments = lambda s: [x for x in jax.tree.leaves(s) if np.ndim(x)]  # not Adam's step count
  assert not any(np.allclose(a, b) for a, b in zip(moments(clipped), moments(state)))


def test_a_warmup_as_long_as_a_cycle_is_refused_once_the_images_are_read(tmp_path, tiny_config):
  """An image dataset's steps per epoch (64 images in batches of 16: 4) are known only from its data,
  which is read before the workdir is made and anything compiles."""
  config = tiny_config(**{'optimizer.warmup_steps': 4})
  config_lib.validate(config)
  workdir = str(tmp_path / 'run')
  with pytest.raises(config_lib.ConfigError, match=r"^config.optimizer.warmup_steps=4: must be shorter "
                                                   r"than cycle 1's 4 steps \(1 epoch of 4\)$"):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)


def test_a_task_holds_what_its_metrics_and_initialization_need(tiny_config):
  """Its batch size and one example's shape come from the task, not from its callers."""
  config = tiny_config()
  task = tasks.create(config, mlres.data.load(config))
  metrics = task.metrics(train.EpochSums(steps=2, loss=np.float64(3.0), correct=np.int64(8)),
                         (np.float64(20.0), np.int64(10)))
  assert metrics == {'train_loss': 1.5, 'train_accuracy': 8 / (2 * 16), 'test_loss': 0.5,
                     'test_accuracy': 0.25}  # 40 test images
  assert task.input == ((8, 8, 3), jnp.float32)


def momentum_tree(state):
  """The params-shaped momentum inside the optimizer state."""
  found = []
  structure = jax.tree.structure(state['params'])
  def visit(node):
    if jax.tree.structure(node) == structure:
      found.append(node)
    elif isinstance(node, (tuple, list)):
      for n in node:
        visit(n)
  visit(state['opt_state'])
  assert len(found) == 1
  return found[0]


@pytest.mark.parametrize('keep', [1, 2], ids=['mid-cycle', 'cycle-boundary'])
def test_resume_equals_an_uninterrupted_run(finished, tmp_path, tiny_config, keep):
  workdir, summary, _ = finished
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  for step in os.listdir(os.path.join(resumed, 'checkpoints')):
    if step.isdigit() and int(step) > 4 * keep:  # 4 steps per epoch
      shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  again = train.train_and_evaluate(tiny_config(), resumed)
  want, _ = restore(workdir, 3, tiny_config())
  got, _ = restore(resumed, 3, tiny_config())
  chex.assert_trees_all_equal(got, want)  # bit for bit
  assert again['test_error'] == summary['test_error']
  records = report.read_jsonl(os.path.join(resumed, 'metrics.jsonl'))
  assert [r['epoch'] for r in records] == [1, 2, 3]
  original = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  for r, o in zip(records, original):
    assert r['train_loss'] == o['train_loss'] and r['test_accuracy'] == o['test_accuracy']


def test_resuming_into_another_architecture_is_refused_even_when_asked(finished, tmp_path, tiny_config):
  workdir, _, _ = finished
  other = str(tmp_path / 'other')
  shutil.copytree(workdir, other)
  config = tiny_config(**{'cycles.stage_sizes': ((3, 3), (6, 6)), 'resume': 'any_config'})
  with pytest.raises(CheckpointError, match='holds 4-4 blocks at h = 0.5 but this config plans 6-6 blocks at h = 0.5'):
    train.train_and_evaluate(config, other)


@pytest.mark.slow
def test_steps_per_dispatch_does_not_change_the_result(finished, tmp_path, tiny_config):
  workdir, summary, _ = finished
  again = train.train_and_evaluate(tiny_config(steps_per_dispatch=2), str(tmp_path))
  chex.assert_trees_all_close(restore(str(tmp_path), 3, tiny_config())[0]['params'],
                              restore(workdir, 3, tiny_config())[0]['params'], rtol=1e-5, atol=1e-6)
  assert abs(again['test_error'] - summary['test_error']) < 0.05


@pytest.mark.parametrize('steps, limit, chunk', [
    (500, 50, 50), (156, 50, 39), (44, 50, 44), (7, 3, 3), (8, 1, 1),
    (2083, 50, 50), (781, 50, 49), (51, 50, 26)])  # 2083 is prime: a divisor rule would give 1
def test_steps_per_dispatch_is_the_fewest_calls_wasting_least(steps, limit, chunk):
  assert train.steps_per_dispatch(steps, limit) == chunk
  calls = -(-steps // chunk)
  assert calls == -(-steps // limit) and calls * chunk - steps < calls


@pytest.mark.slow
def test_chunks_that_overrun_the_epoch_discard_the_extra_steps(tmp_path, tiny_config):
  """5 steps an epoch (64 images, batch 12) in calls of 3: the sixth step of each epoch is
  computed and thrown away, so the run is the one-step-per-call run."""
  def run(chunk):
    workdir = str(tmp_path / str(chunk))
    train.train_and_evaluate(tiny_config(batch_size=12, steps_per_dispatch=chunk), workdir)
    return (restore(workdir, 3, tiny_config(batch_size=12))[0],
            report.read_jsonl(os.path.join(workdir, 'metrics.jsonl')))
  (one, one_metrics), (three, three_metrics) = run(1), run(3)
  assert int(three['step']) == int(one['step']) == 15
  chex.assert_trees_all_close(three['params'], one['params'], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(three['batch_stats'], one['batch_stats'], rtol=1e-5, atol=1e-6)
  for a, b in zip(one_metrics, three_metrics):
    np.testing.assert_allclose([b['train_loss'], b['train_accuracy']],
                               [a['train_loss'], a['train_accuracy']], rtol=1e-5)


@pytest.mark.slow
def test_the_command_line_trains_and_rejects_bad_fields(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  base = [sys.executable, '-m', 'mlres.main', '--config=configs/digits.py', f'--workdir={tmp_path}']
  env = {**os.environ, 'PYTHONPATH': root}
  bad = subprocess.run(base + ['--config.model.h=-1.0'], cwd=root, env=env, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
      'error: config.model.h=-1.0: the explicit step size must be a positive number')
  unknown = subprocess.run(base + ['--config.no_such_field=1'], cwd=root, env=env, capture_output=True,
                           text=True, timeout=300)
  assert unknown.returncode != 0 and 'no_such_field' in unknown.stderr
  assert not os.path.exists(tmp_path / 'metrics.jsonl')


def test_tensorboard_holds_every_epoch_once_after_a_resume(finished, tmp_path, tiny_config):
  """Epochs 2 and 3 are trained twice, before and after losing their checkpoints: TensorBoard's
  reader sees each epoch once, with the values of metrics.jsonl."""
  workdir, _, _ = finished
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  for step in os.listdir(os.path.join(resumed, 'checkpoints')):
    if step.isdigit() and int(step) > 4:
      shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  train.train_and_evaluate(tiny_config(), resumed)
  assert len([f for f in os.listdir(resumed) if f.startswith('events.out.tfevents.')]) == 2
  records = report.read_jsonl(os.path.join(resumed, 'metrics.jsonl'))
  got = scalars(resumed)
  for tag, field in events.SCALARS.items():
    assert got[tag] == [(r['epoch'], np.float32(r[field])) for r in records], tag
  assert got['schedule/blocks'] == [(1, 4), (2, 4), (3, 8)]


def test_tensorboard_can_be_turned_off(tmp_path, tiny_config):
  train.train_and_evaluate(tiny_config(tensorboard=False, **{'cycles.epochs': (1, 1)}, num_epochs=2),
                           str(tmp_path))
  assert not [f for f in os.listdir(tmp_path) if 'tfevents' in f]
