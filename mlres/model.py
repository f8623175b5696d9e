"""Pre-activation CIFAR ResNets with an explicit ODE step size h (paper, Table 5 and Appendix C).

Each residual block is one forward-Euler step Y + h F(Y). The step size lives in the variables,
in the non-trainable collection ``ode`` (``variables['ode']['h']``), and not in the module: the
optimizer never sees it, and ``interpolate`` can halve it together with doubling the blocks, so
a variables tree alone always says which discretization it is.

The dtype policy: parameters, batch-norm statistics, h and the residual stream Y are float32 (or the
compute `dtype` where it is wider) whatever the compute `dtype`; each branch F is computed in `dtype`
and cast up before h F(Y) is added (`stream_dtype`).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlres.growth.stacks import Stack, default_declaration

RESNET_WIDTHS = (16, 32, 64)
WIDE_RESNET_WIDTHS = (32, 64, 128)

_conv = functools.partial(
    nn.Conv, kernel_size=(3, 3), padding=1, use_bias=False,
    kernel_init=nn.initializers.variance_scaling(2.0, 'fan_in', 'normal'))
# Batch-norm statistics are reduced in float32 whatever the compute dtype (flax's default).
_norm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5, force_float32_reductions=True)


def stream_dtype(dtype) -> jnp.dtype:
  """The dtype of the residual stream Y and of h for compute `dtype`: float32, or `dtype` where it is
  wider. In bfloat16 (8 bits of mantissa) Y + h F(Y) rounds an update under 2**-9 of Y away, and the
  method's updates shrink as h halves at every growth; mixed-precision practice keeps the sum in
  float32 and computes only the branch in the narrow type."""
  return jnp.promote_types(jnp.float32, dtype)


def shortcut(y: jax.Array, stride: int, width: int) -> jax.Array:
  """The parameter-free shortcut: subsample by `stride`, zero-pad the new channels."""
  if stride > 1:
    y = y[:, ::stride, ::stride, :]
  extra = width - y.shape[-1]
  if extra:
    y = jnp.pad(y, ((0, 0), (0, 0), (0, 0), (0, extra)))
  return y


class Block(nn.Module):
  """One Euler step: shortcut(Y) + h * F(Y), F = conv(relu(bn(conv(relu(bn(Y)))))); Y, h and the
  result are in stream_dtype(dtype), F is computed in `dtype`."""
  width: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, h, train: bool):
    f = nn.relu(_norm(use_running_average=not train, dtype=self.dtype, name='norm1')(y))
    f = _conv(self.width, strides=self.stride, dtype=self.dtype, name='conv1')(f)
    f = nn.relu(_norm(use_running_average=not train, dtype=self.dtype, name='norm2')(f))
    f = _conv(self.width, dtype=self.dtype, name='conv2')(f)
    stream = stream_dtype(self.dtype)
    g = jnp.asarray(h, stream) * f.astype(stream)  # h may be a Python float
    # Kept for the residual-norm analyses; free when 'intermediates' is not mutable.
    self.sow('intermediates', 'residual', g)
    return shortcut(y, self.stride, self.width) + g


class Stage(nn.Module):
  """`num_blocks` Euler steps at one resolution; the first one may downsample."""
  num_blocks: int
  width: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, h, train: bool):
    # A Python loop, not lax.scan: unrolled blocks run 2.3x faster on GPU at batch 100.
    for b in range(self.num_blocks):
      y = Block(self.width, self.stride if b == 0 else 1, self.dtype, name=f'block{b}')(y, h, train)
    return y


class ResNet(nn.Module):
  """Pre-activation ResNet; `h` is only the initial step size, the live one is in variables['ode'].

  Stage i > 0 starts with a stride-2 block; shortcuts never have parameters. Its stages are the
  residual stacks stage0, stage1, ... of mlres.growth.stacks; their names declare them (`stacks`).
  """
  stage_sizes: Sequence[int] = (2, 2, 2)
  widths: Sequence[int] = RESNET_WIDTHS
  num_classes: int = 10
  h: float = 1.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    check_architecture(self.stage_sizes, self.widths, self.num_classes, self.h)
    super().__post_init__()

  @property
  def stacks(self) -> dict[str, Stack]:
    """The declaration of its stages for the tree maps, which the names alone give
    (stacks.default_declaration): stage k >= 1 opens with a stride-2 transition, and conv2's kernel is
    the last layer of every block's residual branch."""
    return {f'stage{s}': default_declaration(f'stage{s}') for s in range(len(self.stage_sizes))}

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = self.variable('ode', 'h', lambda: jnp.asarray(self.h, jnp.float32)).value
    stream = stream_dtype(self.dtype)
    y = _conv(self.widths[0], dtype=self.dtype, name='stem')(x.astype(self.dtype)).astype(stream)
    for s, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
      y = Stage(n, w, 1 if s == 0 else 2, self.dtype, name=f'stage{s}')(y, h.astype(stream), train)
    y = nn.relu(_norm(use_running_average=not train, dtype=self.dtype, name='norm')(y))
    y = jnp.mean(y, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(y).astype(jnp.float32)


def check_architecture(stage_sizes, widths, num_classes=1, h=1.0) -> None:
  """Raises ValueError, one line naming the bad field, for an architecture that cannot be built."""
  stage_sizes, widths = tuple(stage_sizes), tuple(widths)
  if not stage_sizes:
    raise ValueError('stage_sizes is empty: a ResNet needs at least one stage')
  for name, values in (('stage_sizes', stage_sizes), ('widths', widths)):
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
      raise ValueError(f'{name}={values}: every entry must be a positive integer')
  if len(widths) != len(stage_sizes):
    raise ValueError(f'widths={widths} has {len(widths)} entries but stage_sizes={stage_sizes} '
                     f'has {len(stage_sizes)} stages: give one width per stage')
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes={num_classes!r}: must be a positive integer')
  if not isinstance(h, (int, float)) or isinstance(h, bool) or not h > 0:
    raise ValueError(f'h={h!r}: the explicit step size must be a positive number')


def count_params(tree) -> int:
  """Number of scalars in a pytree (e.g. variables['params'])."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))
