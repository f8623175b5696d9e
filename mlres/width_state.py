"""The optimizer state of a widened model: `widen_opt_state` for optax, `grow_wider` for an NNX model
and its ``nnx.Optimizer``.

**What the mapping preserves.** At W' = clone(W) the wide gradient is the narrow one mapped by the
dual of the weights' map: each entry copied and multiplied by 1 / (copies x the weight's own factor),
so copied as it is on an input axis (each of n copies of an input reads the same value, and its
weight gets the whole narrow gradient, though it holds 1/n of the weight), divided by the copies on an
output or norm axis (each copy of an output carries 1/n of the signal back), by sqrt(copies) on a
query axis. `widen(g, moment=1)` is that map; tests/test_widen.py checks it against the wide model's
own gradient. SGD's momentum and Adam's mu, sums of gradients, go through it; Adam's nu, a sum of
squares, through its square (`moment=2`): they are the moments the wide model would hold had it been
the clone of the narrow one at every past step (staged training's mu/2, nu/4 on a matrix doubled on
both sides). `zero`'s old entries keep their moments and its new ones start at zero (no past).

**What it does not.** The same learning rate does not give the same dynamics. With these moments,
one step of the wide model is the clone of one step of the narrow model whose learning rate on each
entry is multiplied by: under SGD (momentum included), the copies of its input axes over those of
its output and norm axes (n for a kernel that reads the grown width, 1/n for an embedding, a bias or a
norm's scale, 1 for a square weight grown on both sides); under Adam, whose step does not scale with
the gradient, the copies of its input axes and sqrt(copies) of a query axis (eps aside, which the
mapping scales with the gradient's factor). Decoupled weight decay is linear and commutes with the map.

Counts, the step and every other leaf are kept; `reset=True` zeros the moments instead.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mlres.interpolate import _shaped_like
from mlres.widen import widen
from mlres.width_roles import Roles

MOMENTS = {'mu': 1, 'trace': 1, 'nu': 2}  # optax's fields: first moments (of gradients), second (of squares)


def widen_opt_state(opt_state, params, sizes, operator: str = 'clone', *, roles: Roles | None = None,
                    reset: bool = False):
  """An optax state of `params` for the params widen(params, sizes, operator) gives: every
  params-shaped field mapped as the gradients it sums (SGD's trace and Adam's mu as moment 1, Adam's
  nu as moment 2; zeros under reset=True), counts and other leaves kept. It has the structure of the
  wide model's fresh ``tx.init``; a params-shaped field of another name is refused in one line."""
  return _moments(opt_state, params, lambda node, power: widen(node, sizes, operator, roles=roles,
                                                               moment=power), reset)


def _moments(opt_state, params, fn, reset):
  like = lambda node: _shaped_like(node, params)

  def one(path, node):
    if not like(node):
      return node
    field = next((str(k.name) for k in reversed(path) if isinstance(k, jax.tree_util.GetAttrKey)), None)
    if field not in MOMENTS:
      raise ValueError(f'widen_opt_state: the optimizer state field {field!r} is shaped like the params but '
                       f'is none of {sorted(MOMENTS)}: widen it yourself, or give reset=True')
    grown = fn(node, MOMENTS[field])
    return jax.tree.map(jnp.zeros_like, grown) if reset else grown
  return jax.tree_util.tree_map_with_path(one, opt_state, is_leaf=like)


def grow_wider(model: nnx.Module, optimizer: nnx.Optimizer, sizes, operator: str = 'clone', *,
               roles: Roles | None = None, seed: int | None = None, reset: bool = False, stacks=None):
  """(the wider NNX model, its nnx.Optimizer): `widen` of the model and of its optimizer's state, as
  `widen_opt_state` maps it (each moment held by a copy of the model in place of its parameters);
  the step and counts kept. Neither input changes; the optimizer has the structure of a fresh one."""
  if not isinstance(optimizer, nnx.Optimizer):
    raise ValueError(f'expected an nnx.Optimizer to widen with the model, got {type(optimizer).__name__}')
  wide = widen(model, sizes, operator, roles=roles, seed=seed, stacks=stacks)
  wrt, graph = optimizer.wrt, optimizer.graph

  def moved(moment, power):
    holder = nnx.clone(model)
    state = nnx.state(holder, wrt, graph=graph)
    nnx.replace_by_pure_dict(state, nnx.to_pure_dict(moment))
    nnx.update(holder, state)
    grown = widen(holder, sizes, operator, roles=roles, moment=power, stacks=stacks)
    return nnx.as_pure(nnx.state(grown, wrt, graph=graph))
  opt_state = _moments(nnx.as_pure(optimizer.opt_state), nnx.as_pure(nnx.state(model, wrt, graph=graph)),
                       moved, reset)
  new = type(optimizer)(wide, optimizer.tx, wrt=wrt, graph=graph)
  nnx.update(new.opt_state, nnx.state(opt_state, graph=graph))
  new.step[...] = optimizer.step[...]
  return wide, new
