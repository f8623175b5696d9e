"""Invariants of the ODE view: interpolation refines the Euler grid, lesions cost G(Y)."""
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlres
from mlres.model import Block, Stage

X = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))


def init(stage_sizes=(2, 3), widths=(4, 8), h=1.0, num_classes=10, dtype=jnp.float32):
  model = mlres.ResNet(stage_sizes=stage_sizes, widths=widths, h=h, num_classes=num_classes, dtype=dtype)
  return model, model.init(jax.random.key(0), X)


def perturbed(variables, scale=0.3, seed=7):
  """Variables with random batch-norm statistics and affine terms, so every leaf matters."""
  def perturb(path, x):
    if x.ndim == 0:
      return x
    key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(jax.tree_util.keystr(path).encode()))
    noise = scale * jax.random.normal(key, x.shape, x.dtype)
    return x + (jnp.abs(noise) if path[-1].key == 'var' else noise)
  return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.mark.parametrize('part', [None, 'params', 'batch_stats'])
def test_interpolate_matches_the_deeper_models_init(part):
  _, variables = init((2, 3), h=0.5)
  _, deeper = init((4, 6), h=0.25)
  tree, want = (variables, deeper) if part is None else (variables[part], deeper[part])
  chex.assert_trees_all_equal_shapes_and_dtypes(mlres.interpolate(tree), want)
  if part is None:
    assert float(mlres.interpolate(tree)['ode']['h']) == 0.25


@pytest.mark.parametrize('widths', [(4, 8), (4, 4)])  # equal widths: the stride alone changes shape
def test_copy_rule_leaf_by_leaf(widths):
  _, variables = init((2, 3), widths)
  variables = perturbed(variables)
  new = mlres.interpolate(variables)
  for coll in ('params', 'batch_stats'):
    old0, new0 = variables[coll]['stage0'], new[coll]['stage0']
    for k in range(2):  # stage 0 keeps its shape: block 2k and 2k+1 both copy block k
      chex.assert_trees_all_equal(new0[f'block{2 * k}'], old0[f'block{k}'])
      chex.assert_trees_all_equal(new0[f'block{2 * k + 1}'], old0[f'block{k}'])
    old1, new1 = variables[coll]['stage1'], new[coll]['stage1']
    copied = [0, 1, 1, 1, 2, 2]  # Appendix B: after the stride-2 block 0 comes a copy of block 1
    assert len(new1) == 6
    for i, k in enumerate(copied):
      chex.assert_trees_all_equal(new1[f'block{i}'], old1[f'block{k}'])
    for name in ('stem', 'norm', 'head'):
      if name in variables[coll]:
        chex.assert_trees_all_equal(new[coll][name], variables[coll][name])


def test_coarsen_undoes_interpolate_exactly():
  _, variables = init((2, 3), h=0.5)
  variables = perturbed(variables)
  chex.assert_trees_all_equal(mlres.coarsen(mlres.interpolate(variables)), variables)
  twice = mlres.interpolate(mlres.interpolate(variables))
  assert mlres.architecture(twice)['stage_sizes'] == (8, 12)
  chex.assert_trees_all_equal(mlres.coarsen(mlres.coarsen(twice)), variables)


@jax.jit
@chex.assert_max_traces(n=1)
def jitted_interpolate(tree):
  return mlres.interpolate(tree)


@jax.jit
@chex.assert_max_traces(n=1)
def jitted_coarsen(tree):
  return mlres.coarsen(tree)


def test_interpolate_and_coarsen_trace_once_under_jit():
  _, variables = init((2, 2))
  for fn in (jitted_interpolate, jitted_coarsen):
    first = fn(variables)
    shifted = {**variables, 'params': jax.tree.map(lambda x: x + 1, variables['params'])}
    second = fn(shifted)
    first = {**first, 'params': jax.tree.map(lambda x: x + 1, first['params'])}
    chex.assert_trees_all_close(first, second)


def test_interpolated_model_applies_and_stays_close_for_small_h():
  model, variables = init((2, 2), h=0.05)
  deeper = mlres.ResNet(stage_sizes=(4, 4), widths=(4, 8))
  new = mlres.interpolate(variables)
  before, after = model.apply(variables, X), deeper.apply(new, X)
  assert after.shape == before.shape
  assert 0 < float(jnp.abs(after - before).max()) < 0.1 * float(jnp.abs(before).max())


@pytest.mark.parametrize('tree, message', [
    ({'foo': 1}, 'stage0'),
    ([1, 2], 'list'),
    ({'stage0': {'block0': {'norm1': {}, 'norm2': {}}, 'extra': 1}}, 'block0, block1'),
    ({'params': {'stem': 1}}, 'stage0'),
])
def test_interpolating_something_else_raises_a_clear_error(tree, message):
  with pytest.raises(ValueError, match=message):
    mlres.interpolate(tree)


def test_a_single_shape_changing_block_cannot_be_interpolated():
  _, variables = init((2, 1))
  with pytest.raises(ValueError, match='cannot interpolate stage1'):
    mlres.interpolate(variables)
  _, ok = init((1, 2))  # a single block of stage 0 keeps its shape: fine
  assert mlres.architecture(mlres.interpolate(ok))['stage_sizes'] == (2, 4)


def stage_output(model, variables, x):
  _, state = model.apply(variables, x, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, Stage))
  return state['intermediates']['stage0']['__call__'][0]


def test_interpolation_is_a_second_order_refinement():
  """Two steps of h/2 with the same F instead of one of h: the stage changes by O(h^2)."""
  with jax.enable_x64(True):
    changes = []
    for h in (0.004, 0.002, 0.001):
      model, variables = init((3,), widths=(6,), h=h, dtype=jnp.float64)
      variables = jax.tree.map(lambda v: v.astype(jnp.float64), perturbed(variables))
      x = X.astype(jnp.float64)
      fine = mlres.ResNet(stage_sizes=(6,), widths=(6,), dtype=jnp.float64)
      diff = stage_output(fine, mlres.interpolate(variables), x) - stage_output(model, variables, x)
      changes.append(float(jnp.linalg.norm(diff)))
    ratios = np.array(changes[:-1]) / np.array(changes[1:])
    assert np.all(ratios > 3.5) and np.all(ratios < 4.5), ratios


def block_outputs(model, variables, x, stage=0):
  _, state = model.apply(variables, x, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, Block))
  inter = state['intermediates'][f'stage{stage}']
  n = len([k for k in inter if k.startswith('block')])
  outs = [inter[f'block{b}']['__call__'][0] for b in range(n)]
  residuals = [inter[f'block{b}']['residual'][0] for b in range(n)]
  return outs, residuals


@pytest.mark.parametrize('k', [1, 2, 3])
def test_dropping_a_block_changes_the_next_feature_by_its_residual(k):
  """Eq. (8): without block k the feature after it is Y_k, not Y_k + G(Y_k)."""
  model, variables = init((4, 2), h=0.7)
  variables = perturbed(variables)
  outs, residuals = block_outputs(model, variables, X)
  lesioned = mlres.drop_block(variables, 0, k)
  assert mlres.architecture(lesioned)['stage_sizes'] == (3, 2)
  short = mlres.ResNet(stage_sizes=(3, 2), widths=(4, 8))
  lesioned_outs, _ = block_outputs(short, lesioned, X)
  scale = float(jnp.abs(outs[k]).max())
  np.testing.assert_allclose(outs[k] - lesioned_outs[k - 1], residuals[k], rtol=0, atol=1e-6 * scale)


def test_the_lesion_effect_on_the_output_is_linear_in_h():
  with jax.enable_x64(True):
    effects = []
    for h in (0.004, 0.002, 0.001):
      model, variables = init((3, 2), h=h, dtype=jnp.float64)
      variables = jax.tree.map(lambda v: v.astype(jnp.float64), perturbed(variables))
      x = X.astype(jnp.float64)
      short = mlres.ResNet(stage_sizes=(2, 2), widths=(4, 8), dtype=jnp.float64)
      diff = short.apply(mlres.drop_block(variables, 0, 1), x) - model.apply(variables, x)
      effects.append(float(jnp.linalg.norm(diff)))
    ratios = np.array(effects[:-1]) / np.array(effects[1:])
    assert np.all(ratios > 1.7) and np.all(ratios < 2.3), ratios


@pytest.mark.parametrize('stage, index, message', [
    (1, 0, 'changes shape'), (0, 5, 'index=5'), (4, 0, 'stage=4'), (2, 0, 'stage=2')])
@pytest.mark.parametrize('widths', [(4, 8), (4, 4)])
def test_drop_block_errors(stage, index, message, widths):
  _, variables = init((3, 2), widths)
  with pytest.raises(ValueError, match=message):
    mlres.drop_block(variables, stage, index)


def test_drop_block_cannot_empty_a_stage():
  _, variables = init((1, 2))
  with pytest.raises(ValueError, match='single block'):
    mlres.drop_block(variables, 0, 0)
