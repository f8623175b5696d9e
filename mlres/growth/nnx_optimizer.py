"""Growing a Flax NNX model and its ``nnx.Optimizer`` together, deeper or wider, between two cycles of
training: the optimizer's state through the map of the weights (mlres.growth.optimizer), each
params-shaped part held by a copy of the model in place of its parameters, as the maps take modules."""
from __future__ import annotations

import functools
from typing import Callable, Mapping

from flax import nnx

from mlres.growth import nnx_trees
from mlres.growth.depth import interpolate
from mlres.growth.optimizer import map_moments, power, zeroed
from mlres.growth.stacks import Stack
from mlres.growth.width import widen
from mlres.growth.width_roles import Roles


def grow(model: nnx.Module, optimizer: nnx.Optimizer, operator: str = 'copy', *,
         stacks: Mapping[str, Stack] | None = None):
  """(the grown model, its optimizer): ``mlres.interpolate(model, operator)`` and `grow_optimizer`
  with the same map. Neither input changes; an nnx.jit step traces once more for the new depth and
  trains the two results on."""
  fn = functools.partial(interpolate, operator=operator, stacks=nnx_trees.declared(model, stacks))
  grown = fn(model)
  return grown, grow_optimizer(optimizer, model, grown, fn)


def grow_optimizer(optimizer: nnx.Optimizer, model: nnx.Module, grown: nnx.Module, fn):
  """A new optimizer of the `grown` model, of the type, tx and wrt of `optimizer`, holding its state
  mapped by fn (the map from `model` to `grown`, such as functools.partial(mlres.interpolate,
  operator='zero', stacks=model.stacks)) through `grow_opt_state`: SGD's momentum and Adam's mu and
  nu go through the operator (zero's new leaves get zero moments), each held by a copy of the model
  in place of its parameters, as the maps take modules; counts and the step are kept. It has the
  structure of a fresh optimizer of `grown`, so the same step function goes on training it."""
  _check_optimizer(optimizer, 'grow')
  return _mapped_optimizer(optimizer, model, grown, lambda holder, field: fn(holder))


def grow_wider(model: nnx.Module, optimizer: nnx.Optimizer, sizes, operator: str = 'clone', *,
               roles: Roles | None = None, seed: int | None = None, reset: bool = False, stacks=None):
  """(the wider NNX model, its nnx.Optimizer): `widen` of the model and of its optimizer's state, as
  `widen_opt_state` maps it (each moment held by a copy of the model in place of its parameters);
  the step and counts kept. Neither input changes; the optimizer has the structure of a fresh one."""
  _check_optimizer(optimizer, 'widen')
  wide = widen(model, sizes, operator, roles=roles, seed=seed, stacks=stacks)
  moment = lambda holder, field: widen(holder, sizes, operator, roles=roles, moment=power(field, reset),
                                        stacks=stacks)
  return wide, _mapped_optimizer(optimizer, model, wide, moment, reset)


def _check_optimizer(optimizer, verb: str) -> None:
  if not isinstance(optimizer, nnx.Optimizer):
    raise ValueError(f'expected an nnx.Optimizer to {verb} with the model, got {type(optimizer).__name__}')


def _mapped_optimizer(optimizer: nnx.Optimizer, model: nnx.Module, grown: nnx.Module, fn: Callable,
                      reset: bool = False):
  """A new optimizer of `grown`, of the type, tx and wrt of `optimizer`, whose every params-shaped part
  of the state is fn(a copy of `model` holding that part in place of its parameters, the part's field
  name), read back at the grown model's parameters' places (zeros under reset); the step and counts
  kept."""
  wrt, graph = optimizer.wrt, optimizer.graph
  params = nnx.as_pure(nnx.state(model, wrt, graph=graph))

  def moved(moment, field):
    holder = nnx.clone(model)
    state = nnx.state(holder, wrt, graph=graph)
    nnx.replace_by_pure_dict(state, nnx.to_pure_dict(moment))
    nnx.update(holder, state)
    return zeroed(nnx.as_pure(nnx.state(fn(holder, field), wrt, graph=graph)), reset)
  opt_state = map_moments(nnx.as_pure(optimizer.opt_state), params, moved)
  new = type(optimizer)(grown, optimizer.tx, wrt=wrt, graph=graph)
  nnx.update(new.opt_state, nnx.state(opt_state, graph=graph))
  new.step[...] = optimizer.step[...]
  return new
