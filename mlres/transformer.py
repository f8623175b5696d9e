"""The pre-LayerNorm transformer block of the ViT and the GPT, and the residual stack of such blocks.

A block is two forward-Euler steps of the same step size h, Y + h MHA(LN(Y)) and then
Y + h MLP(LN(Y)), so a model's blocks are a residual stack (mlres.growth.stacks) that the tree maps of
mlres.growth grow; one definition keeps both models growing by the same rules.

As in the ResNet, the residual stream Y and h are in mlres.model.stream_dtype(dtype), float32 under
bfloat16 compute: each branch runs in `dtype` and its result is cast up before h times it is added.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlres.growth.stacks import ResidualStack, Stack

# The last layers of the two branches: with these at zero a block is the identity (operator 'zero').
STACK = Stack(zero=('attn/out', 'mlp2'))


class Block(nn.Module):
  """Y + h MHA(LN(Y)), then + h MLP(LN(·)): one block, two Euler steps of the same h.

  causal=True lets position t attend to positions 0..t only (a decoder), so that no output depends
  on a later token. y (the stream) and h are in stream_dtype(dtype); the branches are computed in `dtype`.
  """
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  causal: bool = False

  @nn.compact
  def __call__(self, y, h):
    width = y.shape[-1]
    norm = functools.partial(nn.LayerNorm, dtype=self.dtype)
    mask = nn.make_causal_mask(y[..., 0]) if self.causal else None
    # A softmax in bfloat16 loses the small attention weights; float32 and wider keep their own dtype.
    a = nn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, name='attn',
                                        force_fp32_for_softmax=jnp.dtype(self.dtype).itemsize < 4)(
                                            norm(name='norm1')(y), mask=mask)
    ga = h * a.astype(h.dtype)
    y = y + ga
    m = nn.Dense(self.mlp_dim, dtype=self.dtype, name='mlp1')(norm(name='norm2')(y))
    gm = h * nn.Dense(width, dtype=self.dtype, name='mlp2')(nn.gelu(m)).astype(h.dtype)
    # G(Y) = h F(Y) of the whole block, for the residual-norm analyses and eq. (8).
    self.sow('intermediates', 'residual', ga + gm)
    return y + gm


def stack(num_blocks: int, num_heads: int, mlp_dim: int, dtype, *, causal: bool, scan: bool,
          name: str) -> ResidualStack:
  """`num_blocks` blocks as one residual stack, unrolled (block0, block1, ...) or with scan=True
  scanned; called as stack(y, h=h). The model declares it with STACK."""
  block = functools.partial(Block, num_heads, mlp_dim, dtype, causal)
  return ResidualStack(block, num_blocks, scan=scan, name=name)


def check(h, scan_blocks, **fields) -> None:
  """Raises ValueError, one line naming the bad field: `fields` (among them width and num_heads) must
  be positive integers, the heads must split the width, h must be a positive number."""
  for name, v in fields.items():
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f'{name}={v!r}: must be a positive integer')
  width, num_heads = fields['width'], fields['num_heads']
  if width % num_heads:
    raise ValueError(f'width={width} is not divisible by num_heads={num_heads}: each head takes '
                     'width / num_heads features')
  if not isinstance(h, (int, float)) or isinstance(h, bool) or not h > 0:
    raise ValueError(f'h={h!r}: the explicit step size must be a positive number')
  if not isinstance(scan_blocks, bool):
    raise ValueError(f'scan_blocks={scan_blocks!r}: must be True or False')
