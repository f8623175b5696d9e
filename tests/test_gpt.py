"""The GPT: its variables, causality, growth by every operator in both layouts, and bad constructions.

Its families are test_stacks' Family, so the growth helpers there apply; models are applied through
the cached jitted `appliers`, one compilation per layout and dtype."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlres
from mlres.transformer import Block
from test_stacks import Family, appliers, assert_second_order, output_changes

TOKENS = jax.random.randint(jax.random.key(1), (2, 8), 0, 256)
TINY = dict(width=8, num_heads=2, mlp_dim=16, context=8)


def gpt(sizes, h, dtype, scan):
  return mlres.GPT(sizes[0], **TINY, h=h, dtype=dtype, scan_blocks=scan)


FAMILIES = {name: Family(gpt, TOKENS, (3,), 'decoder', Block, scan=scan)
            for name, scan in (('gpt', False), ('gpt-scan', True))}


@pytest.mark.parametrize('name', list(FAMILIES))
def test_variables_and_logits(name):
  family = FAMILIES[name]
  model, variables = family.init()
  assert set(variables) == {'params', 'ode'} and float(variables['ode']['h']) == 1.0
  assert set(variables['params']) == {'embed', 'pos_embed', 'decoder', 'norm', 'head'}
  assert set(variables['params']['decoder']) == ({'scan'} if family.scan else {'block0', 'block1', 'block2'})
  assert variables['params']['pos_embed'].shape == (8, 8)
  for dtype in (jnp.float32, jnp.bfloat16):
    logits = appliers(family, dtype)[0](variables, TOKENS)
    assert logits.shape == (2, 8, 256) and logits.dtype == jnp.float32
    abstract = jax.eval_shape(family.model(dtype=dtype).init, jax.random.key(0), TOKENS)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(abstract))


def test_the_residual_stream_is_float32_under_bfloat16():
  model = gpt((2,), 1.0, jnp.bfloat16, False)
  variables = model.init(jax.random.key(0), TOKENS)
  _, state = model.apply(variables, TOKENS, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, Block))
  outputs = jax.tree.leaves(state['intermediates'])
  assert outputs and all(y.dtype == jnp.float32 for y in outputs)


def test_the_trainers_call_with_fewer_tokens_than_the_context():
  model, variables = FAMILIES['gpt'].init()
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
  logits, mutated = apply(variables, TOKENS[:, :5])
  assert logits.shape == (2, 5, 256) and not mutated  # no batch statistics


@pytest.mark.parametrize('name', list(FAMILIES))
def test_no_logit_sees_a_later_byte(name):
  family = FAMILIES[name]
  _, variables = family.init()
  apply, t = appliers(family, jnp.float32)[0], 3
  before = apply(variables, TOKENS)
  after = apply(variables, TOKENS.at[:, t].set((TOKENS[:, t] + 1) % 256))
  np.testing.assert_array_equal(after[:, :t], before[:, :t])
  assert float(jnp.abs(after[:, t] - before[:, t]).max()) > 1e-3


@pytest.mark.parametrize('name', list(FAMILIES))
def test_copy_is_a_second_order_refinement(name):
  assert_second_order(output_changes(FAMILIES[name], 'copy'))


@pytest.mark.parametrize('operator', mlres.OPERATORS)
@pytest.mark.parametrize('name', list(FAMILIES))
def test_every_operator_grows_to_the_deeper_gpt_and_coarsens_back(name, operator):
  family = FAMILIES[name]
  model, variables = family.init()
  grown = mlres.interpolate(variables, operator, stacks=model.stacks)
  deeper = jax.eval_shape(family.deeper().init, jax.random.key(0), TOKENS)
  chex.assert_trees_all_equal_shapes_and_dtypes(grown, deeper)
  assert float(grown['ode']['h']) == (1.0 if operator == 'zero' else 0.5)
  chex.assert_trees_all_equal(mlres.coarsen(grown, operator, stacks=model.stacks), variables)


@pytest.mark.parametrize('name', list(FAMILIES))
def test_zero_keeps_the_logits_to_the_last_bit(name):
  family = FAMILIES[name]
  model, variables = family.init()
  apply, apply_deeper = appliers(family, jnp.float32)
  grown = mlres.interpolate(variables, 'zero', stacks=model.stacks)
  np.testing.assert_array_equal(apply_deeper(grown, TOKENS), apply(variables, TOKENS))


def test_the_two_layouts_give_the_same_function_of_the_same_weights():
  listed, scanned = FAMILIES['gpt'], FAMILIES['gpt-scan']
  variables = listed.init()[1]
  chex.assert_trees_all_equal_shapes_and_dtypes(mlres.to_scanned(variables), scanned.init()[1])
  chex.assert_trees_all_equal(mlres.to_list(mlres.to_scanned(variables)), variables)
  chex.assert_trees_all_close(appliers(scanned, jnp.float32)[0](mlres.to_scanned(variables), TOKENS),
                              appliers(listed, jnp.float32)[0](variables, TOKENS), rtol=1e-5, atol=1e-5)


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
  with pytest.raises(ValueError, match='9 tokens do not fit the 8 positions of context=8') as error:
    mlres.GPT(1, **TINY).init(jax.random.key(0), jnp.zeros((1, 9), jnp.int32))
  assert '\n' not in str(error.value)


def test_flops_per_token_against_a_hand_count():
  """GPT of 2 blocks, width 8, MLP 16, context 8, 256 bytes. Per block: attention 4 x 8 x 8 = 256
  and MLP 2 x 8 x 16 = 256 multiplying weights; the head 8 x 256 = 2,048. N = 2 x 512 + 2,048 =
  3,072; 6 N = 18,432, and attention 12 x 2 blocks x 8 x 8 = 1,536: 19,968 FLOPs per token."""
  assert mlres.gpt.flops_per_token(2, width=8, mlp_dim=16, context=8) == 19_968
  params = jax.eval_shape(mlres.GPT(2, **TINY).init, jax.random.key(0), TOKENS)['params']
  kernels = [x.size for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if path[-1].key == 'kernel']
  assert sum(kernels) == 3_072  # N is the kernels: no embedding lookup, bias or norm
