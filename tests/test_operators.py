"""The four growth operators on every model family and both stack layouts: their rules, inverses,
h rules, orders of accuracy, and the exact function preservation of 'zero'."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mlres
from mlres.growth import stacks as stacks_lib
from test_interpolate import perturbed
from test_stacks import FAMILIES, MASK, assert_second_order, output_changes, stepped_opt_state

GROWN_H = {'copy': 0.25, 'linear': 0.25, 'stack': 0.25, 'zero': 0.5}  # from h = 0.5


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('name', ['resnet', 'vit', 'vit-scan', 'mlp-scan'])
def test_every_operator_grows_to_the_deeper_models_structure(name, operator):
  family = FAMILIES[name]
  model, variables = family.init(h=0.5)
  grown = mlres.interpolate(variables, operator, stacks=model.stacks)
  chex.assert_trees_all_equal_shapes_and_dtypes(
      grown, jax.eval_shape(family.deeper().init, jax.random.key(0), family.x))
  assert float(grown['ode']['h']) == GROWN_H[operator]
  chex.assert_trees_all_equal(mlres.coarsen(grown, operator, stacks=model.stacks), variables)


def test_copy_is_the_default():
  model, variables = FAMILIES['resnet'].init()
  chex.assert_trees_all_equal(mlres.interpolate(variables, 'copy'), mlres.interpolate(variables))
  chex.assert_trees_all_equal(mlres.coarsen(mlres.interpolate(variables), 'copy'), variables)


# Per stack, the old blocks each new block is the mean of (a copy where both are one block).
RULES = {
    ('linear', 'resnet'): {'stage0': [(0, 0), (0, 1), (1, 1), (1, 1)],
                           'stage1': [(0, 0), (1, 1), (1, 1), (1, 2), (2, 2), (2, 2)]},  # transition
    ('linear', 'vit-scan'): {'encoder': [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 2)]},
    ('stack', 'resnet'): {'stage0': [(0, 0), (1, 1), (0, 0), (1, 1)],
                          'stage1': [(0, 0), (1, 1), (2, 2), (1, 1), (1, 1), (2, 2)]},
    ('stack', 'vit-scan'): {'encoder': [(0, 0), (1, 1), (2, 2), (0, 0), (1, 1), (2, 2)]},
    ('stack', 'mlp'): {'body': [(0, 0), (1, 1), (2, 2), (0, 0), (1, 1), (2, 2)]},
}


@pytest.mark.parametrize('operator, name', list(RULES))
def test_the_rule_of_each_operator_leaf_by_leaf(operator, name):
  model, variables = FAMILIES[name].init()
  old, new = mlres.to_list(variables), mlres.to_list(mlres.interpolate(variables, operator, stacks=model.stacks))
  for coll in set(old) - {'ode'}:
    for stack, pairs in RULES[operator, name].items():
      before, after = old[coll][stack], new[coll][stack]
      assert len(after) == len(pairs)
      for k, (i, j) in enumerate(pairs):
        want = before[f'block{i}'] if i == j else jax.tree.map(lambda a, b: (a + b) / 2, before[f'block{i}'],
                                                                before[f'block{j}'])
        chex.assert_trees_all_equal(after[f'block{k}'], want)


def smooth(family, model, variables):
  """Blocks whose weights vary linearly with their time t = k h: block k holds W + k h D (from
  block 1 on after a transition), so that neighbours differ by O(h)."""
  h = variables['ode']['h']
  tree = mlres.to_list(variables)
  for coll in set(tree) - {'ode'}:
    for name, f in stacks_lib.find(tree[coll]).items():
      start = int(model.stacks[name].transition)
      blocks = stacks_lib.get(tree[coll], f.path)
      ref = blocks[f'block{start}']
      slope = jax.tree.map(jnp.subtract, perturbed(ref, seed=11), ref)
      ramp = {f'block{k}': jax.tree.map(lambda w, d, t=(k - start) * h: w + t * d, ref, slope)
              for k in range(start, f.size)}
      tree[coll] = stacks_lib.replace(tree[coll], f.path, {**blocks, **ramp})
  return mlres.to_scanned(tree) if family.scan else tree


@pytest.mark.parametrize('name', ['resnet1', 'vit', 'vit-scan'])
def test_linear_is_second_order_for_weights_smooth_in_time(name):
  family = FAMILIES[name]
  assert_second_order(output_changes(family, 'linear', prepare=functools.partial(smooth, family)))


def test_linear_is_first_order_for_unrelated_neighbours():
  """The mean of two unrelated blocks is not the weight halfway in time: the change is O(h)."""
  changes = output_changes(FAMILIES['mlp'], 'linear')
  ratios = np.array(changes[:-1]) / np.array(changes[1:])
  assert np.all(ratios > 1.7) and np.all(ratios < 2.3), ratios


@pytest.mark.parametrize('name', ['resnet1', 'vit', 'vit-scan'])
def test_stack_keeps_the_first_order_of_the_output(name):
  """h halves with the copy of the stack: h (F_0 + ... + F_{n-1}) is kept, the change is O(h^2)."""
  family = FAMILIES[name]
  assert_second_order(output_changes(family, 'stack'))
  # The figure for docs/growth.md: the relative change of the output at a practical step size.
  figures = {op: output_changes(family, op, hs=(0.1,))[0] for op in ('copy', 'linear', 'stack')}
  print(f'\n{name}: relative change of the output when grown at h = 0.1: '
        + ', '.join(f'{op} {change:.2e}' for op, change in figures.items()))
  assert all(change > 0 for change in figures.values())


def zeroed_subtrees(model, tree):
  """The declared zero leaves of every inserted block (odd positions) of a params-shaped tree."""
  tree = mlres.to_list(tree)
  found = []
  for name, decl in model.stacks.items():
    blocks = stacks_lib.get(tree, tuple(name.split('/')))
    for k in range(1, len(blocks), 2):
      for path in decl.zero:
        found += jax.tree.leaves(stacks_lib.get(blocks[f'block{k}'], tuple(path.split('/'))))
  assert found
  return found


def sgd_step(model, variables, x):
  """Parameters after one plain SGD step on a tiny batch."""
  labels = jnp.arange(len(x)) % 5

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  tx = optax.sgd(0.1)
  updates, _ = tx.update(jax.grad(loss)(variables['params']), tx.init(variables['params']))
  return optax.apply_updates(variables['params'], updates)


@pytest.mark.parametrize('name', ['resnet', 'vit', 'vit-scan', 'mlp-scan'])
def test_zero_keeps_the_function_to_the_last_bit_and_its_new_blocks_learn(name):
  family = FAMILIES[name]
  model, variables = family.init(h=0.5)
  grown = mlres.interpolate(variables, 'zero', stacks=model.stacks)
  deeper = family.deeper()
  np.testing.assert_array_equal(deeper.apply(grown, family.x), model.apply(variables, family.x))
  assert all(float(jnp.abs(x).max()) == 0 for x in zeroed_subtrees(model, grown['params']))
  stepped = sgd_step(deeper, grown, family.x)
  assert all(float(jnp.abs(x).max()) > 0 for x in zeroed_subtrees(model, stepped))


@pytest.mark.parametrize('name', ['resnet', 'vit-scan'])
def test_zeroed_leaves_start_with_zero_moments(name):
  """A copied momentum would move a zeroed branch at once; the moments there start at zero."""
  model, variables = FAMILIES[name].init()
  tx = optax.adamw(1e-3, weight_decay=1e-4, mask=MASK)
  params = variables['params']
  state = stepped_opt_state(tx, params)
  zero = functools.partial(mlres.interpolate, operator='zero', stacks=model.stacks)
  grown = mlres.grow_opt_state(state, params, zero)
  assert jax.tree.structure(grown) == jax.tree.structure(tx.init(zero(params)))
  assert int(grown[0].count) == int(state[0].count)
  for new, old in ((grown[0].mu, state[0].mu), (grown[0].nu, state[0].nu)):
    assert all(float(jnp.abs(x).max()) == 0 for x in zeroed_subtrees(model, new))
    chex.assert_trees_all_equal(mlres.coarsen(new, 'zero', stacks=model.stacks), old)
    chex.assert_trees_all_equal(new, zero(old))


@pytest.mark.parametrize('operator', mlres.OPERATORS)
def test_no_operator_can_grow_a_lone_transition(operator):
  model, variables = FAMILIES['resnet'].init()
  lone = mlres.drop_block(mlres.drop_block(variables, 1, 2), 1, 1)
  with pytest.raises(ValueError, match='cannot interpolate stage1: its only block changes shape'):
    mlres.interpolate(lone, operator)


@pytest.mark.parametrize('operator', mlres.OPERATORS)
def test_an_odd_stack_cannot_be_coarsened(operator):
  model, variables = FAMILIES['vit-scan'].init()
  with pytest.raises(ValueError, match='cannot coarsen encoder: it has 3 blocks, an odd number'):
    mlres.coarsen(variables, operator, stacks=model.stacks)
