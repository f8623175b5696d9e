"""Pure maps between discretizations of the same ODE: interpolate, coarsen, drop_block.

They act on the structure of a variables tree (full variables, or one collection such as params
or batch_stats), never on its values, so they are jit-able and a tree alone is enough: the block
lists come from the ``stage*/block*`` names, h from ``variables['ode']['h']``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax

COLLECTIONS = ('params', 'batch_stats', 'ode')
_STAGE = re.compile(r'stage(\d+)$')
_BLOCK = re.compile(r'block(\d+)$')


def interpolate(tree):
  """Doubles every stage's blocks and halves h (paper, Fig. 5 and Appendix B).

  The block inserted after block k copies block k, or block k+1 where block k changes shape
  (the stride-2 first block of a stage). The result has the structure, shapes and dtypes of
  `ResNet(stage_sizes=2 * stage_sizes, h=h / 2).init(...)`.
  """
  def refine(stage, blocks):
    out = []
    for k, block in enumerate(blocks):
      if changes_shape(stage, k):
        if k + 1 == len(blocks):
          raise ValueError(f'cannot interpolate stage{stage}: its only block changes shape (stride 2), '
                           'so no block of the right shape exists to copy; give it at least two blocks')
        out += [block, blocks[k + 1]]
      else:
        out += [block, block]
    return out
  return _map(tree, refine, h_factor=0.5)


def coarsen(tree):
  """The restriction back: keeps blocks 0, 2, 4, ... and doubles h; coarsen(interpolate(v)) == v."""
  def restrict(stage, blocks):
    if len(blocks) % 2:
      raise ValueError(f'cannot coarsen stage{stage}: it has {len(blocks)} blocks, an odd number')
    return blocks[::2]
  return _map(tree, restrict, h_factor=2.0)


def drop_block(tree, stage: int, index: int):
  """Removes block `index` (from 0) of stage `stage` (from 0), h unchanged: the lesion of Sec. 3.3.

  By eq. (8) this changes the features after the block by exactly its residual G(Y) = h F(Y).
  A block that changes shape cannot be removed: its shortcut is what makes the shapes fit.
  """
  def lesion(s, blocks):
    if s != stage:
      return blocks
    if not 0 <= index < len(blocks):
      raise ValueError(f'drop_block: stage{s} has blocks 0..{len(blocks) - 1}, got index={index}')
    if len(blocks) == 1:
      raise ValueError(f'drop_block: stage{s} has a single block; a stage cannot be left empty')
    if changes_shape(s, index):
      raise ValueError(f'drop_block: block {index} of stage{s} changes shape and cannot be removed')
    return blocks[:index] + blocks[index + 1:]
  stages = _stage_names(_first_collection(tree))
  if f'stage{stage}' not in stages:
    raise ValueError(f'drop_block: stage={stage} is not one of the tree\'s stages {stages}')
  return _map(tree, lesion, h_factor=1.0)


def architecture(tree) -> dict[str, Any]:
  """What a variables tree discretizes: stage_sizes, widths, num_classes, h (None where absent)."""
  coll = _first_collection(tree)
  stages = [_blocks(coll, s) for s in _stage_names(coll)]
  arch = {
      'stage_sizes': tuple(len(b) for b in stages),
      'widths': tuple(int(jax.tree.leaves(b[-1]['norm2'])[0].shape[-1]) for b in stages),
      'num_classes': None, 'h': None}
  if 'params' in tree:
    arch['num_classes'] = int(tree['params']['head']['bias'].shape[-1])
  elif 'head' in tree:
    arch['num_classes'] = int(tree['head']['bias'].shape[-1])
  if 'ode' in tree:
    arch['h'] = float(tree['ode']['h'])
  return arch


def _is_variables(tree) -> bool:
  return isinstance(tree, Mapping) and bool(tree) and set(tree) <= set(COLLECTIONS)


def _first_collection(tree):
  """The tree itself for one collection, else its params (or batch_stats) collection."""
  _check_mapping(tree)
  if _is_variables(tree):
    for name in ('params', 'batch_stats'):
      if name in tree:
        return tree[name]
    raise ValueError('expected a ResNet variables tree with params or batch_stats, got only '
                     f'{sorted(tree)}')
  return tree


def _map(tree, refine: Callable, h_factor: float):
  """Applies `refine(stage_number, block_list) -> block_list` to every stage of every collection."""
  _check_mapping(tree)
  if not _is_variables(tree):
    return _map_collection(tree, refine)
  out = {name: _map_collection(coll, refine) for name, coll in tree.items() if name != 'ode'}
  if 'ode' in tree:
    out['ode'] = {**tree['ode'], 'h': tree['ode']['h'] * h_factor}
  return out


def _map_collection(coll, refine: Callable):
  out = dict(coll)
  for s, name in enumerate(_stage_names(coll)):
    out[name] = {f'block{i}': b for i, b in enumerate(refine(s, _blocks(coll, name)))}
  return out


def _check_mapping(tree) -> None:
  if not isinstance(tree, Mapping) or not tree:
    raise ValueError(f'expected a ResNet variables tree (a dict), got {type(tree).__name__}')


def _stage_names(coll) -> list[str]:
  stages = sorted((int(m.group(1)) for k in coll if (m := _STAGE.match(str(k)))))
  if not stages or stages != list(range(len(stages))):
    raise ValueError('expected a ResNet variables tree with stages stage0, stage1, ...; '
                     f'got top-level keys {sorted(map(str, coll))}')
  return [f'stage{s}' for s in stages]


def _blocks(coll, stage: str) -> list:
  node = coll[stage]
  numbers = sorted(int(m.group(1)) for k in node if (m := _BLOCK.match(str(k))))
  if not numbers or numbers != list(range(len(node))):
    raise ValueError(f'{stage} must hold blocks block0, block1, ... and nothing else; '
                     f'got {sorted(map(str, node))}')
  blocks = [node[f'block{i}'] for i in numbers]
  if any(not isinstance(b, Mapping) or 'norm1' not in b or 'norm2' not in b for b in blocks):
    raise ValueError(f'the blocks of {stage} are not ResNet blocks (each needs norm1 and norm2)')
  shapes = [_shapes(b) for b in blocks[1:]]
  if any(s != shapes[0] for s in shapes):
    raise ValueError(f'the blocks of {stage} after block0 do not share one shape')
  return blocks


def _shapes(block):
  return jax.tree.structure(block), tuple(jax.numpy.shape(x) for x in jax.tree.leaves(block))


def changes_shape(stage: int, index: int) -> bool:
  """Whether block `index` of stage `stage` changes the feature shape: the first block of every
  stage after the first, which downsamples by stride 2 (model.ResNet). Known by position, not from
  the parameters: with equal widths a stride-2 block has the shapes of any other block."""
  return stage > 0 and index == 0
