"""Growing a Flax NNX model and its ``nnx.Optimizer`` together, between two cycles of training."""
from __future__ import annotations

import functools
from typing import Mapping

from flax import nnx

from mlres import nnx_state
from mlres.interpolate import grow_opt_state, interpolate
from mlres.stacks import Stack


def grow(model: nnx.Module, optimizer: nnx.Optimizer, operator: str = 'copy', *,
         stacks: Mapping[str, Stack] | None = None):
  """(the grown model, its optimizer): ``mlres.interpolate(model, operator)`` and `grow_optimizer`
  with the same map. Neither input changes; an nnx.jit step traces once more for the new depth and
  trains the two results on."""
  fn = functools.partial(interpolate, operator=operator, stacks=nnx_state.declared(model, stacks))
  grown = fn(model)
  return grown, grow_optimizer(optimizer, model, grown, fn)


def grow_optimizer(optimizer: nnx.Optimizer, model: nnx.Module, grown: nnx.Module, fn):
  """A new optimizer of the `grown` model, of the type, tx and wrt of `optimizer`, holding its state
  mapped by fn (the map from `model` to `grown`, such as functools.partial(mlres.interpolate,
  operator='zero', stacks=model.stacks)) through `grow_opt_state`: SGD's momentum and Adam's mu and
  nu go through the operator (zero's new leaves get zero moments), counts and the step are kept. It
  has the structure of a fresh optimizer of `grown`, so the same step function goes on training it."""
  if not isinstance(optimizer, nnx.Optimizer):
    raise ValueError(f'expected an nnx.Optimizer to grow with the model, got {type(optimizer).__name__}')
  params = nnx.as_pure(nnx.state(model, optimizer.wrt, graph=optimizer.graph))
  opt_state = grow_opt_state(nnx.as_pure(optimizer.opt_state), params, fn)
  new = type(optimizer)(grown, optimizer.tx, wrt=optimizer.wrt, graph=optimizer.graph)
  nnx.update(new.opt_state, nnx.state(opt_state, graph=optimizer.graph))
  new.step[...] = optimizer.step[...]
  return new
