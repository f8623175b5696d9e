"""Which axes of which leaves are a model's widths: the declaration that mlres.widen reads.

A *width* (a dim) is a named set of units: the ResNet's channels of stage k (``stage<k>``), the ViT's
and GPT's residual width (``width``), heads (``num_heads``), head dimension (``head_dim``) and MLP
hidden size (``mlp_dim``), or any name of a model of your own. A `Roles` gives every leaf the role of
each of its trailing axes:

- ``'width'``: the axis lists units of the dim, one entry per unit (a layer's outputs, its bias, an
  embedding, a batch norm's per-channel scale, bias and running statistics): copied with its unit;
- ``'in:width'``: the axis reads the dim (a kernel's input axis): under ``clone`` divided by the
  number of copies of its unit, so that the copies sum to the weight; under ``zero`` zero for new units;
- ``'norm:width'``: a LayerNorm's or RMSNorm's scale or bias, whose statistics span the dim: copied,
  exact under ``clone`` (a vector repeated n times has the mean and variance of the vector) and never
  under ``zero``, whose new units the statistics would see;
- ``'query:head_dim'``: the query's head axis of dot-product attention, contracted with the key's under
  a 1/sqrt(size) scale: copied and divided by sqrt(copies), so that q·k/sqrt(d) is kept;
- ``None``: kept (the classes of a head, a kernel's spatial axes).

Axes before the named ones are kept: a scanned stack's layer axis, and any leading axis a role does
not name. A leaf is named by its path with '/' (``'head/kernel'``); in a residual stack
(mlres.growth.stacks) without the block's key, so one entry serves every block of either layout
(``'encoder/mlp1/kernel'``); the path with the key (``'stage1/block0/conv1/kernel'``) takes
precedence, for a block of another shape. ``*`` matches any one key. Batch statistics are named like
the params (``'norm1/mean'``). A leaf without a role is refused in one line naming it; ``()`` keeps
one whole.

The three families need no declaration: `declaration` recognises a ResNet tree (stacks stage0,
stage1, ...) and a ViT's or GPT's (one stack ``encoder`` or ``decoder`` of attention blocks) by its
names, as mlres.growth.stacks recognises their stacks, and `fields` / `dims` translate between a family's
model fields (``widths``; ``width``, ``num_heads``, ``mlp_dim``) and its dims. No family ties its head
to its embedding (the GPT's docstring says why); a model of your own that does declares the final
norm's scale and bias as ``'in:width'``, so that the repeated embedding's logits are divided back
(HyperCloning's 1/n).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

from mlres.growth import stacks as stacks_lib

KINDS = ('out', 'in', 'norm', 'query')
_ROLE = re.compile(r'(?:(in|norm|query):)?([A-Za-z_][A-Za-z0-9_]*)$')


@dataclasses.dataclass(frozen=True)
class Roles:
  """A model's declaration of its widths: {leaf path: the roles of its trailing axes} (module docstring).

  Example, a residual MLP with a stream `width` and a `hidden` size:
  ``Roles({'embed/kernel': (None, 'width'), 'embed/bias': ('width',), 'body/norm/scale': ('norm:width',),
  'body/dense1/kernel': ('in:width', 'hidden'), ..., 'head/kernel': ('in:width', None), 'head/bias': ()})``
  """
  leaves: Mapping[str, tuple]

  def __post_init__(self):
    if not isinstance(self.leaves, Mapping) or not self.leaves:
      raise ValueError(f'Roles(leaves={self.leaves!r}): give {{leaf path: axis roles}}, such as '
                       "{'dense/kernel': ('in:width', 'hidden')}")
    leaves = {}
    for path, axes in self.leaves.items():
      if not isinstance(path, str) or not path or isinstance(axes, str) or not isinstance(axes, (tuple, list)):
        raise ValueError(f'Roles: {path!r}: {axes!r} is not a leaf path and a tuple of axis roles')
      for a in axes:
        if a is not None and not (isinstance(a, str) and _ROLE.match(a)):
          raise ValueError(f"Roles: {path}: axis role {a!r} is none of 'dim', 'in:dim', 'norm:dim', "
                           "'query:dim' or None")
      leaves[path] = tuple(axes)
    object.__setattr__(self, 'leaves', leaves)

  @property
  def dims(self) -> tuple[str, ...]:
    """The dims it names, in order of first appearance."""
    return tuple(dict.fromkeys(parse(a)[1] for axes in self.leaves.values() for a in axes if a))


def parse(role: str) -> tuple[str, str]:
  """(kind, dim) of an axis role: ('out', 'width') of 'width', ('in', 'width') of 'in:width'."""
  kind, dim = _ROLE.match(role).groups()
  return kind or 'out', dim


def roles_of(roles: Roles, path: tuple[str, ...], stripped: tuple[str, ...]) -> tuple | None:
  """The roles of a leaf at `path` (`stripped`: without its stack's block key), None if undeclared."""
  for p in (path, stripped):
    if '/'.join(p) in roles.leaves:
      return roles.leaves['/'.join(p)]
  for key, axes in roles.leaves.items():
    parts = key.split('/')
    if '*' in parts and any(len(p) == len(parts) and all(k in ('*', s) for k, s in zip(parts, p))
                            for p in (path, stripped)):
      return axes
  return None


def resnet(num_stages: int) -> Roles:
  """The ResNet's (mlres.model): a stage's residual stream and its blocks' inner channels are one dim,
  stage<k>; block 0 of a later stage reads the stage before, through its norm1 and strided conv1."""
  last = f'stage{num_stages - 1}'
  bn = lambda prefix, dim: {f'{prefix}/{leaf}': (dim,) for leaf in ('scale', 'bias', 'mean', 'var')}
  leaves = {'stem/kernel': (None, None, None, 'stage0'), **bn('norm', last),
            'head/kernel': (f'in:{last}', None), 'head/bias': ()}
  for s in range(num_stages):
    stage, prev = f'stage{s}', f'stage{max(s - 1, 0)}'
    leaves.update({**bn(f'{stage}/norm1', stage), **bn(f'{stage}/norm2', stage),
                   f'{stage}/conv1/kernel': (None, None, f'in:{stage}', stage),
                   f'{stage}/conv2/kernel': (None, None, f'in:{stage}', stage),
                   **bn(f'{stage}/block0/norm1', prev),
                   f'{stage}/block0/conv1/kernel': (None, None, f'in:{prev}', stage)})
  return Roles(leaves)


_ATTN = {'query': 'query:head_dim', 'key': 'head_dim', 'value': 'head_dim'}
# The ViT's and the GPT's (mlres.transformer): heads of a kept or grown head dimension, as Flax's
# attention takes width / num_heads features per head.
TRANSFORMER = Roles({
    'embed/kernel': (None, None, None, 'width'), 'embed/bias': ('width',), 'embed/embedding': (None, 'width'),
    'pos_embed': (None, 'width'),
    **{f'*/norm{i}/{leaf}': ('norm:width',) for i in (1, 2) for leaf in ('scale', 'bias')},
    **{f'*/attn/{name}/kernel': ('in:width', 'num_heads', role) for name, role in _ATTN.items()},
    **{f'*/attn/{name}/bias': ('num_heads', role) for name, role in _ATTN.items()},
    '*/attn/out/kernel': ('in:num_heads', 'in:head_dim', 'width'), '*/attn/out/bias': ('width',),
    '*/mlp1/kernel': ('in:width', 'mlp_dim'), '*/mlp1/bias': ('mlp_dim',),
    '*/mlp2/kernel': ('in:mlp_dim', 'width'), '*/mlp2/bias': ('width',),
    'norm/scale': ('norm:width',), 'norm/bias': ('norm:width',),
    'head/kernel': ('in:width', None), 'head/bias': ()})


def declaration(coll, roles: Roles | None) -> tuple[Roles, str]:
  """(the roles, the family: 'resnet', 'transformer' or 'declared') of a collection's tree."""
  if roles is not None:
    if not isinstance(roles, Roles):
      raise ValueError(f'roles= must be an mlres.Roles, got {type(roles).__name__}')
    return roles, 'declared'
  found = stacks_lib.find(coll)
  blocks = {name: stacks_lib.get(coll, f.path) for name, f in found.items()}
  first = {name: b[stacks_lib.SCAN] if f.scanned else b.get('block0', {}) for (name, f), b in
           zip(found.items(), blocks.values())}
  stages = [f'stage{s}' for s in range(len(found))]
  if found and set(found) == set(stages) and all(not f.scanned and 'norm2' in first[n]
                                                 for n, f in found.items()):
    return resnet(len(stages)), 'resnet'
  if len(found) == 1 and set(found) <= {'encoder', 'decoder'} and 'attn' in next(iter(first.values())):
    return TRANSFORMER, 'transformer'
  raise ValueError(f'widen: which axes are widths is not known for a tree with stacks {sorted(found)}: '
                   'declare them, roles=mlres.Roles({leaf path: axis roles})')


def fields(family: str, dims: Mapping[str, int]) -> dict:
  """A family's model fields of its dims' sizes: {'widths': (...)} for the ResNet, {'width',
  'num_heads', 'mlp_dim'} for the ViT and the GPT, the dims themselves for a declared model."""
  if family == 'resnet':
    return {'widths': tuple(dims[f'stage{s}'] for s in range(len(dims)))}
  if family == 'transformer':
    return {k: dims[k] for k in ('width', 'num_heads', 'mlp_dim')}
  return dict(dims)


def family_dims(family: str, fields: Mapping) -> dict[str, int]:
  """The dims of a family's fields (the inverse of `fields`): a ResNet's stage<k> of its widths, a
  ViT's or GPT's width, num_heads, head_dim and mlp_dim."""
  if family == 'resnet':
    return {f'stage{s}': int(w) for s, w in enumerate(fields['widths'])}
  width, heads = int(fields['width']), int(fields['num_heads'])
  return {'width': width, 'num_heads': heads, 'head_dim': width // heads, 'mlp_dim': int(fields['mlp_dim'])}


def dims(family: str, old: Mapping[str, int], sizes: Mapping) -> dict[str, int]:
  """The new size of every dim for `sizes`, the new values of some of the family's fields; one-line
  errors naming the field."""
  current = fields(family, old)
  if not isinstance(sizes, Mapping):
    raise ValueError(f'widen: sizes={sizes!r}: give the new fields as a dict, such as {current}')
  for name, value in sizes.items():
    if name not in current:
      raise ValueError(f'widen: {name!r} is not a width of this model: its widths are {current}')
    values = tuple(value) if family == 'resnet' and isinstance(value, (tuple, list)) else (value,)
    if family == 'resnet' and len(values) != len(current['widths']):
      raise ValueError(f'widen: widths={value!r}: give one width per stage, {len(current["widths"])}')
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
      plural = 's' if family == 'resnet' else ''
      raise ValueError(f'widen: {name}={value!r}: must be a positive integer{plural}')
  if family == 'resnet':
    return {f'stage{s}': w for s, w in enumerate(sizes.get('widths', current['widths']))}
  if family == 'declared':
    return {**old, **sizes}
  width = sizes.get('width', old['width'])
  if 'num_heads' in sizes:
    heads = sizes['num_heads']
    if width % heads:
      raise ValueError(f'widen: num_heads={heads} does not divide width={width}: each head takes '
                       'width / num_heads features')
  elif width % old['head_dim']:
    raise ValueError(f"widen: width={width} is not a multiple of the head dimension {old['head_dim']}, which "
                     'num_heads keeps when not given: give num_heads, a divisor of the width')
  else:
    heads = width // old['head_dim']
  if width // heads < old['head_dim']:
    raise ValueError(f"widen: num_heads={heads} at width={width} shrinks the head dimension from "
                     f"{old['head_dim']} to {width // heads}: heads grow with the head dimension kept or grown")
  return {'width': width, 'num_heads': heads, 'head_dim': width // heads,
          'mlp_dim': sizes.get('mlp_dim', old['mlp_dim'])}
