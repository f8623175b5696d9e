"""A pre-LayerNorm Vision Transformer whose residual branches take the explicit step size h.

Each encoder block (mlres.transformer's, shared with the GPT) is two forward-Euler steps,
Y + h MHA(LN(Y)) and then Y + h MLP(LN(Y)), so the encoder is a residual stack (mlres.growth.stacks) that
the tree maps of mlres.growth grow like the ResNet's stages. As in the ResNet, h lives in the
non-trainable collection ``ode`` (``variables['ode']['h']``); there are no batch statistics, so the
variables are only ``{'params', 'ode'}``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlres import transformer
from mlres.model import stream_dtype
from mlres.growth.stacks import Stack

# The ViT's block under the name it had before the GPT shared it.
EncoderBlock = transformer.Block


class ViT(nn.Module):
  """Patch embedding (a conv of stride `patch_size`), learned position embeddings, `num_blocks`
  encoder blocks, a final LayerNorm, mean pooling over the patches and a dense head.

  `h` is only the initial step size, the live one is variables['ode']['h']. `dtype` is the compute
  dtype of the layers; parameters are float32, the residual stream too (mlres.model.stream_dtype).
  scan_blocks=True scans one block over the depth (the stack's scanned layout,
  params['encoder']['scan']) instead of unrolling block0, block1, ...: the same weights give the same
  function (mlres.to_scanned, mlres.to_list convert them).
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
    return {'encoder': transformer.STACK}

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    check_patches(self.patch_size, x.shape[1:3])
    h = self.variable('ode', 'h', lambda: jnp.asarray(self.h, jnp.float32)).value
    p = (self.patch_size, self.patch_size)
    y = nn.Conv(self.width, p, strides=p, padding='VALID', dtype=self.dtype, name='embed')(x.astype(self.dtype))
    stream = stream_dtype(self.dtype)
    y = y.reshape(y.shape[0], -1, self.width).astype(stream)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, y.shape[1], self.width), jnp.float32)
    y = y + pos.astype(stream)
    encoder = transformer.stack(self.num_blocks, self.num_heads, self.mlp_dim, self.dtype, causal=False,
                                scan=self.scan_blocks, name='encoder')
    y = encoder(y, h=h.astype(stream))
    y = jnp.mean(nn.LayerNorm(dtype=self.dtype, name='norm')(y), axis=1)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(y).astype(jnp.float32)


def check_vit(num_blocks, width, num_heads, mlp_dim, patch_size, num_classes=1, h=1.0, scan_blocks=False):
  """Raises ValueError, one line naming the bad field, for a ViT that cannot be built."""
  transformer.check(h, scan_blocks, num_blocks=num_blocks, width=width, num_heads=num_heads,
                    mlp_dim=mlp_dim, patch_size=patch_size, num_classes=num_classes)


def check_patches(patch_size, size) -> None:
  """Raises ValueError, one line naming patch_size, where its patches do not tile images of `size`
  (height, width)."""
  if size[0] % patch_size or size[1] % patch_size:
    raise ValueError(f'patch_size={patch_size}: does not divide the {size[0]}x{size[1]} images')
