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
  nu go through the operator (zero's new leaves get zero moments), each held by a copy of the model
  in place of its parameters, as the maps take modules; counts and the step are kept. It has the
  structure of a fresh optimizer of `grown`, so the same step function goes on training it."""
  if not isinstance(optimizer, nnx.Optimizer):
    raise ValueError(f'expected an nnx.Optimizer to grow with the model, got {type(optimizer).__name__}')
  wrt, graph = optimizer.wrt, optimizer.graph
  params = nnx.as_pure(nnx.state(model, wrt, graph=graph))

  def moved(moment):
    """fn of a params-shaped part of the state: a copy of `model` holding it in place of its
    parameters goes through fn, and gives the grown model's parameters' places."""
    holder = nnx.clone(model)
    state = nnx.state(holder, wrt, graph=graph)
    nnx.replace_by_pure_dict(state, nnx.to_pure_dict(moment))
    nnx.update(holder, state)
    return nnx.as_pure(nnx.state(fn(holder), wrt, graph=graph))
  opt_state = grow_opt_state(nnx.as_pure(optimizer.opt_state), params, moved)
  new = type(optimizer)(grown, optimizer.tx, wrt=wrt, graph=graph)
  nnx.update(new.opt_state, nnx.state(opt_state, graph=optimizer.graph))
  new.step[...] = optimizer.step[...]
  return new
