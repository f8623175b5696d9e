"""Flax NNX models grow like linen ones: the ResMLP of docs/growth.md ("Your own NNX model", whose code
blocks run here as they stand) in both layouts, its nnx.Optimizer, the kinds of variables a block may
hold, and one-line errors."""
import functools
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mlres
from test_custom_growth import ResMLP as LinenResMLP
from test_interpolate import perturbed

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'growth.md')
X = jax.random.normal(jax.random.key(1), (5, 6))
LAYOUTS = ['list', 'scan']


def doc_blocks():
  """The python code blocks of the section "Your own NNX model" of docs/growth.md."""
  text = open(DOCS).read()
  section = text[text.index('## Your own NNX model'):text.index('## The four growth operators')]
  return re.findall(r'```python\n(.*?)```', section, re.S)


def run_doc():
  """The namespace of the section's code, its last block (the training run) run with the step's
  traces counted: loss_fn is looked up at each trace of train_step."""
  *definitions, run = doc_blocks()
  ns = {'__name__': 'growth_md'}
  exec(compile('\n'.join(definitions), DOCS, 'exec'), ns)
  ns['traces'], loss_fn = [], ns['loss_fn']

  def counting(model, *args):
    ns['traces'].append(mlres.stack_sizes(model)['body'])
    return loss_fn(model, *args)
  ns['loss_fn'] = counting
  exec(compile(run, DOCS, 'exec'), ns)
  return ns


DOC = run_doc()
ResMLP = DOC['ResMLP']


def model(layout, num_blocks=3, h=0.5, dtype=jnp.float32):
  """The doc's ResMLP with every parameter perturbed (so every leaf matters), in `dtype`."""
  m = ResMLP(num_blocks, h=h, num_classes=5, scan=layout == 'scan', rngs=nnx.Rngs(0))
  state = nnx.state(m, nnx.Param)
  nnx.replace_by_pure_dict(state, perturbed(state.to_pure_dict()))
  nnx.update(m, state)
  nnx.update(m, jax.tree.map(lambda v: v.astype(dtype), nnx.state(m)))
  return m


def pure(module, kind=...):
  """The module's variables of `kind` as a dict of arrays, PRNG keys as their data."""
  unkey = lambda v: jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v
  return jax.tree.map(unkey, nnx.state(module, kind).to_pure_dict())


def test_the_docs_loop_grows_1_2_4_blocks_compiling_once_per_cycle():
  assert DOC['traces'] == [1, 2, 4]
  losses = np.array(DOC['losses'])
  assert losses[-1, -1] < 0.5 * losses[0, 0], losses[:, [0, -1]]
  assert float(DOC['model'].h[...]) == 0.125  # halved twice by 'copy', never moved by Adam


def test_the_scanned_layout_trains_with_the_docs_loop():
  DOC['traces'].clear()
  grown, losses = DOC['train'](ResMLP(1, h=0.5, scan=True, rngs=nnx.Rngs(0)), DOC['x'], DOC['y'], steps=15)
  assert DOC['traces'] == [1, 2, 4]
  assert mlres.architecture(grown) == {'stacks': {'body': 4}, 'num_classes': 3, 'h': 0.125}
  assert losses[-1][-1] < 0.5 * losses[0][0], losses


@pytest.mark.parametrize('layout', LAYOUTS)
def test_copy_is_a_second_order_refinement(layout):
  """Halving h with the blocks fixed divides the change of the output by about 4 (float64)."""
  changes = []
  with jax.enable_x64(True):
    m = model(layout, dtype=jnp.float64)
    x = X.astype(jnp.float64)
    for h in (0.004, 0.002, 0.001):
      m.h[...] = jnp.asarray(h, jnp.float64)
      before, after = m(x), mlres.interpolate(m, 'copy')(x)
      changes.append(float(jnp.linalg.norm(after - before) / jnp.linalg.norm(before)))
  ratios = np.array(changes[:-1]) / np.array(changes[1:])
  print(f'\n{layout}: relative changes {changes}, ratios {ratios}')
  assert np.all(ratios > 3.5) and np.all(ratios < 4.5), ratios


@pytest.mark.parametrize('layout', LAYOUTS)
def test_zero_keeps_the_logits_to_the_last_bit(layout):
  m = model(layout)
  grown = mlres.interpolate(m, 'zero')
  assert mlres.stack_sizes(grown) == {'body': 6} and float(grown.h[...]) == 0.5
  np.testing.assert_array_equal(grown(X), m(X))


class NoisyBlock(nnx.Module):
  """A block with every kind of variable: params, batch statistics, an RNG stream (key and count)."""

  def __init__(self, rngs):
    self.norm = nnx.BatchNorm(4, rngs=rngs)
    self.dense = nnx.Linear(4, 4, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, y, h):
    return y + h * self.drop(self.dense(self.norm(y)))


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


@functools.lru_cache(maxsize=None)
def noisy(layout, num_blocks=2):
  """A Noisy model whose batch statistics and RNG counts differ between blocks."""
  m = Noisy(num_blocks, scan=layout == 'scan')
  stats = nnx.state(m, nnx.BatchStat)
  nnx.replace_by_pure_dict(stats, perturbed(stats.to_pure_dict()))
  counts = nnx.state(m, nnx.RngCount)
  nnx.replace_by_pure_dict(counts, jax.tree.map(lambda c: c + jnp.arange(c.size, dtype=c.dtype).reshape(c.shape),
                                                counts.to_pure_dict()))
  nnx.update(m, stats, counts)
  return m


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('layout', LAYOUTS)
def test_coarsen_restores_every_variable_and_the_input_is_untouched(layout, operator):
  m = noisy(layout)
  before = pure(m)
  grown = mlres.interpolate(m, operator)
  chex.assert_trees_all_equal_shapes_and_dtypes(pure(grown), pure(Noisy(4, scan=layout == 'scan')))
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


def linen_and_nnx(layout):
  """A linen ResMLP and the doc's NNX ResMLP holding the same weights."""
  scan = layout == 'scan'
  linen = LinenResMLP(num_blocks=3, num_classes=5, h=0.5, scan=scan)
  variables = perturbed(linen.init(jax.random.key(0), X))
  body = variables['params']['body']
  m = ResMLP(3, h=0.5, num_classes=5, scan=scan, rngs=nnx.Rngs(0))
  state = nnx.state(m, nnx.Param)
  nnx.replace_by_pure_dict(state, {**variables['params'], 'body': body['scan'] if scan else
                                   {k: body[f'block{k}'] for k in range(3)}})
  nnx.update(m, state)
  return linen, variables, m


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('layout', LAYOUTS)
def test_an_nnx_and_a_linen_model_of_the_same_weights_grow_to_the_same_weights(layout, operator):
  linen, variables, m = linen_and_nnx(layout)
  if operator == 'copy':  # the same network
    chex.assert_trees_all_close(m(X), linen.apply(variables, X), rtol=1e-6, atol=1e-6)
  grown, want = pure(mlres.interpolate(m, operator), nnx.Param), mlres.interpolate(variables, operator,
                                                                                   stacks=linen.stacks)
  body = want['params']['body']
  chex.assert_trees_all_equal(grown, {**want['params'], 'body': body['scan'] if layout == 'scan' else
                                      {k: body[f'block{k}'] for k in range(6)}})
  assert float(mlres.interpolate(m, operator).h[...]) == float(want['ode']['h'])


def stepped_optimizer(m, tx, steps=2):
  """An nnx.Optimizer of m after `steps` updates with random gradients."""
  optimizer = nnx.Optimizer(m, tx, wrt=nnx.Param)
  for seed in range(steps):
    grads = nnx.state(m, nnx.Param)
    nnx.replace_by_pure_dict(grads, perturbed(jax.tree.map(jnp.zeros_like, grads.to_pure_dict()), seed=seed))
    optimizer.update(m, grads)
  return optimizer


@pytest.mark.parametrize('operator', ['copy', 'zero'])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_the_optimizer_grows_with_the_model(layout, operator):
  m = model(layout)
  tx = optax.adam(1e-2)
  optimizer = stepped_optimizer(m, tx)
  grown, grown_optimizer = mlres.grow(m, optimizer, operator)
  fresh = nnx.Optimizer(grown, tx, wrt=nnx.Param)
  assert jax.tree.structure(nnx.state(grown_optimizer)) == jax.tree.structure(nnx.state(fresh))
  chex.assert_trees_all_equal_shapes_and_dtypes(nnx.state(grown_optimizer), nnx.state(fresh))
  old, new = nnx.as_pure(optimizer.opt_state)[0], nnx.as_pure(grown_optimizer.opt_state)[0]
  assert int(grown_optimizer.step[...]) == int(new.count) == 2
  for moment in ('mu', 'nu'):  # the copied blocks' moments; zero's new leaves start at zero
    chex.assert_trees_all_equal(getattr(new, moment).to_pure_dict(),
                                mlres.interpolate(getattr(old, moment), operator, stacks=ResMLP.stacks)
                                .to_pure_dict())
    if operator == 'zero':
      inserted = blocks(getattr(new, moment).to_pure_dict()['body'], layout, 6)[1::2]
      assert all(float(jnp.abs(x).max()) == 0 for b in inserted for x in jax.tree.leaves(b['dense2']))
      assert all(float(jnp.abs(b['dense1']['kernel']).max()) > 0 for b in inserted)
  assert 'h' not in new.mu and float(grown.h[...]) == (0.5 if operator == 'zero' else 0.25)


class Stage(nnx.Module):
  """A stack holding its own step size."""

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
  m = TwoStacks()
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
    (lambda: mlres.interpolate(Shared()), 'stack body shares a module or variable with body/0, body/1'),
    (lambda: mlres.grow(model('list'), optax.adam(1e-3)), 'expected an nnx.Optimizer'),
    (lambda: mlres.coarsen(model('scan'), 'copy'), 'cannot coarsen body: it has 3 blocks'),
])
def test_bad_models_get_one_line_errors(call, message):
  with pytest.raises(ValueError, match=message) as error:
    call()
  assert '\n' not in str(error.value)
