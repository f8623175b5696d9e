"""A pre-LayerNorm Vision Transformer whose residual branches take the explicit step size h.

Each encoder block is two forward-Euler steps, Y + h MHA(LN(Y)) and then Y + h MLP(LN(Y)), so the
encoder is a residual stack (mlres.stacks) that the tree maps of mlres.interpolate grow like the
ResNet's stages. As in the ResNet, h lives in the non-trainable collection ``ode``
(``variables['ode']['h']``); there are no batch statistics, so the variables are only
``{'params', 'ode'}``.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlres.stacks import ResidualStack, Stack

# The last layers of the two branches: with these at zero a block is the identity (operator 'zero').
ENCODER_ZERO = ('attn/out', 'mlp2')


class EncoderBlock(nn.Module):
  """Y + h MHA(LN(Y)), then + h MLP(LN(·)): one block, two Euler steps of the same h."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, h):
    width = y.shape[-1]
    norm = functools.partial(nn.LayerNorm, dtype=self.dtype)
    # A softmax in bfloat16 loses the small attention weights; float32 and wider keep their own dtype.
    a = nn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, name='attn',
                                        force_fp32_for_softmax=jnp.dtype(self.dtype).itemsize < 4)(
                                            norm(name='norm1')(y))
    ga = (h * a).astype(self.dtype)
    y = y + ga
    m = nn.Dense(self.mlp_dim, dtype=self.dtype, name='mlp1')(norm(name='norm2')(y))
    gm = (h * nn.Dense(width, dtype=self.dtype, name='mlp2')(nn.gelu(m))).astype(self.dtype)
    # G(Y) = h F(Y) of the whole block, for the residual-norm analyses and eq. (8).
    self.sow('intermediates', 'residual', ga + gm)
    return y + gm


class ViT(nn.Module):
  """Patch embedding (a conv of stride `patch_size`), learned position embeddings, `num_blocks`
  encoder blocks, a final LayerNorm, mean pooling over the patches and a dense head.

  `h` is only the initial step size, the live one is variables['ode']['h']. `dtype` is the compute
  dtype; parameters are float32. scan_blocks=True scans one block over the depth (the stack's
  scanned layout, params['encoder']['scan']) instead of unrolling block0, block1, ...: the same
  weights give the same function (mlres.to_scanned, mlres.to_list convert them).
  `train` is accepted for the trainer's sake: there is no dropout and no batch norm.
  """
  num_blocks: int = 4
  width: int = 64
  num_heads: int = 4
  mlp_dim: int = 128
  patch_size: int = 4
  num_classes: int = 10
  h: float = 1.0
  dtype: Any = jnp.float32
  scan_blocks: bool = False

  def __post_init__(self):
    check_vit(self.num_blocks, self.width, self.num_heads, self.mlp_dim, self.patch_size,
              self.num_classes, self.h, self.scan_blocks)
    super().__post_init__()

  @property
  def stacks(self) -> dict[str, Stack]:
    """Its one stack, the encoder, for the tree maps: no transition; zeroing the attention's output
    projection and the MLP's second layer makes a block the identity."""
    return {'encoder': Stack(zero=ENCODER_ZERO)}

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    size = x.shape[1:3]
    if size[0] % self.patch_size or size[1] % self.patch_size:
      raise ValueError(f'patch_size={self.patch_size} does not divide the image size '
                       f'{size[0]}x{size[1]}')
    h = self.variable('ode', 'h', lambda: jnp.asarray(self.h, jnp.float32)).value
    p = (self.patch_size, self.patch_size)
    y = nn.Conv(self.width, p, strides=p, padding='VALID', dtype=self.dtype, name='embed')(x.astype(self.dtype))
    y = y.reshape(y.shape[0], -1, self.width)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, y.shape[1], self.width), jnp.float32)
    y = y + pos.astype(self.dtype)
    block = functools.partial(EncoderBlock, self.num_heads, self.mlp_dim, self.dtype)
    y = ResidualStack(block, self.num_blocks, scan=self.scan_blocks, name='encoder')(y, h=h.astype(self.dtype))
    y = jnp.mean(nn.LayerNorm(dtype=self.dtype, name='norm')(y), axis=1)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(y).astype(jnp.float32)


def check_vit(num_blocks, width, num_heads, mlp_dim, patch_size, num_classes=1, h=1.0, scan_blocks=False):
  """Raises ValueError, one line naming the bad field, for a ViT that cannot be built."""
  fields = dict(num_blocks=num_blocks, width=width, num_heads=num_heads, mlp_dim=mlp_dim,
                patch_size=patch_size, num_classes=num_classes)
  for name, v in fields.items():
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f'{name}={v!r}: must be a positive integer')
  if width % num_heads:
    raise ValueError(f'width={width} is not divisible by num_heads={num_heads}: each head takes '
                     'width / num_heads features')
  if not isinstance(h, (int, float)) or isinstance(h, bool) or not h > 0:
    raise ValueError(f'h={h!r}: the explicit step size must be a positive number')
  if not isinstance(scan_blocks, bool):
    raise ValueError(f'scan_blocks={scan_blocks!r}: must be True or False')
