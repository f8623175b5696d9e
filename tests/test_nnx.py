"""Flax NNX models grow like linen ones: the ResMLP of docs/growth.md ("Your own NNX model", whose code
blocks run here as they stand) in both layouts, its nnx.Optimizer, the kinds of variables a block may
hold, and one-line errors."""
import functools
import os
import re
import warnings
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mlres
from test_custom_growth import ResMLP as LinenResMLP

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'growth.md')
LAYOUTS = ['list', 'scan']
X = np.sin(np.arange(18.0)).reshape(3, 6)  # float32, or float64 where enabled


def doc_blocks():
  """The python code blocks of the section "Your own NNX model" of docs/growth.md."""
  text = open(DOCS).read()
  section = text[text.index('## Your own NNX model'):text.index('## The four growth operators')]
  return re.findall(r'```python\n(.*?)```', section, re.S)


*DEFINITIONS, RUN = doc_blocks()  # the last block runs the loop that the ones before define
DOC = {'__name__': 'growth_md'}
exec(compile('\n'.join(DEFINITIONS), DOCS, 'exec'), DOC)
ResMLP = DOC['ResMLP']
forward = nnx.jit(lambda m, x: m(x))  # compiled once per architecture and dtype


@pytest.fixture(scope='module')
def traces():
  """The depths for which the doc's train_step is traced: it looks loss_fn up at each trace."""
  seen, loss_fn = [], DOC['loss_fn']

  def counting(model, *args):
    seen.append(mlres.stack_sizes(model)['body'])
    return loss_fn(model, *args)
  DOC['loss_fn'] = counting
  yield seen
  DOC['loss_fn'] = loss_fn


def test_the_docs_loop_grows_1_2_4_blocks_compiling_once_per_cycle(traces):
  run = dict(DOC)
  exec(compile(RUN, DOCS, 'exec'), run)
  assert traces == [1, 2, 4]
  losses = np.array(run['losses'])
  print(f'\nthe doc\'s loop: loss {losses[0, 0]:.3f} at the start, {losses[:, -1]} at the end of each cycle')
  assert losses[-1, -1] < 0.5 * losses[0, 0]
  assert float(run['model'].h[...]) == 0.125  # halved twice by 'copy', never moved by Adam


def test_the_scanned_layout_trains_with_the_docs_loop(traces):
  traces.clear()
  x, y = X, jnp.arange(len(X)) % 3
  start = filled(lambda: ResMLP(1, scan=True, rngs=nnx.Rngs(0)))  # the doc's vmapped init, traced
  grown, losses = DOC['train'](start, x, y, steps=10)
  assert traces == [1, 2, 4]
  assert mlres.architecture(grown) == {'stacks': {'body': 4}, 'num_classes': 3, 'h': 0.125}
  print(f'\nscanned: loss {losses[0][0]:.3f} at the start, {losses[-1][-1]:.3f} at the end')
  assert losses[-1][-1] < 0.5 * losses[0][0]


def filled(make, h=0.5, dtype=jnp.float32):
  """make(), nnx.eval_shape's structure of it, with h and a distinct smooth pattern in every variable
  in place of a random init, whose compiles would cost these tests more than all else."""
  m = fill(nnx.eval_shape(make), dtype)
  m.h[...] = jnp.asarray(h, dtype)
  return m


def fill(node, dtype=jnp.float32):
  """The module or optimizer with every variable set to its pattern (floats in `dtype`)."""
  state = nnx.state(node)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
  is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
  kinds = tuple((jax.tree_util.keystr(path), x.shape, 'key' if is_key(x) else np.dtype(x.dtype).name)
                for path, x in leaves)
  nnx.replace_by_pure_dict(state, jax.tree.unflatten(treedef, patterns(kinds, np.dtype(dtype).name)))
  nnx.update(node, state)
  return node


@functools.partial(jax.jit, static_argnums=(0, 1))
def patterns(kinds, dtype):
  """A smooth pattern of each (path, shape, dtype) of `kinds`, floats in `dtype`: scales and variances
  around 1, other floats around 0, integers and PRNG keys distinct."""
  out = []
  for path, shape, kind in kinds:
    size, k = int(np.prod(shape)), zlib.crc32(path.encode()) % 97
    wave = lambda n: jnp.sin(jnp.arange(n) * 0.9 + k)
    if kind == 'key':
      data = (1e4 * (2 + wave(2 * size))).astype(jnp.uint32)
      out.append(jax.random.wrap_key_data(data.reshape(shape + (2,))))
    elif np.issubdtype(np.dtype(kind), np.integer):
      out.append((k + jnp.arange(size)).reshape(shape).astype(kind))
    else:
      out.append((path.endswith(("['scale']", "['var']")) + 0.3 * wave(size)).reshape(shape).astype(dtype))
  return out


def model(layout, dtype=jnp.float32):
  """The doc's NNX ResMLP with 3 blocks, h = 0.5."""
  return filled(lambda: ResMLP(3, num_classes=5, scan=layout == 'scan', rngs=nnx.Rngs(0)), dtype=dtype)


def pure(module, kind=...):
  """The module's variables of `kind` as a dict of arrays, PRNG keys as their data."""
  unkey = lambda v: jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v
  return jax.tree.map(unkey, nnx.to_pure_dict(nnx.state(module, kind)))


@pytest.mark.parametrize('layout', LAYOUTS)
def test_copy_is_a_second_order_refinement(layout):
  """Halving h with the blocks fixed divides the change of the output by about 4 (float64)."""
  changes = []
  with jax.enable_x64(True):
    m = model(layout, jnp.float64)
    for h in (0.004, 0.002, 0.001):
      m.h[...] = jnp.asarray(h, jnp.float64)
      before, after = forward(m, X), forward(mlres.interpolate(m, 'copy'), X)
      changes.append(float(jnp.linalg.norm(after - before) / jnp.linalg.norm(before)))
  ratios = np.array(changes[:-1]) / np.array(changes[1:])
  print(f'\n{layout}: relative changes {changes}, ratios {ratios}')
  assert np.all(ratios > 3.5) and np.all(ratios < 4.5), ratios


@pytest.mark.parametrize('layout', LAYOUTS)
def test_zero_keeps_the_logits_to_the_last_bit(layout):
  with jax.enable_x64(True):  # the order test's compiled forward passes
    m = model(layout, jnp.float64)
    grown = mlres.interpolate(m, 'zero')
    assert mlres.stack_sizes(grown) == {'body': 6} and float(grown.h[...]) == 0.5
    np.testing.assert_array_equal(forward(grown, X), forward(m, X))


class NoisyBlock(nnx.Module):
  """The state of a block with every kind of variable: params, batch statistics, an RNG stream (its
  key and count)."""

  def __init__(self, rngs):
    self.norm = nnx.BatchNorm(4, rngs=rngs)
    self.dense = nnx.Linear(4, 4, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)


class Noisy(nnx.Module):
  stacks = {'body': mlres.Stack(zero=('dense',))}

  def __init__(self, num_blocks=2, scan=False):
    rngs = nnx.Rngs(0, dropout=1)
    self.h = mlres.StepSize(jnp.asarray(0.5))
    self.rngs = rngs  # kept as it is by every map
    if scan:
      self.body = nnx.split_rngs(splits=num_blocks)(nnx.vmap(NoisyBlock))(rngs)
    else:
      self.body = nnx.List([NoisyBlock(rngs) for _ in range(num_blocks)])


def noisy(layout):
  """A two-block Noisy model whose every variable differs from block to block."""
  return filled(lambda: Noisy(scan=layout == 'scan'))


def shapes(module):
  return jax.tree.map(lambda v: (v.shape, v.dtype), nnx.to_pure_dict(nnx.state(module)))


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('layout', LAYOUTS)
def test_coarsen_restores_every_variable_and_the_input_is_untouched(layout, operator):
  m = noisy(layout)
  before = pure(m)
  grown = mlres.interpolate(m, operator)
  assert shapes(grown) == shapes(nnx.eval_shape(lambda: Noisy(4, scan=layout == 'scan')))
  chex.assert_trees_all_equal(pure(mlres.coarsen(grown, operator)), before)
  chex.assert_trees_all_equal(pure(m), before)
  assert mlres.stack_sizes(m) == {'body': 2} and grown is not m


def blocks(tree, layout, n):
  """Block k of a stack's subtree, for k < n, in either layout."""
  return [tree[k] if layout == 'list' else jax.tree.map(lambda v: v[k], tree) for k in range(n)]


@pytest.mark.parametrize('layout', LAYOUTS)
def test_each_kind_of_variable_grows_by_its_rule(layout):
  """'linear': params and batch statistics averaged between neighbours, RNG state copied from the
  first of them, the keys of a recurring block folded (no two blocks share a dropout stream)."""
  m = noisy(layout)
  grown = mlres.interpolate(m, 'linear')
  old, new = blocks(pure(m)['body'], layout, 2), blocks(pure(grown)['body'], layout, 4)
  for part in ('dense', 'norm'):  # the norm's scale and bias are params, its mean and var batch statistics
    mean = jax.tree.map(lambda u, v: (u + v) / 2, old[0][part], old[1][part])
    chex.assert_trees_all_equal([b[part] for b in new], [old[0][part], mean, old[1][part], old[1][part]])
  counts = [int(b['drop']['rngs']['count']) for b in new]
  assert counts == [int(old[k]['drop']['rngs']['count']) for k in (0, 0, 1, 1)]
  keys = [tuple(np.asarray(b['drop']['rngs']['key'])) for b in new]
  assert keys[0] == tuple(np.asarray(old[0]['drop']['rngs']['key'])) and len(set(keys)) == 4
  chex.assert_trees_all_equal(pure(grown)['rngs'], pure(m)['rngs'])
  assert float(grown.h[...]) == 0.25


def as_linen(tree, h, layout):
  """The NNX ResMLP's params (a pure dict) and h as the variables of the linen ResMLP."""
  body = tree['body']
  return {'params': {**tree, 'body': {'scan': body} if layout == 'scan' else
                     {f'block{k}': b for k, b in body.items()}}, 'ode': {'h': h}}


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('layout', LAYOUTS)
def test_an_nnx_and_a_linen_model_of_the_same_weights_grow_to_the_same_weights(layout, operator):
  with jax.enable_x64(True):
    m = model(layout, jnp.float64)
    linen = LinenResMLP(num_blocks=3, num_classes=5, scan=layout == 'scan')
    variables = as_linen(pure(m, nnx.Param), m.h[...], layout)
    if operator == 'copy':  # one network in the two APIs
      np.testing.assert_allclose(forward(m, X), linen.apply(variables, X), rtol=1e-12)
    grown = mlres.interpolate(m, operator)
    chex.assert_trees_all_equal(as_linen(pure(grown, nnx.Param), grown.h[...], layout),
                                mlres.interpolate(variables, operator, stacks=linen.stacks))


@pytest.mark.parametrize('operator', ['copy', 'zero'])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_the_optimizer_grows_with_the_model(layout, operator):
  m = model(layout)
  tx = optax.adam(1e-2)
  optimizer = fill(nnx.Optimizer(m, tx, wrt=nnx.Param))  # every moment, count and the step distinct
  grown, grown_optimizer = mlres.grow(m, optimizer, operator)
  fresh = nnx.Optimizer(grown, tx, wrt=nnx.Param)
  assert jax.tree.structure(nnx.state(grown_optimizer)) == jax.tree.structure(nnx.state(fresh))
  chex.assert_trees_all_equal_shapes_and_dtypes(nnx.state(grown_optimizer), nnx.state(fresh))
  old, new = nnx.as_pure(optimizer.opt_state)[0], nnx.as_pure(grown_optimizer.opt_state)[0]
  assert int(grown_optimizer.step[...]) == int(optimizer.step[...]) and int(new.count) == int(old.count)
  for moment in ('mu', 'nu'):  # grown as the weights would be; zero's new leaves start at zero
    chex.assert_trees_all_equal(nnx.to_pure_dict(getattr(new, moment)),
                                pure(mlres.interpolate(holding(m, getattr(old, moment)), operator), nnx.Param))
    if operator == 'zero':
      inserted = blocks(nnx.to_pure_dict(getattr(new, moment))['body'], layout, 6)[1::2]
      assert all(float(jnp.abs(x).max()) == 0 for b in inserted for x in jax.tree.leaves(b['dense2']))
      assert all(float(jnp.abs(b['dense1']['kernel']).max()) > 0 for b in inserted)
  assert 'h' not in new.mu and float(grown.h[...]) == (0.5 if operator == 'zero' else 0.25)


def holding(module, params):
  """A copy of `module` whose parameters are `params` (a state shaped like them)."""
  copy = nnx.clone(module)
  state = nnx.state(copy, nnx.Param)
  nnx.replace_by_pure_dict(state, nnx.to_pure_dict(params))
  nnx.update(copy, state)
  return copy


def test_the_maps_raise_no_deprecation_warning():
  """Flax deprecates nnx.State's methods (`to_pure_dict`, ...) for functions, the type itself for plain
  dicts; mlres used them five times in one interpolate. Every warning counts here, wherever raised."""
  m = model('list')
  optimizer = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)
    grown, _ = mlres.grow(m, optimizer, 'linear')
    mlres.coarsen(grown, 'linear')
    mlres.architecture(grown)


def test_any_map_of_the_model_carries_its_optimizer():
  m = model('list')
  optimizer = fill(nnx.Optimizer(m, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param))
  lesion = functools.partial(mlres.drop_block, stack='body', index=1, stacks=ResMLP.stacks)
  lesioned = lesion(m)
  new = mlres.grow_optimizer(optimizer, m, lesioned, lesion)
  trace = lambda opt: nnx.to_pure_dict(nnx.as_pure(opt.opt_state)[0].trace)
  assert mlres.stack_sizes(lesioned) == {'body': 2} and int(new.step[...]) == int(optimizer.step[...])
  old = trace(optimizer)['body']
  chex.assert_trees_all_equal(trace(new)['body'], {0: old[0], 1: old[2]})


class Stage(nnx.Module):
  """A stack and its own step size."""

  def __init__(self, h):
    self.h = mlres.StepSize(jnp.asarray(h))
    self.blocks = nnx.List([DOC['MlpBlock'](4, 4, rngs=nnx.Rngs(k)) for k in range(2)])


class TwoStacks(nnx.Module):
  stacks = {'left/blocks': mlres.Stack(), 'right': mlres.Stack()}

  def __init__(self):
    self.h = mlres.StepSize(jnp.asarray(0.25))
    self.left = Stage(0.5)
    self.right = nnx.List([DOC['MlpBlock'](4, 4, rngs=nnx.Rngs(k)) for k in range(3)])


def test_a_stack_may_own_its_step_size():
  m = filled(TwoStacks, h=0.25)
  m.left.h[...] = 0.5
  assert mlres.architecture(m) == {'stacks': {'left/blocks': 2, 'right': 3}, 'num_classes': None,
                                   'h': {'left/blocks': 0.5, 'right': 0.25}}
  grown = mlres.interpolate(m)
  assert mlres.architecture(grown)['h'] == {'left/blocks': 0.25, 'right': 0.125}
  lesioned = mlres.drop_block(grown, 'left/blocks', 3)
  assert mlres.stack_sizes(lesioned) == {'left/blocks': 3, 'right': 6} and len(lesioned.left.blocks) == 3


class StepInBlock(nnx.Module):
  stacks = {'body': mlres.Stack()}

  def __init__(self):
    self.body = nnx.List([nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Linear(2, 2, rngs=nnx.Rngs(1))])
    self.body[0].h = mlres.StepSize(jnp.asarray(0.5))


class Shared(nnx.Module):
  stacks = {'body': mlres.Stack()}

  def __init__(self):
    block = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    self.body = nnx.List([block, block])


@pytest.mark.parametrize('call, message', [
    (lambda: mlres.interpolate(nnx.Linear(2, 2, rngs=nnx.Rngs(0))), 'Linear declares no residual stacks'),
    (lambda: mlres.interpolate(model('list'), stacks={'trunk': mlres.Stack()}),
     "stacks= declares 'trunk', which the model does not have"),
    (lambda: mlres.interpolate(model('list'), 'zero', stacks={'body': mlres.Stack()}),
     "operator 'zero' needs the leaves that zero the residual branch of body"),
    (lambda: mlres.interpolate(StepInBlock()), 'stack body holds a StepSize in its blocks'),
    (lambda: mlres.interpolate(Shared()), 'stack body: body/0 and body/1 are one module'),
    (lambda: mlres.grow(model('list'), optax.adam(1e-3)), 'expected an nnx.Optimizer'),
    (lambda: mlres.coarsen(model('scan'), 'copy'), 'cannot coarsen body: it has 3 blocks'),
])
def test_bad_models_get_one_line_errors(call, message):
  with pytest.raises(ValueError, match=message) as error:
    call()
  assert '\n' not in str(error.value)
