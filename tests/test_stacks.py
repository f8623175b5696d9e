"""Residual stacks of any model: the ViT in both layouts and a residual MLP defined in a test grow,
coarsen and lose blocks like the ResNet, optimizer states follow, and bad trees get one-line errors."""
import dataclasses
import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mlres
from mlres.model import Block
from mlres.vit import EncoderBlock
from test_custom_growth import MlpBlock, ResMLP
from test_interpolate import jitted_coarsen, jitted_interpolate, perturbed

IMAGES = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
VECTORS = jax.random.normal(jax.random.key(1), (3, 6))


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
  """A model family at a base depth; the tests follow the blocks of its last stack."""
  build: Callable  # (sizes, h, dtype, scan) -> model
  x: jax.Array
  sizes: tuple[int, ...]  # blocks per stack
  stack: str
  block: type
  scan: bool = False

  def model(self, sizes=None, h=1.0, dtype=jnp.float32, scan=None):
    return self.build(sizes or self.sizes, h, dtype, self.scan if scan is None else scan)

  def deeper(self, dtype=jnp.float32):
    return self.model(tuple(2 * n for n in self.sizes), dtype=dtype)

  def init(self, h=1.0, dtype=jnp.float32, scan=None):
    """The model and its variables, perturbed so that every leaf matters, in `dtype`."""
    scan = self.scan if scan is None else scan
    return self.model(h=h, dtype=dtype, scan=scan), _init(self, h, dtype, scan)


@functools.lru_cache(maxsize=None)
def _init(family, h, dtype, scan):
  if dtype != jnp.float32:  # parameters are float32 in any compute dtype: the same values, cast
    return to_dtype(_init(family, h, jnp.float32, scan), dtype)
  variables = family.model(h=h, scan=scan).init(jax.random.key(0), family.x)
  return perturbed(variables)


def vit(sizes, h, dtype, scan):
  return mlres.ViT(num_blocks=sizes[0], width=8, num_heads=2, mlp_dim=16, patch_size=4, num_classes=5,
                   h=h, dtype=dtype, scan_blocks=scan)


def mlp(sizes, h, dtype, scan):
  return ResMLP(num_blocks=sizes[0], num_classes=5, h=h, scan=scan)


def resnet(sizes, h, dtype, scan):
  assert not scan
  return mlres.ResNet(stage_sizes=sizes, widths=(4, 8)[-len(sizes):], num_classes=5, h=h, dtype=dtype)


FAMILIES = {
    'vit': Family(vit, IMAGES, (3,), 'encoder', EncoderBlock),
    'vit-scan': Family(vit, IMAGES, (3,), 'encoder', EncoderBlock, scan=True),
    'mlp': Family(mlp, VECTORS, (3,), 'body', MlpBlock),
    'mlp-scan': Family(mlp, VECTORS, (3,), 'body', MlpBlock, scan=True),
    'resnet': Family(resnet, IMAGES, (2, 3), 'stage1', Block),  # stage1 opens with a transition
    'resnet1': Family(resnet, IMAGES, (3,), 'stage0', Block),  # one stage: no transition
}
NEW = ['vit', 'vit-scan', 'mlp', 'mlp-scan']


def to_dtype(tree, dtype):
  return jax.tree.map(lambda v: v.astype(dtype), tree)


@pytest.mark.parametrize('name', NEW)
def test_interpolate_maps_n_to_2n_blocks_as_the_deeper_models_init(name):
  family = FAMILIES[name]
  model, variables = family.init(h=0.5)
  want = jax.eval_shape(family.deeper().init, jax.random.key(3), family.x)
  grown = mlres.interpolate(variables, stacks=model.stacks)
  chex.assert_trees_all_equal_shapes_and_dtypes(grown, want)
  assert mlres.stack_sizes(grown) == {family.stack: 6}
  assert float(grown['ode']['h']) == 0.25
  assert mlres.architecture(grown) == {'stacks': {family.stack: 6}, 'num_classes': 5, 'h': 0.25}


@pytest.mark.parametrize('name', NEW)
def test_coarsen_undoes_interpolate_exactly(name):
  model, variables = FAMILIES[name].init(h=0.5)
  chex.assert_trees_all_equal(mlres.coarsen(mlres.interpolate(variables)), variables)
  twice = mlres.interpolate(mlres.interpolate(variables))
  chex.assert_trees_all_equal(mlres.coarsen(mlres.coarsen(twice)), variables)


@pytest.fixture
def fresh_trace_counts():
  """Each family's shapes trace the shared jitted maps anew: count from zero, and leave zero."""
  chex.clear_trace_counter()
  yield
  chex.clear_trace_counter()


@pytest.mark.parametrize('name', NEW)
def test_the_maps_trace_once_under_jit(name, fresh_trace_counts):
  _, variables = FAMILIES[name].init()
  shift = lambda tree: {**tree, 'params': jax.tree.map(lambda x: x + 1, tree['params'])}
  for fn, tree in ((jitted_interpolate, variables), (jitted_coarsen, mlres.interpolate(variables))):
    first, second = fn(tree), fn(shift(tree))
    chex.assert_trees_all_close(shift(first), second)


@pytest.mark.parametrize('name', ['vit', 'mlp'])
def test_the_two_layouts_give_the_same_function_of_the_same_weights(name):
  family = FAMILIES[name]
  model, variables = family.init()
  scanned_model, scanned_init = family.init(scan=True)
  scanned = mlres.to_scanned(variables)
  chex.assert_trees_all_equal_shapes_and_dtypes(scanned, scanned_init)
  chex.assert_trees_all_equal(mlres.to_list(scanned), variables)
  chex.assert_trees_all_close(scanned_model.apply(scanned, family.x), model.apply(variables, family.x),
                              rtol=1e-5, atol=1e-6)
  for op in mlres.OPERATORS:  # and they grow the same way
    chex.assert_trees_all_equal(mlres.interpolate(scanned, op, stacks=model.stacks),
                                mlres.to_scanned(mlres.interpolate(variables, op, stacks=model.stacks)))
  chex.assert_trees_all_equal(mlres.drop_block(scanned, family.stack, 1),
                              mlres.to_scanned(mlres.drop_block(variables, family.stack, 1)))


@functools.lru_cache(maxsize=None)
def appliers(family, dtype):
  """The family's model and its deeper model, applied under jit (compiled once for all h)."""
  return jax.jit(family.model(dtype=dtype).apply), jax.jit(family.deeper(dtype).apply)


def output_changes(family, operator, hs=(0.004, 0.002, 0.001), prepare=lambda model, v: v):
  """For each h: the change of the output that growing by `operator` makes, relative to the output,
  in float64 (integer inputs, such as tokens, stay integers)."""
  changes = []
  with jax.enable_x64(True):
    x = family.x.astype(jnp.float64) if jnp.issubdtype(family.x.dtype, jnp.floating) else family.x
    model, variables = family.init(dtype=jnp.float64)
    apply, apply_deeper = appliers(family, jnp.float64)
    for h in hs:
      v = prepare(model, {**variables, 'ode': {'h': jnp.asarray(h, jnp.float64)}})
      before = apply(v, x)
      after = apply_deeper(mlres.interpolate(v, operator, stacks=model.stacks), x)
      changes.append(float(jnp.linalg.norm(after - before) / jnp.linalg.norm(before)))
  return changes


def assert_second_order(changes):
  """Halving h with the blocks fixed divides the change by about 4."""
  ratios = np.array(changes[:-1]) / np.array(changes[1:])
  assert np.all(ratios > 3.5) and np.all(ratios < 4.5), ratios


@pytest.mark.parametrize('name', ['vit', 'vit-scan', 'mlp'])
def test_interpolation_is_a_second_order_refinement(name):
  assert_second_order(output_changes(FAMILIES[name], 'copy'))


def block_io(family, model, variables):
  """The outputs Y_{k+1} and residuals G(Y_k) of the blocks of the family's stack."""
  _, state = model.apply(variables, family.x, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, family.block))
  node = mlres.to_list(state['intermediates'])[family.stack]
  blocks = [node[f'block{k}'] for k in range(len(node))]
  return [b['__call__'][0] for b in blocks], [b['residual'][0] for b in blocks]


@pytest.mark.parametrize('k', [1, 2])
@pytest.mark.parametrize('name', NEW)
def test_dropping_a_block_changes_the_next_feature_by_its_residual(name, k):
  """Eq. (8): without block k the feature after it is Y_k, not Y_k + G(Y_k)."""
  family = FAMILIES[name]
  model, variables = family.init(h=0.7)
  outs, residuals = block_io(family, model, variables)
  lesioned = mlres.drop_block(variables, family.stack, k, stacks=model.stacks)
  assert mlres.stack_sizes(lesioned) == {family.stack: 2}
  lesioned_outs, _ = block_io(family, family.model(sizes=(2,)), lesioned)
  scale = float(jnp.abs(outs[k]).max())
  np.testing.assert_allclose(outs[k] - lesioned_outs[k - 1], residuals[k], rtol=0, atol=1e-6 * scale)
  np.testing.assert_array_equal(lesioned_outs[:k], outs[:k])


MASK = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
OPTIMIZERS = {  # the optimizer, and its parts shaped like the params
    'sgd': (optax.sgd(0.1, momentum=0.9), lambda s: [s[0].trace]),
    'trainer': (optax.chain(optax.add_decayed_weights(5e-4, mask=MASK), optax.trace(0.9)),
                lambda s: [s[1].trace]),
    'adamw': (optax.adamw(1e-3, weight_decay=1e-4, mask=MASK), lambda s: [s[0].mu, s[0].nu]),
    'masked': (optax.masked(optax.trace(0.9), MASK), lambda s: [s.inner_state.trace]),  # MaskedNode leaves
}


def stepped_opt_state(tx, params, steps=2):
  """The state after `steps` updates with random gradients: every part of it is non-trivial."""
  state = tx.init(params)
  for seed in range(steps):
    grads = perturbed(jax.tree.map(jnp.zeros_like, params), seed=seed)
    _, state = tx.update(grads, state, params)
  return state


@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
@pytest.mark.parametrize('name', NEW + ['resnet'])
def test_the_optimizer_state_grows_with_the_weights(name, optimizer):
  model, variables = FAMILIES[name].init()
  tx, parts = OPTIMIZERS[optimizer]
  params = variables['params']
  state = stepped_opt_state(tx, params)
  grow = functools.partial(mlres.interpolate, stacks=model.stacks)
  grown = mlres.grow_opt_state(state, params, grow)
  fresh = tx.init(grow(params))
  assert jax.tree.structure(grown) == jax.tree.structure(fresh)
  chex.assert_trees_all_equal_shapes_and_dtypes(grown, fresh)
  for got, old in zip(parts(grown), parts(state)):
    chex.assert_trees_all_equal(got, grow(old))
  if optimizer == 'adamw':
    assert int(grown[0].count) == int(state[0].count) == 2


class TwoStacks(nn.Module):
  """A stack with its own step size (ode/left/h) and one on the shared ode/h."""
  @nn.compact
  def __call__(self, x, train=False):
    h = self.variable('ode', 'h', lambda: jnp.asarray(0.25, jnp.float32)).value
    block = functools.partial(MlpBlock, 4)
    y = mlres.ResidualStack(block, 2, h=0.5, name='left')(x)
    return mlres.ResidualStack(block, 3, scan=True, name='right')(y, h=h)


def test_each_stack_may_have_its_own_step_size():
  variables = TwoStacks().init(jax.random.key(0), VECTORS)
  assert mlres.architecture(variables) == {'stacks': {'left': 2, 'right': 3}, 'num_classes': None,
                                           'h': {'left': 0.5, 'right': 0.25}}
  grown = mlres.interpolate(variables)
  assert mlres.architecture(grown)['h'] == {'left': 0.25, 'right': 0.125}
  assert mlres.stack_sizes(grown) == {'left': 4, 'right': 6}


def test_a_stack_cannot_take_its_step_size_twice():
  stack = mlres.ResidualStack(functools.partial(MlpBlock, 4), 2, h=0.5)
  with pytest.raises(ValueError, match='exactly once'):
    stack.init(jax.random.key(0), VECTORS, h=0.5)


def test_a_resnets_declaration_is_its_names():
  model = mlres.ResNet(stage_sizes=(2, 3), widths=(4, 8))
  assert model.stacks == {'stage0': mlres.Stack(zero=('conv2/kernel',)),
                          'stage1': mlres.Stack(transition=True, zero=('conv2/kernel',))}
  _, variables = FAMILIES['resnet'].init()
  chex.assert_trees_all_equal(mlres.interpolate(variables, stacks=model.stacks), mlres.interpolate(variables))


LEAF = jnp.zeros((3, 2))


@pytest.mark.parametrize('tree, call, message', [
    ({'params': {'dense': {'kernel': LEAF}}}, mlres.interpolate, 'found none among the keys'),
    ({'encoder': {'scan': {'a': LEAF, 'b': jnp.zeros((4, 2))}}}, mlres.interpolate,
     'scanned stack encoder: its leaves disagree on the layer count'),
    ({'encoder': {'scan': {'a': LEAF, 'b': jnp.zeros(())}}}, mlres.coarsen, 'none \\(a scalar\\)'),
    ({'encoder': {'scan': {'a': LEAF}, 'other': LEAF}}, mlres.interpolate, "under 'scan' and nothing else"),
    ({'body': {'block0': {'a': LEAF}, 'block1': {'a': LEAF[:1]}}}, mlres.interpolate,
     'the blocks of body do not share one shape'),
    ({'body': {'block0': {'a': LEAF}}}, functools.partial(mlres.interpolate, operator='zero'),
     "operator 'zero' needs the leaves that zero the residual branch of body"),
    ({'body': {'block0': {'a': LEAF}}}, functools.partial(mlres.interpolate, stacks={'stem': mlres.Stack()}),
     "stacks= declares \\['stem'\\], which the tree does not have"),
    ({'params': {'body': {'block0': {'a': LEAF}}}},
     functools.partial(mlres.interpolate, operator='zero', stacks={'body': mlres.Stack(zero=('dense2',))}),
     "Stack\\(zero=...\\) of body names \\['dense2'\\]"),
    ({'body': {'scan': {'a': LEAF}}}, functools.partial(
        mlres.interpolate, stacks={'body': mlres.Stack(transition=True)}), 'cannot open with a transition'),
    ({'body': {'block0': {'a': LEAF}}}, functools.partial(mlres.interpolate, operator='cubic'),
     "operator='cubic': expected one of 'copy', 'linear', 'stack', 'zero'"),
    ({'body': {'block0': {'a': LEAF}}}, functools.partial(mlres.drop_block, stack='head', index=0),
     "drop_block: stack='head' is not one of the tree's stacks \\['body'\\]"),
])
def test_bad_trees_get_one_line_errors_naming_the_stack(tree, call, message):
  with pytest.raises(ValueError, match=message) as error:
    call(tree)
  assert '\n' not in str(error.value)


def test_a_declaration_is_checked():
  with pytest.raises(ValueError, match="Stack\\(zero='conv2'\\)"):
    mlres.Stack(zero='conv2')
