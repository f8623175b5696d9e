"""The optimizer state of a grown model, deeper or wider: `grow_opt_state` and `widen_opt_state` for
optax (for an NNX model and its ``nnx.Optimizer``: mlres.growth.nnx_optimizer). Every map finds the
parts of the state shaped like the params and sends them through the map of the weights.

**Depth.** A params-shaped part (SGD's trace, Adam's mu and nu) goes through the growth operator as
the weights do (mlres.growth.depth): copied, averaged or zeroed block by block, so 'zero''s new
blocks start with zero moments.

**Width.** At W' = clone(W) the wide gradient is the narrow one mapped by the
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

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from mlres.growth.width import widen
from mlres.growth.width_roles import Roles

MOMENTS = {'mu': 1, 'trace': 1, 'nu': 2}  # optax's fields: first moments (of gradients), second (of squares)


def grow_opt_state(opt_state, params, fn: Callable):
  """An optax state with every subtree shaped like `params` mapped by `fn`, the map of the weights
  (e.g. functools.partial(interpolate, operator='linear')); counts and other leaves are kept.

  Works for any optax optimizer: SGD's trace, Adam's mu and nu, inside chains, named tuples and masked
  states (whose masked-out leaves are optax.MaskedNode). The result has the structure of the grown
  model's fresh `tx.init(fn(params))`.
  """
  return map_moments(opt_state, params, lambda node, field: fn(node))


def widen_opt_state(opt_state, params, sizes, operator: str = 'clone', *, roles: Roles | None = None,
                    reset: bool = False):
  """An optax state of `params` for the params widen(params, sizes, operator) gives: every
  params-shaped field mapped as the gradients it sums (SGD's trace and Adam's mu as moment 1, Adam's
  nu as moment 2; zeros under reset=True), counts and other leaves kept. It has the structure of the
  wide model's fresh ``tx.init``; a params-shaped field of another name is refused in one line."""
  def one(node, field):
    return zeroed(widen(node, sizes, operator, roles=roles, moment=power(field, reset)), reset)
  return map_moments(opt_state, params, one)


def power(field: str | None, reset: bool = False) -> int:
  """The power of the gradient that an optax state's params-shaped field sums (MOMENTS); any field's
  under reset, which zeros it after it takes the wide shapes."""
  if reset:
    return 1
  if field not in MOMENTS:
    raise ValueError(f'widen_opt_state: the optimizer state field {field!r} is shaped like the params but '
                     f'is none of {sorted(MOMENTS)}: widen it yourself, or give reset=True')
  return MOMENTS[field]


def zeroed(tree, reset: bool):
  """`tree` with zeros for its leaves where `reset`."""
  return jax.tree.map(jnp.zeros_like, tree) if reset else tree


def map_moments(opt_state, params, fn: Callable):
  """`opt_state` with every subtree shaped like `params` replaced by fn(subtree, the name of the field
  that holds it: 'mu', 'trace', ...; None where no named tuple holds it)."""
  like = lambda node: _shaped_like(node, params)

  def one(path, node):
    if not like(node):
      return node
    field = next((str(k.name) for k in reversed(path) if isinstance(k, jax.tree_util.GetAttrKey)), None)
    return fn(node, field)
  return jax.tree_util.tree_map_with_path(one, opt_state, is_leaf=like)


def _shaped_like(node, params) -> bool:
  """The dicts of `node` have the keys of those of `params`, and a leaf (or an empty node) at each leaf."""
  if isinstance(params, Mapping):
    return (isinstance(node, Mapping) and set(node) == set(params)
            and all(_shaped_like(node[k], params[k]) for k in params))
  return jax.tree_util.treedef_is_leaf(jax.tree.structure(node))
