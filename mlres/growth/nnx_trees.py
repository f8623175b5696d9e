"""Flax NNX modules on the growth package's tree maps (depth, width): a module's state, split by the
kind of its variables into the collections of mlres.growth.stacks, and a new module of the grown
shape built from them.

A stack of an NNX module is an attribute that the model declares in its ``stacks`` ({path: Stack};
the path joins attribute names and list indices with '/', as 'body' or 'stages/0/blocks'), in one of
two layouts:

- a list of block modules (``nnx.List``, or a plain list marked ``nnx.data``): state paths
  ``body/0``, ``body/1``, ..., which the maps see as the list layout ``body/block0, body/block1, ...``;
- one block module whose every variable has a leading layer axis, as ``nnx.vmap`` over the block's
  constructor makes (Flax's scan over layers), which the maps see as the scanned layout ``body/scan``.

An NNX state cannot tell a scanned block from any other module, so every stack is declared: only the
declaration marks it. Variables go by kind:

- ``nnx.Param`` (and its subclasses): the collection ``params``, through the operator;
- ``nnx.BatchStat``: ``batch_stats``, through the operator as Linen's running statistics are;
- `StepSize`: each one scaled by the operator's factor; a block may not hold one;
- every other kind (RNG keys and counts, caches, kinds of your own): ``carried``. Outside the stacks
  it is kept as it is; in a stack each new block takes the values of the block it copies, never a
  mean or a zero, and a block that recurs gets its PRNG keys folded with its new position, so that
  no two blocks of the grown stack draw the same random numbers (mlres.growth.depth._carried).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
from flax import nnx

from mlres.growth import stacks as stacks_lib
from mlres.growth.stacks import CARRIED, SCAN, Stack


class StepSize(nnx.Variable):
  """The step size h of the blocks' y + h F(y). A kind of its own and not an ``nnx.Param``: h is the
  spacing of the time grid, which growth sets (halved by 'copy'), not a weight for the loss to move,
  so an ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never updates it and ``nnx.grad`` never
  differentiates it, while ``nnx.split``, ``nnx.state`` and checkpoints carry it like any variable.

  The step size of a stack is the StepSize named ``h`` nearest above it: one held by the module that
  holds the stack is the stack's own, ``model.h`` is shared by every stack without one."""


_KINDS = (('params', nnx.Param), ('batch_stats', nnx.BatchStat), (CARRIED, ...))


def is_nnx(tree) -> bool:
  """Whether the maps take `tree` as an NNX module. Only a module: an ``nnx.State`` (a type Flax is
  retiring for plain dicts) never reaches them; mlres.growth.optimizer carries an optimizer's moments
  through a module that holds them."""
  return isinstance(tree, nnx.Module)


def declared(tree, stacks: Mapping[str, Stack] | None) -> dict[str, Stack]:
  """`stacks`, else the module's own ``stacks``: every NNX stack is declared."""
  stacks = getattr(tree, 'stacks', None) if stacks is None else stacks
  if not isinstance(stacks, Mapping) or not stacks:
    raise ValueError(f'{type(tree).__name__} declares no residual stacks: give stacks= or a `stacks` '
                     "attribute, such as {'body': mlres.Stack()} for the blocks in model.body")
  return dict(stacks)


def variables(tree, stacks: Mapping[str, Stack] | None = None):
  """The variables tree that mlres.growth.stacks reads of an NNX module, its step sizes as Linen's ``ode``
  (ode/h shared, ode/<stack>/h a stack's own)."""
  stacks = declared(tree, stacks)
  colls, steps, paths = _split(tree, stacks)
  ode = {'h': steps['h']} if 'h' in steps else {}
  for path in paths.values():
    own = next((h for n in range(len(path) - 1, 0, -1)
                if (h := stacks_lib.lookup(steps, path[:n] + ('h',))) is not None), None)
    if own is not None:
      ode = _merged(ode, _nested(path, own))
  return {**colls, 'ode': ode} if ode else colls


def map_nnx(tree, fn: Callable[[Any, dict[str, Stack]], Any], h_factor: float, stacks=None):
  """A new module (the input is untouched) whose variables are fn(variables, declarations) and whose
  step sizes are scaled by `h_factor`. fn maps the trees of mlres.growth.stacks and may change the number of
  blocks of every stack."""
  stacks = declared(tree, stacks)
  colls, steps, paths = _split(tree, stacks)
  grown = {k: _from_stacks(v, paths) for k, v in fn(colls, stacks).items()}
  grown['steps'] = jax.tree.map(lambda h: h * h_factor, steps)
  model = nnx.clone(tree)
  for path in paths.values():
    _resize(model, path, next(node for name, _ in _KINDS
                              if (node := stacks_lib.lookup(grown.get(name, {}), path)) is not None))
  for name, kind in _KINDS + (('steps', StepSize),):
    if name in grown:
      state = nnx.state(model, kind)
      nnx.replace_by_pure_dict(state, grown[name])
      nnx.update(model, state)
  return model


def _split(model, stacks):
  """The module's collections in the layout of mlres.growth.stacks, its StepSizes, and its stacks' paths."""
  _, steps, *states = nnx.split(model, StepSize, *(kind for _, kind in _KINDS))
  steps, pures = nnx.to_pure_dict(steps), [nnx.to_pure_dict(s) for s in states]
  paths = _paths(nnx.to_pure_dict(nnx.state(model)), stacks)
  for path in paths.values():
    if stacks_lib.lookup(steps, path) is not None:
      raise ValueError(f'stack {_name(path)} holds a StepSize in its blocks: keep it in the module '
                       'that holds the stack, where it is the stack\'s own step size')
  for group in nnx.find_duplicates(model):
    for path in paths.values():
      if any(tuple(p[:len(path)]) == path for p in group):
        raise ValueError(f'stack {_name(path)}: {" and ".join(map(_name, group))} are one module or '
                         'variable, a shared reference that a grown stack cannot keep')
  colls = {name: _as_stacks(pure, paths) for (name, _), pure in zip(_KINDS, pures) if pure}
  return colls, steps, paths


def _paths(tree, stacks) -> dict[str, tuple]:
  """Each declared stack's path of keys in `tree`: a digit names a list index."""
  paths = {}
  for name in stacks:
    node, path = tree, ()
    for part in name.split('/'):
      key = int(part) if part.isdigit() and isinstance(node, Mapping) and int(part) in node else part
      if not isinstance(node, Mapping) or key not in node:
        raise ValueError(f'stacks= declares {name!r}, which the model does not have (at {part!r})')
      node, path = node[key], path + (key,)
    paths[name] = path
  return paths


def _as_stacks(tree, paths):
  """The tree with each stack in the layout mlres.growth.stacks reads: list items i as block<i>, a block
  with a layer axis as scan. Only the declared stacks may be found there."""
  for path in paths.values():
    node = stacks_lib.lookup(tree, path)
    if node is not None:
      tree = stacks_lib.replace(tree, path, {f'block{i}': b for i, b in node.items()} if _is_list(node)
                                else {SCAN: node})
  extra = sorted(set(stacks_lib.find(tree)) - {_name(p) for p in paths.values()})
  if extra:
    raise ValueError(f"{extra[0]} is laid out as a residual stack ('scan' and 'block<i>' are reserved "
                     'names) but not declared in stacks=')
  return tree


def _from_stacks(tree, paths):
  """The inverse of `_as_stacks`."""
  for path in paths.values():
    node = stacks_lib.lookup(tree, path)
    if node is not None:
      tree = stacks_lib.replace(tree, path, node[SCAN] if SCAN in node
                                else {i: node[f'block{i}'] for i in range(len(node))})
  return tree


def _is_list(node) -> bool:
  return isinstance(node, Mapping) and bool(node) and all(isinstance(k, int) for k in node)


def _resize(model, path, grown):
  """Gives a list stack the grown number of blocks: block 0 and the last stand in for the structure
  of the new ones (the maps check that blocks after a transition share one); their values are set
  afterwards. A scanned stack needs nothing: its arrays carry the new layer count."""
  parent = functools.reduce(_child, path[:-1], model)
  blocks = _child(parent, path[-1])
  if isinstance(blocks, (list, nnx.List)):
    new = type(blocks)([nnx.clone(blocks[0 if k == 0 else -1]) for k in range(len(grown))])
    if isinstance(path[-1], int):
      parent[path[-1]] = new
    else:
      setattr(parent, path[-1], new)


def _child(node, key):
  return node[key] if isinstance(key, int) or isinstance(node, Mapping) else getattr(node, key)


def _name(path) -> str:
  return '/'.join(map(str, path))


def _nested(path, h):
  return {path[0]: _nested(path[1:], h)} if path else {'h': h}


def _merged(a, b):
  return {**a, **{k: _merged(a[k], v) if k in a and isinstance(v, Mapping) else v for k, v in b.items()}}
