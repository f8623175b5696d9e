"""The architecture of Table 5, dtypes, the step size, and errors for bad architectures."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlres
from mlres.model import Block, Stage, shortcut
from mlres.growth.stacks import ResidualStack

TABLE5 = {  # (stage sizes, widths): (10 classes, 100 classes)
    ((2, 2, 2), mlres.RESNET_WIDTHS): (172_506, 178_356),
    ((8, 8, 8), mlres.RESNET_WIDTHS): (755_802, 761_652),
    ((5, 5, 5), mlres.RESNET_WIDTHS): (464_154, 470_004),
    ((20, 20, 20), mlres.RESNET_WIDTHS): (1_922_394, 1_928_244),
    ((2, 2, 2), mlres.WIDE_RESNET_WIDTHS): (685_994, 697_604),
    ((8, 8, 8), mlres.WIDE_RESNET_WIDTHS): (3_013_802, 3_025_412),
    ((5, 5, 5), mlres.WIDE_RESNET_WIDTHS): (1_849_898, 1_861_508),
    ((20, 20, 20), mlres.WIDE_RESNET_WIDTHS): (7_669_418, 7_681_028),
}


def shapes(model, size=32, channels=3):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels))))


@pytest.mark.parametrize('arch', list(TABLE5), ids=lambda a: '-'.join(map(str, a[0])) + f'x{a[1][0]}')
@pytest.mark.parametrize('classes', [10, 100])
def test_parameter_counts_match_table5(arch, classes):
  stage_sizes, widths = arch
  variables = shapes(mlres.ResNet(stage_sizes=stage_sizes, widths=widths, num_classes=classes))
  assert mlres.count_params(variables['params']) == TABLE5[arch][classes == 100]


def test_count_does_not_depend_on_image_size():
  model = mlres.ResNet(stage_sizes=(5, 5, 5), num_classes=10)
  assert mlres.count_params(shapes(model, size=96)['params']) == 464_154


def test_collections_and_h_is_not_a_parameter():
  variables = shapes(mlres.ResNet(stage_sizes=(2, 2), widths=(4, 8), h=0.25))
  assert set(variables) == {'params', 'batch_stats', 'ode'}
  names = {str(k.key) for path, _ in jax.tree_util.tree_flatten_with_path(variables['params'])[0]
           for k in path}
  assert 'h' not in names and 'kernel' in names
  model = mlres.ResNet(stage_sizes=(2, 2), widths=(4, 8), h=0.25)
  real = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert float(real['ode']['h']) == 0.25
  assert mlres.architecture(real) == {'stage_sizes': (2, 2), 'widths': (4, 8), 'num_classes': 10,
                                      'h': 0.25}


def test_bfloat16_compute_keeps_float32_parameters_statistics_and_stream():
  model = mlres.ResNet(stage_sizes=(1, 2), widths=(4, 8), dtype=jnp.bfloat16)
  x = jnp.ones((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x)
  for leaf in jax.tree.leaves({k: variables[k] for k in ('params', 'batch_stats')}):
    assert leaf.dtype == jnp.float32
  logits, state = model.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                              capture_intermediates=lambda m, _: isinstance(m, Block))
  assert logits.dtype == jnp.float32
  for leaf in jax.tree.leaves(state['batch_stats']):
    assert leaf.dtype == jnp.float32
  block_outputs = jax.tree.leaves(state['intermediates'])
  assert block_outputs and all(y.dtype == jnp.float32 for y in block_outputs)  # the residual stream


# Per family: a model of a compute dtype, an input, and its first residual stack's name and module.
STREAMS = {
    'resnet': (lambda dtype: mlres.ResNet(stage_sizes=(2, 2), widths=(4, 8), dtype=dtype),
               jax.random.normal(jax.random.key(1), (2, 8, 8, 3)), 'stage0', Stage),
    'vit': (lambda dtype: mlres.ViT(num_blocks=2, width=8, num_heads=2, mlp_dim=16, patch_size=4, dtype=dtype),
            jax.random.normal(jax.random.key(1), (2, 8, 8, 3)), 'encoder', ResidualStack),
    'gpt': (lambda dtype: mlres.GPT(num_blocks=2, width=8, num_heads=2, mlp_dim=16, context=8, dtype=dtype),
            jax.random.randint(jax.random.key(1), (2, 8), 0, 256), 'decoder', ResidualStack)}


@pytest.mark.parametrize('family', list(STREAMS))
def test_a_bfloat16_model_keeps_an_update_of_relative_size_1e_3(family):
  """What a residual stack adds to its input, h small enough that it is about 1e-3 of it: kept under
  bfloat16 compute as float32 computes it (to the bfloat16 branch's accuracy). In a bfloat16 stream
  (8 bits of mantissa) the sum rounded it away. At h = 0 a stack's output is its input."""
  make, x, name, kind = STREAMS[family]
  variables = make(jnp.float32).init(jax.random.key(0), x)

  def stack_output(dtype, h):
    v = {**variables, 'ode': {'h': jnp.float32(h)}}
    _, state = make(dtype).apply(v, x, mutable=['intermediates'], capture_intermediates=lambda m, _: (
        isinstance(m, kind) and m.name == name))
    return state['intermediates'][name]['__call__'][0].astype(jnp.float32)
  y = stack_output(jnp.float32, 0.0)
  h = 1e-3 * float(jnp.linalg.norm(y) / jnp.linalg.norm(stack_output(jnp.float32, 1.0) - y))
  exact = stack_output(jnp.float32, h) - y
  kept = stack_output(jnp.bfloat16, h) - stack_output(jnp.bfloat16, 0.0)
  assert 0.3e-3 < float(jnp.linalg.norm(exact) / jnp.linalg.norm(y)) < 3e-3
  np.testing.assert_allclose(kept, exact, rtol=0.05, atol=0.05 * float(jnp.abs(exact).max()))


def test_architecture_of_table5_blocks():
  variables = shapes(mlres.ResNet(stage_sizes=(2, 2, 2)))
  p = variables['params']
  assert p['stem']['kernel'].shape == (3, 3, 3, 16) and 'bias' not in p['stem']
  assert p['stage1']['block0']['conv1']['kernel'].shape == (3, 3, 16, 32)
  assert p['stage1']['block1']['conv1']['kernel'].shape == (3, 3, 32, 32)
  assert set(p['stage0']['block0']) == {'norm1', 'conv1', 'norm2', 'conv2'}  # no projection
  assert set(p) == {'stem', 'stage0', 'stage1', 'stage2', 'norm', 'head'}
  assert p['head']['bias'].shape == (10,)


def stage_io(model, variables, x):
  """Inputs and outputs of every stage (the stem output is stage 0's input)."""
  _, state = model.apply(variables, x, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, Stage) or m.name == 'stem')
  inter = state['intermediates']
  outs = [inter[f'stage{s}']['__call__'][0] for s in range(len(model.stage_sizes))]
  return [inter['stem']['__call__'][0]] + outs[:-1], outs


def test_h_zero_is_the_identity_on_stages_that_keep_their_shape():
  model = mlres.ResNet(stage_sizes=(3, 2), widths=(4, 8))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x)
  zero = {**variables, 'ode': {'h': jnp.zeros(())}}
  ins, outs = stage_io(model, zero, x)
  np.testing.assert_array_equal(outs[0], ins[0])
  np.testing.assert_array_equal(outs[1], shortcut(ins[1], 2, 8))  # shortcut only, no residual
  ins, outs = stage_io(model, variables, x)  # the step size is honoured: h = 1 changes them
  assert float(jnp.abs(outs[0] - ins[0]).max()) > 1e-3


@pytest.mark.parametrize('kwargs, message', [
    (dict(stage_sizes=(2, 0, 2)), 'stage_sizes'),
    (dict(stage_sizes=(2, -1, 2)), 'stage_sizes'),
    (dict(stage_sizes=()), 'stage_sizes'),
    (dict(stage_sizes=(2, 2), widths=(16, 32, 64)), 'widths'),
    (dict(h=0.0), 'h=0.0'),
    (dict(h=-0.5), 'h=-0.5'),
    (dict(num_classes=0), 'num_classes'),
])
def test_bad_architectures_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    mlres.ResNet(**kwargs)


def test_block_is_an_euler_step():
  block = Block(width=4)
  y = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  variables = block.init(jax.random.key(1), y, 1.0, False)
  one, state = block.apply(variables, y, 1.0, False, mutable=['intermediates'])
  half = block.apply(variables, y, 0.5, False)
  g = state['intermediates']['residual'][0]
  chex.assert_trees_all_close(one, y + g, atol=1e-6)
  chex.assert_trees_all_close(half, y + 0.5 * g, atol=1e-6)
