"""A pre-LayerNorm GPT-style decoder over bytes whose residual branches take the explicit step size h.

Its blocks are the ViT's (mlres.transformer) with a causal mask, one residual stack that the tree
maps of mlres.growth grow; as in the ViT, h lives in the non-trainable collection ``ode``
(``variables['ode']['h']``) and the variables are only ``{'params', 'ode'}``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlres import transformer
from mlres.model import stream_dtype
from mlres.growth.stacks import Stack


class GPT(nn.Module):
  """Token embedding and learned position embeddings, `num_blocks` causal blocks, a final LayerNorm
  and a dense head: logits (B, T, vocab_size) of the next token at every position of (B, T) tokens,
  T <= context.

  The head is not tied to the embedding: over 256 bytes tying would save only 256 x width weights,
  and untied, the ODE's initial state embed(x) and the read-out of its final state are free to differ.

  `h` is only the initial step size, the live one is variables['ode']['h']. `dtype` is the compute
  dtype of the layers; parameters are float32, the residual stream too (mlres.model.stream_dtype).
  scan_blocks=True scans one block over the depth
  (params['decoder']['scan']) instead of unrolling block0, block1, ...: the same weights give the
  same function (mlres.to_scanned, mlres.to_list convert them). `train` is accepted for the
  trainer's sake: there is no dropout.
  """
  num_blocks: int
  width: int
  num_heads: int
  mlp_dim: int
  context: int
  vocab_size: int = 256
  h: float = 1.0
  dtype: Any = jnp.float32
  scan_blocks: bool = False

  def __post_init__(self):
    check_gpt(self.num_blocks, self.width, self.num_heads, self.mlp_dim, self.context, self.vocab_size,
              self.h, self.scan_blocks)
    super().__post_init__()

  @property
  def stacks(self) -> dict[str, Stack]:
    """Its one stack, the decoder, declared as the ViT's encoder."""
    return {'decoder': transformer.STACK}

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    del train
    length = tokens.shape[1]
    if length > self.context:
      raise ValueError(f'{length} tokens do not fit the {self.context} positions of context={self.context}')
    h = self.variable('ode', 'h', lambda: jnp.asarray(self.h, jnp.float32)).value
    stream = stream_dtype(self.dtype)
    y = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name='embed')(tokens).astype(stream)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (self.context, self.width), jnp.float32)
    y = y + pos[:length].astype(stream)
    decoder = transformer.stack(self.num_blocks, self.num_heads, self.mlp_dim, self.dtype, causal=True,
                                scan=self.scan_blocks, name='decoder')
    y = nn.LayerNorm(dtype=self.dtype, name='norm')(decoder(y, h=h.astype(stream)))
    return nn.Dense(self.vocab_size, dtype=self.dtype, name='head')(y).astype(jnp.float32)


def flops_per_token(num_blocks: int, width: int, mlp_dim: int, context: int, vocab_size: int = 256) -> int:
  """Training FLOPs per token of a GPT, forward and backward, counted as nanoGPT's estimate_mfu does:
  6 N + 12 L width T, with T = context: every position's scores against the whole context, as
  nanoGPT counts them, and as flax computes them before the causal mask drops the later half.

  N counts the weights that multiply: each block's attention (query, key, value, out: 4 width^2)
  and MLP (2 width mlp_dim) kernels, and the head (width vocab_size), whose matmul is as real as a
  block's, 2 FLOPs per weight forward and 4 backward. Not counted: the token and position embeddings,
  which are looked up, not multiplied (nanoGPT counts its token embedding only because its head is
  tied to it, and leaves the position embeddings out), and biases and norm scales, an add or a
  multiply per feature rather than per weight. 12 L width T is attention's scores and weighted sum,
  2 T width FLOPs each per block forward, three times that with the backward pass.
  """
  n = num_blocks * (4 * width * width + 2 * width * mlp_dim) + width * vocab_size
  return 6 * n + 12 * num_blocks * width * context


def check_gpt(num_blocks, width, num_heads, mlp_dim, context, vocab_size=256, h=1.0, scan_blocks=False):
  """Raises ValueError, one line naming the bad field, for a GPT that cannot be built."""
  transformer.check(h, scan_blocks, num_blocks=num_blocks, width=width, num_heads=num_heads,
                    mlp_dim=mlp_dim, context=context, vocab_size=vocab_size)
