"""The GPT: its variables, causality, growth by every operator in both layouts, and bad constructions."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlres
from mlres.transformer import Block
from test_operators import GROWN_H
from test_stacks import Family, assert_second_order, output_changes

TOKENS = jax.random.randint(jax.random.key(1), (2, 8), 0, 256)
TINY = dict(width=8, num_heads=2, mlp_dim=16, context=8)


def gpt(sizes, h, dtype, scan):
  return mlres.GPT(sizes[0], **TINY, h=h, dtype=dtype, scan_blocks=scan)


FAMILIES = {name: Family(gpt, TOKENS, (3,), 'decoder', Block, scan=scan)
            for name, scan in (('gpt', False), ('gpt-scan', True))}


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('scan', [False, True])
def test_variables_and_logits(scan, dtype):
  model = mlres.GPT(2, **TINY, h=0.25, dtype=dtype, scan_blocks=scan)
  variables = model.init(jax.random.key(0), TOKENS)
  assert set(variables) == {'params', 'ode'} and float(variables['ode']['h']) == 0.25
  assert set(variables['params']) == {'embed', 'pos_embed', 'decoder', 'norm', 'head'}
  assert set(variables['params']['decoder']) == ({'scan'} if scan else {'block0', 'block1'})
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  # The trainer's call: no batch statistics, so nothing comes back mutated.
  logits, mutated = model.apply(variables, TOKENS, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 8, 256) and logits.dtype == jnp.float32 and not mutated
  assert model.apply(variables, TOKENS[:, :5]).shape == (2, 5, 256)  # fewer tokens than the context


@pytest.mark.parametrize('name', list(FAMILIES))
def test_no_logit_sees_a_later_byte(name):
  model, variables = FAMILIES[name].init()
  t = 3
  changed = TOKENS.at[:, t].set((TOKENS[:, t] + 1) % 256)
  before, after = model.apply(variables, TOKENS), model.apply(variables, changed)
  np.testing.assert_array_equal(after[:, :t], before[:, :t])
  assert float(jnp.abs(after[:, t:] - before[:, t:]).min(axis=-1).max()) > 0
  assert float(jnp.abs(after[:, t] - before[:, t]).max()) > 1e-3


@pytest.mark.parametrize('name', list(FAMILIES))
def test_copy_is_a_second_order_refinement(name):
  assert_second_order(output_changes(FAMILIES[name], 'copy'))


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('name', list(FAMILIES))
def test_every_operator_grows_to_the_deeper_gpt_and_coarsens_back(name, operator):
  family = FAMILIES[name]
  model, variables = family.init(h=0.5)
  grown = mlres.interpolate(variables, operator, stacks=model.stacks)
  chex.assert_trees_all_equal_shapes_and_dtypes(grown, jax.eval_shape(family.deeper().init, jax.random.key(0),
                                                                      TOKENS))
  assert float(grown['ode']['h']) == GROWN_H[operator]
  chex.assert_trees_all_equal(mlres.coarsen(grown, operator, stacks=model.stacks), variables)
  if operator == 'zero':
    np.testing.assert_array_equal(family.deeper().apply(grown, TOKENS), model.apply(variables, TOKENS))


def test_the_two_layouts_give_the_same_function_of_the_same_weights():
  model, variables = FAMILIES['gpt'].init()
  scanned_model, scanned_init = FAMILIES['gpt-scan'].init()
  scanned = mlres.to_scanned(variables)
  chex.assert_trees_all_equal_shapes_and_dtypes(scanned, scanned_init)
  chex.assert_trees_all_equal(mlres.to_list(scanned), variables)
  chex.assert_trees_all_close(scanned_model.apply(scanned, TOKENS), model.apply(variables, TOKENS),
                              rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(width=10, num_heads=4), 'width=10 is not divisible by num_heads=4'),
    (dict(num_blocks=0), 'num_blocks=0'),
    (dict(context=0), 'context=0'),
    (dict(vocab_size=-1), 'vocab_size=-1'),
    (dict(mlp_dim=2.5), 'mlp_dim=2.5'),
    (dict(num_heads=True), 'num_heads=True'),
    (dict(h=-1.0), 'h=-1.0'),
    (dict(scan_blocks=1), 'scan_blocks=1'),
])
def test_bad_gpts_raise_one_line_errors_naming_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message) as error:
    mlres.GPT(**{'num_blocks': 2, **TINY, **kwargs})
  assert '\n' not in str(error.value)


def test_more_tokens_than_the_context_is_an_error():
  model = mlres.GPT(1, **TINY)
  with pytest.raises(ValueError, match='9 tokens do not fit the context of 8 positions') as error:
    model.init(jax.random.key(0), jnp.zeros((1, 9), jnp.int32))
  assert '\n' not in str(error.value)
