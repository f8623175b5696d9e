"""Depth: pure maps between discretizations of the same ODE: interpolate, coarsen, drop_block.

They move, average or zero whole blocks as the tree's structure says, never as its values do, so
they are jit-able and a tree alone is enough: full variables, one collection (params, batch_stats)
or a tree shaped like the params (a momentum; mlres.growth.optimizer's `grow_opt_state` finds those
in an optax state). Blocks are found in the residual stacks of mlres.growth.stacks, in either
layout, and step sizes are the ``h`` leaves of ``variables['ode']``. `interpolate` grows by one of
four operators (OPERATORS); `coarsen` is the matching restriction, coarsen(interpolate(v, op), op) == v.
`architecture` and `stack_sizes` read a tree's depth back from its structure.

Each function takes a Flax NNX module too, and gives a new one (the input is untouched): its state
maps onto the same trees (mlres.growth.nnx_trees), so one implementation serves both APIs.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mlres.growth import nnx_trees, stacks as stacks_lib
from mlres.growth.stacks import SCAN, Stack

Plan = list[tuple[int, int, bool]]  # per new block: the mean of old blocks i and j (a copy where i == j), zeroed?


def _next(k: int, transition: bool) -> int:
  """The block whose copy may follow block k: block 1 after a transition (Appendix B)."""
  return k + 1 if transition and k == 0 else k


def _check_copyable(name: str, n: int, transition: bool) -> None:
  if transition and n == 1:
    raise ValueError(f'cannot interpolate {name}: its only block changes shape (stride 2), so no block of '
                     'the right shape exists to copy; give it at least two blocks')


def _copy(name: str, n: int, transition: bool, zero: bool = False) -> Plan:
  """'copy' (the paper's Fig. 5, Appendix B): the block inserted after block k is a copy of it, of
  block 1 after a transition; h halves. One Euler step of h becomes two of h/2 with the same F, so
  the output changes by O(h^2) with the number of blocks fixed (O(h) where block 1 fills the slot
  after a transition)."""
  _check_copyable(name, n, transition)
  return [e for k in range(n) for e in ((k, k, False), (_next(k, transition), _next(k, transition), zero))]


def _linear(name: str, n: int, transition: bool) -> Plan:
  """'linear': the block inserted between blocks k and k+1 is their mean, the one after the last block
  a copy of it, the one after a transition a copy of block 1 (as in 'copy'); h halves. Where the
  weights vary smoothly along the stack (neighbours differ by O(h)), the new block holds the weights
  at its own time t_k + h/2 to O(h^2), and the output changes by O(h^2); where neighbours differ by
  O(1), by O(h)."""
  _check_copyable(name, n, transition)
  inserted = [(1, 1) if transition and k == 0 else (k, min(k + 1, n - 1)) for k in range(n)]
  return [e for k, (i, j) in enumerate(inserted) for e in ((k, k, False), (i, j, False))]


def _stack(name: str, n: int, transition: bool) -> Plan:
  """'stack': the stack followed by a copy of itself, in which block 1 takes the place of a
  transition; h halves, so the stack's total time n h is kept. The first-order term of the output,
  h (F_0 + ... + F_{n-1}), is kept, so the output changes by O(h^2) with the number of blocks fixed;
  for identical blocks it equals 'copy', otherwise its h^2 term holds products of different blocks."""
  _check_copyable(name, n, transition)
  return [(k, k, False) for k in range(n)] + [(_next(k, transition),) * 2 + (False,) for k in range(n)]


def _zero(name: str, n: int, transition: bool) -> Plan:
  """'zero': as 'copy', but each inserted block has its residual branch set to exactly zero (the
  leaves its Stack declares as `zero`), and h is kept: the grown network computes exactly the same
  function, to the last bit. The price of that is time: each stack's total time n h doubles to 2n h.
  Batch statistics are copied; the params-shaped trees of the optimizer state go through the same
  map, so the zeroed leaves start with zero momentum (and zero Adam moments), not a copied one that
  would move them at once."""
  return _copy(name, n, transition, zero=True)


def _evens(name: str, n: int, transition: bool) -> Plan:
  """The blocks at even positions: the original ones after 'copy', 'linear' and 'zero'."""
  _check_even(name, n)
  return [(k, k, False) for k in range(0, n, 2)]


def _first_half(name: str, n: int, transition: bool) -> Plan:
  """The first half: the original stack after 'stack'."""
  _check_even(name, n)
  return [(k, k, False) for k in range(n // 2)]


def _check_even(name: str, n: int) -> None:
  if n % 2:
    raise ValueError(f'cannot coarsen {name}: it has {n} blocks, an odd number')


@dataclasses.dataclass(frozen=True)
class _Operator:
  refine: Callable[[str, int, bool], Plan]
  restrict: Callable[[str, int, bool], Plan]
  h_factor: float  # of refine; restrict applies its inverse


_OPERATORS = {
    'copy': _Operator(_copy, _evens, 0.5),
    'linear': _Operator(_linear, _evens, 0.5),
    'stack': _Operator(_stack, _first_half, 0.5),
    'zero': _Operator(_zero, _evens, 1.0),
}
OPERATORS = tuple(_OPERATORS)


def _operator(operator: str) -> _Operator:
  if operator not in _OPERATORS:
    raise ValueError(f'operator={operator!r}: expected one of {", ".join(map(repr, OPERATORS))}')
  return _OPERATORS[operator]


def h_factor(operator: str) -> float:
  """The factor by which interpolate(·, operator) scales every step size: 0.5, or 1 for 'zero'."""
  return _operator(operator).h_factor


def interpolate(tree, operator: str = 'copy', *, stacks: Mapping[str, Stack] | None = None):
  """Doubles the blocks of every stack by `operator`, the same way in params, batch statistics and
  params-shaped trees (see `mlres.grow_opt_state`):

  - 'copy' (the paper's, the default): each block followed by a copy of itself (by block 1 after a
    transition); h halves; the output changes by O(h^2).
  - 'linear': each block followed by the mean of it and the next (the last by a copy of itself);
    h halves; O(h^2) where the weights vary smoothly along the stack.
  - 'stack': the stack followed by a copy of itself; h halves, keeping the total time n h and the
    first order of the output; O(h^2).
  - 'zero': as 'copy' with the new blocks' residual branches at exactly zero; h kept: exactly the
    same function, over twice the total time.

  The functions _copy, _linear, _stack and _zero say more. The result has the structure, shapes and
  dtypes of the deeper model's `init`, e.g. `ResNet(stage_sizes=2 * stage_sizes)`. `stacks`
  declares the model's stacks (model.stacks); a ResNet tree needs none.

  Given an NNX module (whose `stacks` is the default), a new module with every stack grown and every
  `StepSize` scaled.
  """
  op = _operator(operator)
  return _map(tree, op.refine, op.h_factor, stacks)


def coarsen(tree, operator: str = 'copy', *, stacks: Mapping[str, Stack] | None = None):
  """The restriction matching interpolate(·, operator): even positions ('copy', 'linear', 'zero') or
  the first half ('stack') of every stack, h doubled (kept for 'zero'); coarsen(interpolate(v, op), op) == v."""
  op = _operator(operator)
  return _map(tree, op.restrict, 1 / op.h_factor, stacks)


def drop_block(tree, stack: int | str, index: int, *, stacks: Mapping[str, Stack] | None = None):
  """Removes block `index` (from 0) of a stack, h unchanged: the lesion of Sec. 3.3. `stack` is a
  stack's name ('encoder') or, for a ResNet, the number of a stage (1 for 'stage1').

  By eq. (8) this changes the features after the block by exactly its residual G(Y) = h F(Y).
  A block that changes shape cannot be removed: its shortcut is what makes the shapes fit.
  """
  is_stage = isinstance(stack, int) and not isinstance(stack, bool)
  name = f'stage{stack}' if is_stage else stack
  sizes = stack_sizes(tree, stacks=stacks)
  if name not in sizes:
    raise ValueError(f"drop_block: {'stage' if is_stage else 'stack'}={stack!r} is not one of the tree's "
                     f'stacks {sorted(sizes)}')

  def lesion(s: str, n: int, transition: bool) -> Plan:
    if s != name:
      return [(k, k, False) for k in range(n)]
    if not 0 <= index < n:
      raise ValueError(f'drop_block: {s} has blocks 0..{n - 1}, got index={index}')
    if n == 1:
      raise ValueError(f'drop_block: {s} has a single block; a stack cannot be left empty')
    if transition and index == 0:
      raise ValueError(f'drop_block: block {index} of {s} changes shape and cannot be removed')
    return [(k, k, False) for k in range(n) if k != index]
  return _map(tree, lesion, 1.0, stacks)


def stack_sizes(tree, *, stacks: Mapping[str, Stack] | None = None) -> dict[str, int | None]:
  """The number of blocks of every stack, by name: {'stage0': 2, 'stage1': 2} or {'encoder': 4};
  of an NNX module, of every stack it declares (`stacks`, else its own)."""
  if nnx_trees.is_nnx(tree):
    tree = nnx_trees.variables(tree, stacks)
  return stacks_lib.stack_sizes(tree)


def architecture(tree, *, stacks: Mapping[str, Stack] | None = None) -> dict[str, Any]:
  """What a tree discretizes. A ResNet's (stacks stage0, stage1, ...): stage_sizes, widths,
  num_classes, h. Any other model's: stacks ({name: number of blocks}), num_classes, h.

  num_classes is the size of the bias of a top-level `head` (None where absent); h is None without an
  ode collection, the shared h if every stack uses it, else {stack name: its h}. An NNX module's
  stacks are those it declares (`stacks`, else its own), its h its StepSizes named h.
  """
  if nnx_trees.is_nnx(tree):
    tree = nnx_trees.variables(tree, stacks)
  coll = stacks_lib.first_collection(tree)
  found = stacks_lib.stacks_of(coll)
  params = tree.get('params') if stacks_lib.is_variables(tree) else tree
  head = params.get('head') if isinstance(params, Mapping) else None
  arch = {'num_classes': int(head['bias'].shape[-1]) if isinstance(head, Mapping) and 'bias' in head else None,
          'h': _step_sizes(tree, found)}
  stages = [f'stage{s}' for s in range(len(found))]
  if set(found) == set(stages) and all(not f.scanned and 'norm2' in stacks_lib.get(coll, f.path)['block0']
                                       for f in found.values()):
    last = [stacks_lib.get(coll, found[s].path)[f'block{found[s].size - 1}'] for s in stages]
    return {'stage_sizes': tuple(found[s].size for s in stages),
            'widths': tuple(int(jax.tree.leaves(b['norm2'])[0].shape[-1]) for b in last), **arch}
  return {'stacks': {name: f.size for name, f in found.items()}, **arch}


def _step_sizes(tree, found):
  if not (stacks_lib.is_variables(tree) and 'ode' in tree):
    return None
  ode = tree['ode']
  own = {name: float(node['h']) for name, f in found.items()
         if isinstance(node := stacks_lib.lookup(ode, f.path), Mapping) and 'h' in node}
  shared = [name for name in found if name not in own]
  if shared and 'h' not in ode:
    raise ValueError(f"variables['ode'] holds no step size for stack {shared[0]}: neither ode/h nor "
                     f'ode/{shared[0]}/h')
  if not own:
    return float(ode['h'])
  return {name: own[name] if name in own else float(ode['h']) for name in found}


def _map(tree, plan: Callable[[str, int, bool], Plan], h_factor: float, stacks):
  """Replaces the blocks of every stack of every collection by the plan for its size, scales h."""
  if nnx_trees.is_nnx(tree):
    return nnx_trees.map_nnx(tree, lambda v, s: _map(v, plan, h_factor, s), h_factor, stacks)

  def act(f: stacks_lib.Found, node, decl: Stack, collection):
    if f.size is None:
      return node
    entries = plan(f.name, f.size, decl.transition)
    if entries == [(k, k, False) for k in range(f.size)]:
      return node
    if collection == stacks_lib.CARRIED:
      return _carried(f, node, entries)
    zero = () if not any(z for _, _, z in entries) else _checked_zero(f, node, decl, collection)
    if f.scanned:
      return _plan_scanned(node[SCAN], entries, zero)
    blocks = stacks_lib.list_blocks(node)
    stacks_lib.check_blocks_alike(f.name, blocks, int(decl.transition))
    return _plan_list(blocks, entries, zero)
  out = stacks_lib.map_stacks(tree, act, stacks)
  if stacks_lib.is_variables(tree) and 'ode' in tree and h_factor != 1:
    out['ode'] = jax.tree_util.tree_map_with_path(
        lambda p, x: x * h_factor if str(p[-1].key) == 'h' else x, tree['ode'])
  return out


def _carried(f: stacks_lib.Found, node, entries: Plan):
  """The plan for variables that have no mean or zero (an NNX block's RNG keys and counts, caches):
  each new block takes those of the first block of its entry. A block that recurs gets its PRNG keys
  folded with its new position, so that no two blocks draw the same random numbers; its first
  occurrence keeps them, so coarsen restores them. Counts and other values are copied as they are."""
  copies = [(i, i, False) for i, _, _ in entries]
  recur = [k for k, (i, _, _) in enumerate(entries) if i in [e[0] for e in entries[:k]]]
  fold = lambda x, k: jax.random.fold_in(x, k) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  if f.scanned:
    refold = lambda x: functools.reduce(lambda y, k: y.at[k].set(fold(y[k], k)), recur, x)
    return {SCAN: jax.tree.map(refold, _plan_scanned(node[SCAN], copies, ())[SCAN])}
  grown = _plan_list(stacks_lib.list_blocks(node), copies, ())
  return {name: jax.tree.map(lambda x, k=k: fold(x, k) if k in recur else x, block)
          for k, (name, block) in enumerate(grown.items())}


def _checked_zero(f, node, decl: Stack, collection) -> tuple[str, ...]:
  """The declared zero paths, which must exist; in params, every one must be in the blocks."""
  if not decl.zero:
    raise ValueError(f"operator 'zero' needs the leaves that zero the residual branch of {f.name}'s "
                     f"blocks: declare them, e.g. stacks={{'{f.name}': mlres.Stack(zero=('dense2',))}}")
  if collection != 'params':
    return decl.zero
  block = node[SCAN] if f.scanned else node['block0']
  missing = [p for p in decl.zero if stacks_lib.lookup(block, tuple(p.split('/'))) is None]
  if missing:
    raise ValueError(f'Stack(zero=...) of {f.name} names {missing}, which its blocks do not have')
  return decl.zero


def _mean(a, b):
  return (a + b) / 2


def _zeroed(block, paths):
  for p in paths:
    path = tuple(p.split('/'))
    sub = stacks_lib.lookup(block, path)
    if sub is not None:
      block = stacks_lib.replace(block, path, jax.tree.map(jnp.zeros_like, sub))
  return block


def _plan_list(blocks, entries: Plan, zero):
  new = []
  for i, j, zeroed in entries:
    block = blocks[i] if i == j else jax.tree.map(_mean, blocks[i], blocks[j])
    new.append(_zeroed(block, zero) if zeroed else block)
  return {f'block{k}': b for k, b in enumerate(new)}


def _plan_scanned(scan, entries: Plan, zero):
  i, j, zeroed = (np.array(c) for c in zip(*entries))
  paths = [tuple(p.split('/')) for p in zero]

  def leaf(path, x):
    keys = tuple(str(k.key) for k in path)
    column = lambda mask: mask.reshape((-1,) + (1,) * (x.ndim - 1))
    y = x[i]
    if np.any(i != j):
      y = jnp.where(column(i == j), y, _mean(y, x[j]))
    if zeroed.any() and any(keys[:len(p)] == p for p in paths):
      y = jnp.where(column(zeroed), jnp.zeros_like(y), y)
    return y
  return {SCAN: jax.tree_util.tree_map_with_path(leaf, scan)}

