"""The train state sharded over a mesh (mlres.sharding, config.mesh): the rule on the families' states
before and after growth, and training, resuming and restoring on 8 and 2 virtual CPU devices (in
subprocesses, tests/meshes.py) against the same run on this process's one device."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import mlres.data
from mlres import config as config_lib
from mlres import parallel, report, sharding, train
from mlres.checkpoint import Checkpointer, fingerprint

from conftest import TESTS, restore, run_main, tiny, tiny_lm

MESH = {'seeds': 1, 'data': 2, 'fsdp': 4}


def spec(shape, fsdp=4, **kw):
  """leaf_spec as a tuple of one entry per axis (a PartitionSpec may drop trailing Nones)."""
  s = tuple(sharding.leaf_spec(shape, fsdp, **{'min_size': 0, **kw}))
  return s + (None,) * (len(shape) - len(s))


def test_a_leaf_goes_on_fsdp_along_its_largest_dimension_that_fsdp_divides():
  assert spec((6, 8, 16)) == (None, None, 'fsdp')
  assert spec((16, 8)) == ('fsdp', None)
  assert spec((8, 8)) == ('fsdp', None)             # equal sizes: the first
  assert spec((102, 12)) == (None, 'fsdp')          # the largest, 102, is not divisible by 4
  assert spec((6, 10)) == (None, None)              # none fits: whole on every device
  assert spec((16, 8), min_size=129) == (None, None)  # 128 elements: too small to be worth it
  assert spec((16, 8), fsdp=1) == (None, None)
  assert spec(()) == ()


def test_the_layer_axis_of_a_scanned_stack_and_the_seed_axis_are_never_split_by_fsdp():
  assert spec((8, 4, 6), scanned=True) == (None, 'fsdp', None)  # 8 layers would be the largest
  assert spec((8, 6, 6), scanned=True) == (None, None, None)
  assert spec((4, 16, 8), seeds=2, seeded=True) == ('seeds', 'fsdp', None)
  assert spec((4, 16, 8), seeded=True) == (None, 'fsdp', None)  # one group of devices: not split
  assert spec((4, 8, 16, 8), seeds=4, seeded=True, scanned=True) == ('seeds', None, 'fsdp', None)
  assert spec((4, 16, 8), seeds=2, seeded=True, min_size=129) == ('seeds', None, None)  # 128 a seed


def shapes_of(config, grown: bool = False):
  """The train state's shapes of the config's first cycle, or grown into its second."""
  setup = train.Setup.create(config, mlres.data.load(config), parallel.Layout.all_devices())
  model = setup.model(setup.cycles[0])
  state = jax.eval_shape(lambda k: train.init_state(model, setup.tx, k, *setup.task.input),
                         jax.random.key(0))
  if grown:
    state = jax.eval_shape(lambda s: train.grow(s, setup.tx, 'interpolate', stacks=getattr(
        model, 'stacks', None)), state)
  return state


def specs_by_path(state, sizes=MESH, min_size=0):
  """Each leaf's spec by path, without trailing Nones: ('fsdp',) for a leaf split on its first axis."""
  def trimmed(s):
    s = tuple(s)
    while s and s[-1] is None:
      s = s[:-1]
    return s
  specs = sharding.state_specs(state, sizes, min_size=min_size)
  flat = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda s: isinstance(s, P))
  return {jax.tree_util.keystr(path): trimmed(s) for path, s in flat}


@pytest.mark.parametrize('scan', [False, True])
@pytest.mark.parametrize('grown', [False, True])
def test_the_gpt_s_state_is_laid_out_by_the_rule_before_and_after_growth(scan, grown):
  state = shapes_of(tiny_lm(**{'model.scan_blocks': scan}), grown)
  specs = specs_by_path(state)
  block = "['decoder']['scan']" if scan else "['decoder']['block1']" if grown else "['decoder']['block0']"
  layer = (None,) if scan else ()
  assert specs["['params']['embed']['embedding']"] == ('fsdp',)               # (256, 8)
  assert specs["['params']['head']['kernel']"] == (None, 'fsdp')              # (8, 256)
  assert specs["['params']['pos_embed']"] == ('fsdp',)                        # (8, 8)
  assert specs[f"['params']{block}['mlp1']['kernel']"] == (*layer, None, 'fsdp')   # (8, 16)
  assert specs[f"['params']{block}['mlp2']['kernel']"] == (*layer, 'fsdp')         # (16, 8)
  assert specs[f"['params']{block}['attn']['query']['kernel']"] == (*layer, 'fsdp')  # (8, 2, 4)
  assert specs[f"['params']{block}['attn']['key']['bias']"] == (*layer, None, 'fsdp')  # (2, 4)
  assert specs["['step']"] == () and specs["['ode']['h']"] == ()
  assert_moments_follow_their_parameters(specs)


def test_the_resnet_s_state_and_batch_statistics_are_laid_out_by_the_rule_before_and_after_growth():
  for grown in (False, True):
    specs = specs_by_path(shapes_of(tiny(), grown))
    last = "['stage1']['block3']" if grown else "['stage1']['block1']"
    assert specs["['params']['stem']['kernel']"] == (None, None, None, 'fsdp')       # (3, 3, 3, 4)
    assert specs["['params']['stage0']['block0']['conv1']['kernel']"] == (None, None, 'fsdp')  # 4, 4
    assert specs["['params']['stage1']['block0']['conv1']['kernel']"] == (None, None, None, 'fsdp')
    assert specs[f"['params']{last}['conv2']['kernel']"] == (None, None, 'fsdp')     # (3, 3, 8, 8)
    assert specs["['params']['head']['kernel']"] == ('fsdp',)                        # (8, 4)
    assert specs[f"['batch_stats']{last}['norm2']['mean']"] == ('fsdp',)
    assert_moments_follow_their_parameters(specs)


def assert_moments_follow_their_parameters(specs):
  """Every leaf of the optimizer state that mirrors a parameter (Adam's mu and nu, SGD's trace) has
  that parameter's spec."""
  params = {p[len("['params']"):]: s for p, s in specs.items() if p.startswith("['params']")}
  moments = [(p, s) for p, s in specs.items() if p.startswith("['opt_state']")]
  mirrored = [(p, s) for p, s in moments for q in params if p.endswith(q) and "['params']" not in p
              and p[:-len(q)].endswith(('.mu', '.nu', '.trace'))]
  assert len(mirrored) >= len(params)  # one moment per parameter at least
  for p, s in mirrored:
    param = next(q for q in params if p.endswith(q))
    assert s == params[param], p


def test_the_default_mesh_replicates_everything_and_unfit_leaves_are_named():
  state = shapes_of(tiny_lm())
  assert set(specs_by_path(state, {'seeds': 1, 'data': 8, 'fsdp': 1}).values()) == {()}
  assert set(specs_by_path(state, min_size=2 ** 14).values()) == {()}  # every leaf of the tiny GPT is small
  fsdp3 = {'seeds': 1, 'data': 1, 'fsdp': 3}
  specs = sharding.state_specs(state['params'], fsdp3, min_size=0)
  assert sharding.unsharded(state['params'], specs, 0)[:2] == [
      "['decoder']['block0']['attn']['key']['bias']", "['decoder']['block0']['attn']['key']['kernel']"]
  assert "['embed']['embedding']" in sharding.unsharded(state['params'], specs, 0)  # (256, 8)
  assert sharding.unsharded(state['params'], specs, 10 ** 6) == []
  specs = sharding.state_specs(state, fsdp3, min_size=0)
  assert "['step']" not in sharding.unsharded(state, specs, 0)  # a scalar has no axis to split


@pytest.mark.parametrize('overrides, message', [
    ({'mesh.data': 2, 'mesh.fsdp': 2}, 'config.mesh: seeds 1 x data 2 x fsdp 2 is 4 devices, but this '
     'run has 8; the axes must multiply to the device count (or one be -1)'),
    ({'mesh.fsdp': 3}, 'config.mesh.data=-1: the other axes take 3 devices, which do not divide the 8 '
     'of this run'),
    ({'mesh.seeds': -1}, 'config.mesh.data=-1: only one axis may take the devices the others leave, '
     'and mesh.seeds is -1 too'),
    ({'mesh.fsdp': 0}, 'config.mesh.fsdp=0: must be a positive integer, or -1 for the devices the '
     'other axes leave'),
    ({'mesh.min_shard_size': -1}, 'config.mesh.min_shard_size=-1: must be a non-negative integer '
     '(elements)'),
    ({'mesh.fsdp': 8, 'batch_size': 12}, 'config.mesh.fsdp=8: a batch is split over mesh.data x '
     'mesh.fsdp = 1 x 8 devices, which must divide batch_size=12'),
    ({'mesh.seeds': 2, 'num_seeds': 3}, 'config.num_seeds=3: mesh.seeds=2 groups of devices share the '
     'seeds, so they must divide them; use a multiple of 2'),
])
def test_a_mesh_that_cannot_work_is_refused_naming_the_field(overrides, message):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(tiny_lm(**overrides), num_devices=8)
  assert str(e.value) == message


# --- 8 and 2 virtual devices, in subprocesses --------------------------------------------------

LM = {'optimizer.eta_max': 0.01, 'text.steps_per_epoch': 7}  # 21 steps through a growth


def meshes(action, workdir, name, devices, **overrides):
  """tests/meshes.py on `devices` virtual CPU devices; its JSON line."""
  result = run_main([action, str(workdir), name, *(f'{k}={v!r}' for k, v in overrides.items())],
                    devices=devices, script=os.path.join(TESTS, 'meshes.py'))
  assert result.returncode == 0, result.stderr[-3000:]
  return {**json.loads(result.stdout.strip().splitlines()[-1]), 'stdout': result.stdout}


def losses(workdir, key):
  records = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [r['seeds'][key] if 'seeds' in r else [r[key]] for r in records]


def assert_laid_out_by_the_rule(found, sizes, num_seeds=1):
  """Every leaf's spec is the rule's for its shape, and each device holds its shards' bytes."""
  expected_bytes = 0
  for path, (shape, itemsize, got) in found['leaves'].items():
    want = spec(tuple(shape), sizes['fsdp'], seeds=sizes['seeds'], seeded=num_seeds > 1,
                scanned="['scan']" in path)
    assert tuple(got) + (None,) * (len(shape) - len(got)) == want, path
    split = (sizes['fsdp'] if 'fsdp' in want else 1) * (sizes['seeds'] if 'seeds' in want else 1)
    expected_bytes += itemsize * int(np.prod(shape)) // split
  assert found['held'] == [expected_bytes] * len(found['held'])


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """Four seeds of the tiny GPT vmapped on this process's one device: seed 0 is the run of one seed."""
  workdir = str(tmp_path_factory.mktemp('one-device'))
  train.train_and_evaluate(tiny_lm(num_seeds=4, **LM), workdir)
  return workdir


@pytest.fixture(scope='module')
def fsdp4(tmp_path_factory):
  """The tiny GPT (one seed) trained with its state sharded 4 ways on 8 devices: (workdir, layout)."""
  workdir = tmp_path_factory.mktemp('fsdp4')
  return str(workdir), meshes('train', workdir, 'tiny_lm', 8, **LM,
                              **{'mesh.fsdp': 4, 'mesh.min_shard_size': 0})


@pytest.mark.slow
def test_fsdp_4_trains_like_one_device_through_a_growth_with_every_leaf_where_the_rule_says(
    reference, fsdp4):
  workdir, found = fsdp4
  for key in ('train_loss', 'test_loss'):
    got, want = losses(workdir, key), [[seeds[0]] for seeds in losses(reference, key)]
    assert len(got) == 3
    np.testing.assert_allclose(got, want, rtol=1e-6)
  assert any('fsdp' in s for _, _, s in found['leaves'].values())
  assert_laid_out_by_the_rule(found, {'seeds': 1, 'data': 2, 'fsdp': 4})
  # Each cycle says what the state weighs and what a device holds of it (every leaf fits here).
  total = sum(itemsize * int(np.prod(shape)) for shape, itemsize, _ in found['leaves'].values())
  line = f'train state {total / 2 ** 20:,.2f} MiB, at most {max(found["held"]) / 2 ** 20:,.2f} MiB on a device'
  assert found['stdout'].splitlines().count(line) == 1  # the grown state's; the first one's is smaller


@pytest.mark.slow
def test_four_seeds_on_the_seeds_axis_train_like_the_same_seeds_vmapped_on_one_device(reference, tmp_path):
  found = meshes('train', tmp_path, 'tiny_lm', 8, num_seeds=4, **LM,
                 **{'mesh.seeds': 4, 'mesh.fsdp': 2, 'mesh.min_shard_size': 0})
  for key in ('train_loss', 'test_loss'):
    np.testing.assert_allclose(losses(tmp_path, key), losses(reference, key), rtol=1e-6)
  assert_laid_out_by_the_rule(found, {'seeds': 4, 'data': 1, 'fsdp': 2}, num_seeds=4)


@pytest.mark.slow
def test_the_resnet_with_sharded_batch_statistics_trains_like_one_device(tmp_path):
  overrides = {'optimizer.eta_max': 0.01}
  train.train_and_evaluate(tiny(**overrides), str(tmp_path / 'one'))
  found = meshes('train', tmp_path / 'fsdp', 'tiny', 8, **overrides,
                 **{'mesh.fsdp': 4, 'mesh.min_shard_size': 0})
  for key in ('train_loss', 'test_loss'):
    np.testing.assert_allclose(losses(tmp_path / 'fsdp', key), losses(tmp_path / 'one', key), rtol=1e-6)
  assert_laid_out_by_the_rule(found, {'seeds': 1, 'data': 2, 'fsdp': 4})


@pytest.mark.slow
def test_a_checkpoint_of_fsdp_4_on_8_devices_restores_bit_equal_on_2_devices_and_on_1(fsdp4):
  workdir, _ = fsdp4
  two = meshes('restore', workdir, 'tiny_lm', 2, **LM, **{'mesh.fsdp': 2, 'mesh.min_shard_size': 0})
  assert two['fingerprint'] == two['saved']
  assert_laid_out_by_the_rule(two, {'seeds': 1, 'data': 1, 'fsdp': 2})
  state, meta = restore(workdir, 3, tiny_lm(**LM))
  assert fingerprint(state) == meta['fingerprint'] == two['saved']


@pytest.mark.slow
def test_a_run_stopped_on_8_devices_with_fsdp_4_resumes_on_2_with_fsdp_2(fsdp4, tmp_path):
  workdir, _ = fsdp4
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  ckpt = Checkpointer(os.path.join(resumed, 'checkpoints'))
  last = ckpt.steps()[-1]
  ckpt.close()
  shutil.rmtree(os.path.join(resumed, 'checkpoints', str(last)))  # as if stopped after epoch 2
  os.remove(os.path.join(resumed, 'summary.json'))
  meshes('train', resumed, 'tiny_lm', 2, **LM, **{'mesh.fsdp': 2, 'mesh.min_shard_size': 0})
  for key in ('train_loss', 'test_loss'):
    np.testing.assert_allclose(losses(resumed, key), losses(workdir, key), rtol=1e-6)


@pytest.mark.slow
def test_a_mesh_of_another_device_count_is_refused_in_one_line(tiny_file):
  result = run_main(['--config.mesh.fsdp=3'], tiny_file, '/nonexistent/never-made', devices=8)
  assert result.returncode == 2 and result.stderr.strip() == (
      'error: config.mesh.data=-1: the other axes take 3 devices, which do not divide the 8 of this run')
