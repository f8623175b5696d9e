"""Residual stacks: how the growth maps (depth, width) find the residual blocks of any linen model.

A *stack* is a subtree of a collection (params, batch_stats, or a tree shaped like params such as a
momentum) whose keys are exactly

- ``block0 ... block{N-1}``: the list layout, one subtree per block, as a Python loop over modules
  named ``block{i}`` makes (the ResNet's stages); or
- ``scan``: the scanned layout, one subtree whose every leaf has a leading layer axis of length N,
  as ``nn.scan`` over one block module named ``scan`` makes.

A stack is named by its path, '/'-joined ('stage1', 'encoder', 'body/left'). Stacks are found at any
depth, never inside another stack; the keys ``block<i>`` and ``scan`` are reserved for them.
`ResidualStack` builds either layout, `to_scanned` and `to_list` convert a tree between them.

Step sizes live in the collection ``ode``: ``ode/h`` is shared by every stack without one of its own;
a stack's own step size is ``ode/<name>/h``, where flax puts the variable that the stack's module
declares (``ResidualStack(h=...)``).

Flax NNX modules reach these trees through mlres.growth.nnx_trees, which adds the collection ``carried``:
variables of other kinds (RNG keys and counts), moved with their blocks but never averaged or zeroed.
Keys along a path may then be integers (the index of an ``nnx.List``); names join them as strings.

What the names cannot say, the model declares per stack with a `Stack` (whether block 0 changes the
feature shape; which leaves zero a block's residual branch) and gives as ``model.stacks``
({name: Stack}); the tree maps take that as ``stacks=``. A stack that is not declared gets
`default_declaration`: the ResNet's naming convention, so a bare ResNet tree needs no declaration.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CARRIED = 'carried'
COLLECTIONS = ('params', 'batch_stats', 'ode', CARRIED)
SCAN = 'scan'
_BLOCK = re.compile(r'block(\d+)$')
_STAGE = re.compile(r'stage(\d+)$')


@dataclasses.dataclass(frozen=True)
class Stack:
  """A model's declaration of one residual stack.

  transition: block 0 changes the feature shape (the ResNet's stride-2 first block of a stage). As
    no other slot can hold a copy of it, the block inserted after it copies block 1 (Appendix B),
    and it cannot be dropped. A scanned stack has none (its blocks share one shape): a model puts
    such a block before the stack.
  zero: paths inside one block ('conv2/kernel', 'attn/out') of the parameters that, set to zero,
    make the block's residual branch exactly zero (operator 'zero'); a path names a leaf or a subtree,
    zeroed in every collection that has it: for a norm layer name its leaves ('bn3/scale',
    'bn3/bias'), or its running statistics would be zeroed too.
  """
  transition: bool = False
  zero: tuple[str, ...] = ()

  def __post_init__(self):
    if not isinstance(self.transition, bool):
      raise ValueError(f'Stack(transition={self.transition!r}): must be True or False')
    if isinstance(self.zero, str) or not all(isinstance(p, str) and p for p in self.zero):
      raise ValueError(f'Stack(zero={self.zero!r}): give a tuple of paths inside a block, '
                       "such as ('conv2/kernel',)")
    object.__setattr__(self, 'zero', tuple(self.zero))


def default_declaration(name: str) -> Stack:
  """The declaration of an undeclared stack, by the ResNet's naming convention (model.ResNet):
  ``stage<k>`` opens with a stride-2 transition for k >= 1 and conv2's kernel is the last layer of
  each block's branch; any other stack has no transition and declares no zeroing."""
  m = _STAGE.match(name)
  if m is None:
    return Stack()
  return Stack(transition=int(m.group(1)) > 0, zero=('conv2/kernel',))


@dataclasses.dataclass(frozen=True)
class Found:
  """A stack located in one collection; size is None for a scanned stack without leaves (masked)."""
  name: str
  path: tuple[str, ...]
  scanned: bool
  size: int | None


class ResidualStack(nn.Module):
  """`num_blocks` residual blocks in one of the two layouts: modules block0 ... block{N-1}, or with
  scan=True one block scanned N times (one compiled body however deep). The same weights give the
  same function in both (`to_scanned`, `to_list`).

  block() builds one block (a module class or a functools.partial of one), called as
  block(y, h, *args) -> y + h F(y); the call's extra args (such as `train`) reach every block.
  h: the stack's own step size, kept at ode/<this module's path>/h; None (the default) uses the h
  given to the call, such as a shared ode/h.
  """
  block: Callable[..., nn.Module]
  num_blocks: int
  scan: bool = False
  h: float | None = None

  def __post_init__(self):
    if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks < 1:
      raise ValueError(f'num_blocks={self.num_blocks!r}: a stack needs a positive number of blocks')
    super().__post_init__()

  @nn.compact
  def __call__(self, y, *args, h=None):
    if (h is None) == (self.h is None):
      raise ValueError(f'ResidualStack {self.name}: give h to the constructor (its own step size) '
                       'or to the call (a shared one), exactly once')
    if self.h is not None:
      h = self.variable('ode', 'h', lambda: jnp.asarray(self.h, jnp.float32)).value.astype(y.dtype)
    if not self.scan:
      for i in range(self.num_blocks):
        y = self.block(name=f'block{i}')(y, h, *args)
      return y
    step = lambda block, carry, *xs: (block(carry, *xs), None)
    scanned = nn.scan(step, variable_axes={True: 0}, split_rngs={True: True},
                      in_axes=(nn.broadcast,) * (1 + len(args)), length=self.num_blocks)
    y, _ = scanned(self.block(name=SCAN), y, h, *args)
    return y


def find(coll) -> dict[str, Found]:
  """The stacks of one collection by name, in the tree's order."""
  found = {}

  def visit(node, path):
    keys = [str(k) for k in node]
    if SCAN in keys or any(_BLOCK.match(k) for k in keys):
      found[_name(path)] = _located(node, path)
      return
    for k, child in node.items():
      if isinstance(child, Mapping):
        visit(child, path + (k,))
  visit(coll, ())
  return found


def _name(path) -> str:
  return '/'.join(map(str, path))


def _located(node, path) -> Found:
  name, keys = _name(path), sorted(map(str, node))
  if not path:
    raise ValueError(f'the tree itself is laid out as a stack (keys {keys}); nest it under a name')
  if SCAN in keys:
    if keys != [SCAN]:
      raise ValueError(f"stack {name} must hold its scanned blocks under 'scan' and nothing else; got {keys}")
    return Found(name, path, True, _num_layers(node[SCAN], name))
  numbers = sorted(int(m.group(1)) for k in keys if (m := _BLOCK.match(k)))
  if numbers != list(range(len(keys))):
    raise ValueError(f'{name} must hold blocks block0, block1, ... and nothing else; got {keys}')
  if not all(isinstance(node[f'block{i}'], Mapping) for i in numbers):
    raise ValueError(f'the blocks of {name} must be the subtrees (dicts) of their modules')
  return Found(name, path, False, len(numbers))


def _num_layers(scan, name: str) -> int | None:
  axes = sorted({shape(x)[:1] for x in jax.tree.leaves(scan)})
  if len(axes) > 1 or axes == [()]:
    raise ValueError(f'scanned stack {name}: its leaves disagree on the layer count (leading axes '
                     f'{", ".join(str(a[0]) if a else "none (a scalar)" for a in axes)})')
  return axes[0][0] if axes else None


def shape(x) -> tuple[int, ...]:
  return tuple(x.shape) if hasattr(x, 'shape') else np.shape(x)


def list_blocks(node) -> list:
  return [node[f'block{i}'] for i in range(len(node))]


def check_blocks_alike(name: str, blocks, start: int) -> None:
  """Blocks from `start` on must share one structure and shapes: any can take another's place."""
  shapes = [(jax.tree.structure(b), tuple(shape(x) for x in jax.tree.leaves(b))) for b in blocks[start:]]
  if any(s != shapes[0] for s in shapes):
    after = f' after block{start - 1}' if start else ''
    raise ValueError(f'the blocks of {name}{after} do not share one shape')


def is_variables(tree) -> bool:
  return isinstance(tree, Mapping) and bool(tree) and set(tree) <= set(COLLECTIONS)


def check_mapping(tree) -> None:
  if not isinstance(tree, Mapping) or not tree:
    raise ValueError(f'expected a variables tree (a dict), got {type(tree).__name__}')


def first_collection(tree):
  """The tree itself for one collection, else its params (or batch_stats) collection."""
  check_mapping(tree)
  if not is_variables(tree):
    return tree
  for name in COLLECTIONS[:2]:
    if name in tree:
      return tree[name]
  raise ValueError(f'expected a variables tree with params or batch_stats, got only {sorted(tree)}')


def stacks_of(coll) -> dict[str, Found]:
  """find(coll), which must not be empty."""
  found = find(coll)
  if not found:
    raise ValueError("expected a tree with residual stacks (blocks block0, block1, ... like the "
                     "ResNet's stage0, stage1, ..., or one scanned subtree 'scan'); found none among "
                     f'the keys {sorted(map(str, coll))}')
  return found


def stack_sizes(tree) -> dict[str, int | None]:
  """The number of blocks of every stack, by name: {'stage0': 2, 'stage1': 2} or {'encoder': 4}."""
  return {name: f.size for name, f in stacks_of(first_collection(tree)).items()}


def declarations(found: Mapping[str, Found], stacks: Mapping[str, Stack] | None) -> dict[str, Stack]:
  """Every found stack's declaration: the one in `stacks`, else `default_declaration`."""
  stacks = dict(stacks or {})
  unknown = sorted(set(stacks) - set(found))
  if unknown:
    raise ValueError(f'stacks= declares {unknown}, which the tree does not have (its stacks: {sorted(found)})')
  for name, decl in stacks.items():
    if not isinstance(decl, Stack):
      raise ValueError(f'stacks[{name!r}] must be an mlres.Stack, got {type(decl).__name__}')
  out = {name: stacks.get(name) or default_declaration(name) for name in found}
  for name, f in found.items():
    if f.scanned and out[name].transition:
      raise ValueError(f'stack {name} is scanned, so its blocks share one shape: it cannot open with a transition')
  return out


def get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def lookup(tree, path):
  """The subtree at `path`, or None where there is none."""
  for k in path:
    if not isinstance(tree, Mapping) or k not in tree:
      return None
    tree = tree[k]
  return tree


def replace(tree, path, value):
  """The tree with the subtree at `path` replaced (new dicts along the path, the rest shared)."""
  if not path:
    return value
  return {**tree, path[0]: replace(tree[path[0]], path[1:], value)}


def map_stacks(tree, fn: Callable[[Found, Any, Stack, str | None], Any], stacks=None):
  """The tree with every stack `node` of every collection but 'ode' replaced by
  fn(found, node, declaration, collection name or None for a bare tree)."""
  primary = stacks_of(first_collection(tree))
  decls = declarations(primary, stacks)
  colls = {k: v for k, v in tree.items() if k != 'ode'} if is_variables(tree) else {None: tree}
  out = {}
  for key, coll in colls.items():
    for name, f in find(coll).items():
      if f.size is not None and primary.get(name, f).size not in (None, f.size):
        raise ValueError(f"{key}'s stack {name} has {f.size} blocks but the params' has {primary[name].size}")
      coll = replace(coll, f.path, fn(f, get(coll, f.path), decls.get(name) or default_declaration(name), key))
    out[key] = coll
  return out[None] if None in out else {**tree, **out}


def to_scanned(tree, *, stacks: Mapping[str, Stack] | None = None):
  """The tree with every stack in the scanned layout: block leaves stacked on a new leading axis."""
  def scan(f, node, decl, _):
    if f.scanned:
      return node
    if decl.transition:
      raise ValueError(f'cannot scan {f.name}: its block0 changes shape')
    blocks = list_blocks(node)
    check_blocks_alike(f.name, blocks, 0)
    return {SCAN: jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}
  return map_stacks(tree, scan, stacks)


def to_list(tree):
  """The tree with every stack in the list layout: the inverse of `to_scanned`."""
  def unscan(f, node, decl, _):
    if not f.scanned or f.size is None:
      return node
    return {f'block{i}': jax.tree.map(lambda x: x[i], node[SCAN]) for i in range(f.size)}
  return map_stacks(tree, unscan)
