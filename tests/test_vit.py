"""The ViT: its variables, dtypes, the step size in every residual branch, and bad constructions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlres
from mlres.growth.stacks import ResidualStack
from mlres.vit import EncoderBlock

X = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
TINY = dict(num_blocks=2, width=8, num_heads=2, mlp_dim=16, patch_size=4, num_classes=5)


@pytest.mark.parametrize('scan', [False, True])
def test_variables_are_params_and_the_step_size_only(scan):
  model = mlres.ViT(**TINY, h=0.25, scan_blocks=scan)
  variables = model.init(jax.random.key(0), X)
  assert set(variables) == {'params', 'ode'} and float(variables['ode']['h']) == 0.25
  params = variables['params']
  assert set(params) == {'embed', 'pos_embed', 'encoder', 'norm', 'head'}
  assert params['pos_embed'].shape == (1, 4, 8)  # 8x8 images in 4x4 patches
  assert params['embed']['kernel'].shape == (4, 4, 3, 8)
  block = params['encoder']['scan'] if scan else params['encoder']['block1']
  assert set(block) == {'norm1', 'attn', 'norm2', 'mlp1', 'mlp2'}
  assert block['mlp2']['kernel'].shape == ((2,) if scan else ()) + (16, 8)
  # The trainer's call: the ViT has no batch statistics, so nothing comes back mutated.
  logits, mutated = model.apply(variables, X, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 5) and not mutated


def test_bfloat16_compute_keeps_float32_parameters_and_stream():
  model = mlres.ViT(**TINY, dtype=jnp.bfloat16)
  variables = model.init(jax.random.key(0), X)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits, state = model.apply(variables, X, mutable=['intermediates'],
                              capture_intermediates=lambda m, _: isinstance(m, EncoderBlock))
  assert logits.dtype == jnp.float32
  outputs = jax.tree.leaves(state['intermediates'])
  assert outputs and all(y.dtype == jnp.float32 for y in outputs)  # the residual stream


def encoder_io(model, variables):
  _, state = model.apply(variables, X, mutable=['intermediates'],
                         capture_intermediates=lambda m, _: isinstance(m, ResidualStack))
  (out,) = state['intermediates']['encoder']['__call__']
  _, inputs = model.apply(variables, X, mutable=['intermediates'],
                          capture_intermediates=lambda m, _: m.name == 'embed')
  embedded = inputs['intermediates']['embed']['__call__'][0]
  return embedded.reshape(out.shape) + variables['params']['pos_embed'], out


@pytest.mark.parametrize('scan', [False, True])
def test_the_step_size_scales_every_residual_branch(scan):
  model = mlres.ViT(**TINY, scan_blocks=scan)
  variables = model.init(jax.random.key(0), X)
  y, out = encoder_io(model, {**variables, 'ode': {'h': jnp.zeros(())}})
  np.testing.assert_array_equal(out, y)  # h = 0: every block is the identity
  y, out = encoder_io(model, variables)
  assert float(jnp.abs(out - y).max()) > 1e-3


@pytest.mark.parametrize('kwargs, message', [
    (dict(width=10, num_heads=4), 'width=10 is not divisible by num_heads=4'),
    (dict(num_blocks=0), 'num_blocks=0'),
    (dict(num_heads=0), 'num_heads=0'),
    (dict(patch_size=-2), 'patch_size=-2'),
    (dict(mlp_dim=2.5), 'mlp_dim=2.5'),
    (dict(num_classes=True), 'num_classes=True'),
    (dict(h=0.0), 'h=0.0'),
    (dict(scan_blocks='yes'), "scan_blocks='yes'"),
])
def test_bad_vits_raise_one_line_errors_naming_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message) as error:
    mlres.ViT(**{**TINY, **kwargs})
  assert '\n' not in str(error.value)


def test_a_patch_size_that_does_not_divide_the_image_is_an_error():
  with pytest.raises(ValueError, match='patch_size=3: does not divide the 8x8 images'):
    mlres.ViT(**{**TINY, 'patch_size': 3}).init(jax.random.key(0), X)
