"""Function-preserving widening of the ResNet's stages, the ViT's and GPT's width, heads and MLP,
and any declared model, in Linen trees and NNX modules (the optimizer state: mlres.growth.optimizer).

`widen(tree, sizes, operator)` maps a model's variables (one collection, a params-shaped tree, or an
NNX module) to those of the model with the widths `sizes`, leaf by leaf as mlres.growth.width_roles declares
the axes; `width_fields` reads the widths back from the shapes, as mlres.architecture reads the depth,
so ``model.clone(**mlres.width_fields(wider))`` is the wider model. Two operators (OPERATORS):

- ``'clone'`` (Net2WiderNet, HyperCloning): each unit repeated a whole number of times, the weights
  that read it divided by its copy count, so the copies sum to the old weight. The wide model's every
  activation is the narrow one's, each unit repeated: a LayerNorm or RMSNorm sees the statistics of
  the narrow vector (a vector repeated n times has its mean and variance), a batch norm its channel's
  (scale, bias and running statistics copied), attention the same scores (heads copied with the head
  dimension kept; a grown head dimension divides the query by sqrt(copies)). Exact to rounding.
- ``'zero'`` (the new units' outgoing weights zero, their incoming ones copies of old units'): exact
  where no norm's statistics span the new units (the MLP's hidden size, new heads, the ResNet's
  channels, which batch norm treats one by one): they add exact zeros to every sum, so the logits
  agree to the last bit unless XLA groups the longer sums another way (then to an ulp or so). Refused
  for a dim that a ``norm:`` or ``query:`` role spans (the transformers' width and head dimension).

The ResNet's stride-2 shortcut zero-pads stage k-1's channels into stage k's first ones. Widened, it
carries the wide stage k-1 into the first channels of the wide stage k, so stage k's units are laid
out as stage k-1's (each unit's copies side by side) followed by its own padded channels' copies:
exact for any integer factors whose padded channels get a whole number of copies each.

**Symmetry.** Copies stay copies: the copies of a unit compute the same value and reach the loss
through equal weights (the divided ones), so they receive the same backpropagated signal; their
incoming weights then get equal gradients (equal signal times equal inputs) and their outgoing ones
too (equal values times the same signal). SGD's and Adam's updates are elementwise functions of the
gradient and the state, equal for equal entries, so the copies stay equal at every step: n copies
train as one unit. `widen(seed=...)` breaks this without changing the function: each divided weight
is split unevenly among its copies, (1 + e_k) / n with the e_k of the copies summing to zero, so they
still sum to the old weight, and the copies reach the loss through different weights and drift apart.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mlres.growth import nnx_trees, stacks as stacks_lib, width_roles
from mlres.growth.width_roles import Roles

OPERATORS = ('clone', 'zero')
_SKIPPED = ('ode', stacks_lib.CARRIED)  # step sizes, RNG state: no width


@dataclasses.dataclass(frozen=True)
class _Dim:
  """How one dim widens: new unit j copies old unit src[j]; count[j] units copy that one (clone);
  new[j]: a new unit (zero)."""
  src: np.ndarray
  count: np.ndarray
  new: np.ndarray

  def scale(self, kind: str, operator: str, power: int) -> np.ndarray | None:
    """The factor of each entry along an axis of this role: the weights' (power 0) or the gradient's
    to that power (the dual: 1 / (count x the weights'))."""
    if operator == 'zero':
      keep = (~self.new).astype(float)
      return keep if power or kind == 'in' else None
    weight = {'out': 1.0, 'norm': 1.0, 'in': 1 / self.count, 'query': 1 / np.sqrt(self.count)}[kind]
    s = weight if power == 0 else (1 / (self.count * weight)) ** power
    return None if np.all(s == 1) else s * np.ones(len(self.src))


def _dim(operator: str, w: int, new_w: int) -> _Dim:
  if operator == 'clone':
    n = new_w // w
    return _Dim(np.repeat(np.arange(w), n), np.full(new_w, n), np.zeros(new_w, bool))
  return _Dim(np.arange(new_w) % w, np.ones(new_w, int), np.arange(new_w) >= w)


def _resnet_dims(operator: str, old, new) -> dict[str, _Dim]:
  """Stage k's units: the shortcut's, laid out as stage k-1's, then its own padded channels'."""
  out, prev = {}, None
  for s in range(len(old)):
    name, w, new_w = f'stage{s}', old[f'stage{s}'], new[f'stage{s}']
    if prev is None:
      out[name] = _dim(operator, w, new_w)
    else:
      pw, pdim = old[f'stage{s - 1}'], prev
      own, room = w - pw, new_w - len(pdim.src)
      if room < own or (operator == 'clone' and (room % own if own else room)):
        raise ValueError(f'widen: widths: stage{s} of width {new_w} has {room} channels beside the '
                         f'{len(pdim.src)} its shortcut carries from stage{s - 1}, which {own} old channel(s) '
                         'cannot fill' + (' equally' if operator == 'clone' else ''))
      if operator == 'clone':
        src = np.concatenate([pdim.src, np.repeat(np.arange(pw, w), room // own if own else 0)])
        out[name] = _Dim(src, np.bincount(src, minlength=w)[src], np.zeros(new_w, bool))
      else:
        src = np.concatenate([pdim.src, np.arange(pw, w), np.arange(room - own) % w])
        out[name] = _Dim(src, np.ones(new_w, int), np.concatenate([pdim.new, np.zeros(own, bool),
                                                                     np.ones(room - own, bool)]))
    prev = out[name]
  return out


def _leaves(tree):
  """(collection, path, the path without its stack's block key, leading layer axes, leaf) of every
  array leaf that may hold a width."""
  colls = {k: v for k, v in tree.items() if k not in _SKIPPED} if stacks_lib.is_variables(tree) else {None: tree}
  for coll_name, coll in colls.items():
    found = {f.path: f for f in stacks_lib.find(coll).values()} if isinstance(coll, Mapping) else {}
    for kp, x in jax.tree_util.tree_flatten_with_path(coll)[0]:
      path = tuple(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in kp)
      stack = next((f for p, f in found.items() if path[:len(p)] == tuple(map(str, p))), None)
      cut = len(stack.path) if stack else None
      stripped = path if stack is None else path[:cut] + path[cut + 1:]
      yield coll_name, path, stripped, int(bool(stack and stack.scanned)), x


def _read(tree, roles: Roles) -> tuple[dict[str, int], list]:
  """The size of every dim, and each leaf with its roles; one-line errors for an undeclared leaf or
  leaves that disagree on a dim's size."""
  sizes, seen, leaves = {}, {}, []
  for coll, path, stripped, lead, x in _leaves(tree):
    name = '/'.join(((coll,) if coll else ()) + path)
    axes = width_roles.roles_of(roles, path, stripped)
    if axes is None:
      raise ValueError(f"widen: {name} has no role in the declaration: declare its axes, e.g. "
                       f"{{'{'/'.join(stripped)}': (None, 'width')}}, or () to keep it")
    if len(axes) > np.ndim(x) - lead:
      raise ValueError(f'widen: {name} has {np.ndim(x) - lead} axes, its roles {axes} name {len(axes)}')
    for i, role in enumerate(axes):
      if role:
        _, dim = width_roles.parse(role)
        size = np.shape(x)[np.ndim(x) - len(axes) + i]
        if sizes.setdefault(dim, size) != size:
          raise ValueError(f'widen: {name} gives {dim} the size {size}, {seen[dim]} gives it {sizes[dim]}')
        seen.setdefault(dim, name)
    leaves.append((name, axes))
  return sizes, leaves


def _plan(tree, sizes, operator, roles):
  """(the roles, the _Dim of every dim that grows), after every check."""
  _check_operator(operator)
  roles, family = width_roles.declaration(stacks_lib.first_collection(tree), roles)
  old, leaves = _read(tree, roles)
  new = width_roles.dims(family, old, sizes)
  return roles, _dims(family, old, new, operator, leaves)


def check_fields(before, after, operator: str = 'clone') -> None:
  """What `widen` would refuse, from the fields alone: a ViT's or GPT's {'width', 'num_heads',
  'mlp_dim'} or a ResNet's {'widths'} (`before`) widened by `operator` to `after`, the new values of
  some of them. Raises ValueError in one line naming the field, as `widen` does."""
  _check_operator(operator)
  family = 'resnet' if 'widths' in before else 'transformer'
  roles = width_roles.resnet(len(before['widths'])) if family == 'resnet' else width_roles.TRANSFORMER
  old = width_roles.family_dims(family, before)
  _dims(family, old, width_roles.dims(family, old, after), operator, roles.leaves.items())


def _check_operator(operator: str) -> None:
  if operator not in OPERATORS:
    raise ValueError(f'widen: operator={operator!r}: expected one of {", ".join(map(repr, OPERATORS))}')


def _dims(family: str, old, new, operator: str, leaves) -> dict[str, _Dim]:
  """The _Dim of every dim that grows from `old` to `new` (sizes by dim), after every check; `leaves`
  are (name, roles) of the leaves that a norm or a query may span."""
  field = lambda d: 'widths' if family == 'resnet' else 'num_heads' if d == 'head_dim' else d
  for d, n in new.items():
    if n < old[d]:
      raise ValueError(f'widen: {field(d)}: {d} would shrink from {old[d]} to {n}; widen only grows')
    if operator == 'clone' and n % old[d]:
      raise ValueError(f'widen: {field(d)}: clone repeats each unit a whole number of times, and {n} is not '
                       f'a multiple of {d}={old[d]}')
    spans = [name for name, axes in leaves for a in axes
             if a and width_roles.parse(a) in (('norm', d), ('query', d))]
    if operator == 'zero' and n > old[d] and spans:
      raise ValueError(f'widen: zero would not be exact for {field(d)}: {spans[0]} spans {d} (a norm\'s '
                       "statistics, attention's scores), so it would see the new units; use 'clone'")
  grown = {d for d in new if new[d] != old[d]}
  if family == 'resnet' and grown:
    dims = _resnet_dims(operator, old, new)
  else:
    dims = {d: _dim(operator, old[d], new[d]) for d in grown}
  return {d: dims[d] for d in grown}


def _grown(axes, dims, ndim):
  """(axis, kind, _Dim) of each axis of a leaf whose dim grows."""
  out = []
  for i, role in enumerate(axes):
    kind, d = width_roles.parse(role) if role else (None, None)
    if d in dims:
      out.append((ndim - len(axes) + i, kind, dims[d]))
  return out


def _runs(src: np.ndarray) -> list[tuple[int, int, int]]:
  """src as runs (a, b, k): old units a..b-1, each repeated k times."""
  runs, i = [], 0
  while i < len(src):
    k = int(np.argmax(np.append(src[i:] != src[i], True)))
    b = src[i] + 1
    while i + (b - src[i] + 1) * k <= len(src) and np.all(src[i + (b - src[i]) * k:][:k] == b):
      b += 1
    runs.append((int(src[i]), int(b), k))
    i += (b - src[i]) * k
  return runs


def _take(x, src, ax):
  """x[..., src, ...] along axis ax by slices and repeats: a fraction of a gather's compile time."""
  parts = [jnp.repeat(jax.lax.slice_in_dim(x, a, b, axis=ax), k, axis=ax) for a, b, k in _runs(src)]
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=ax)


def _leaf(x, axes, dims, operator, power, shares=None):
  for ax, kind, dim in _grown(axes, dims, x.ndim):
    x = _take(x, dim.src, ax)
    s = dim.scale(kind, operator, power)
    if s is not None:
      x = x * jnp.asarray(s, x.dtype).reshape((-1,) + (1,) * (x.ndim - ax - 1))
  return x if shares is None else x * shares.astype(x.dtype)


def _shares(shape, axes, dims, noise, rng):
  """clone's uneven split, (1 + e_k) where n copies would take 1 / n each, along a leaf's first grown
  axis that reads (in, query): the e_k of each unit's copies sum to zero. None for a leaf without one."""
  grown = _grown(axes, dims, len(shape))
  new_shape = list(shape)
  for ax, _, dim in grown:
    new_shape[ax] = len(dim.src)
  ax, dim = next(((ax, dim) for ax, kind, dim in grown if kind in ('in', 'query') and dim.count.max() > 1),
                 (None, None))
  if dim is None:
    return None
  e = np.moveaxis(noise * rng.standard_normal(new_shape), ax, 0)
  sums = np.zeros((int(dim.src.max()) + 1,) + e.shape[1:])
  np.add.at(sums, dim.src, e)
  e = e - sums[dim.src] / dim.count.reshape((-1,) + (1,) * (e.ndim - 1))
  return 1 + np.moveaxis(e, 0, ax)


def widen(tree, sizes: Mapping[str, Any], operator: str = 'clone', *, roles: Roles | None = None,
          seed: int | None = None, noise: float = 0.1, moment: int = 0, stacks=None):
  """The variables of the model whose widths are `sizes` (the new values of some of its fields:
  ``{'widths': (8, 16)}`` for a ResNet; any of ``width``, ``num_heads``, ``mlp_dim`` for a ViT or GPT,
  heads following the width with the head dimension kept unless given; a declared model's dims).

  tree: full variables, one collection, a params-shaped tree, or an NNX module (a new module comes
  back, the input untouched). roles: the declaration (mlres.Roles; an NNX module's own `roles` by
  default; none for the three families). operator: 'clone' or 'zero' (module docstring). seed: clone
  splits each divided weight unevenly among its copies, e_k ~ noise x N(0, 1) less the copies' mean, to
  break their symmetry; the function is kept. moment: 0 for weights, 1 for a tree of gradients' sums
  (SGD's momentum, Adam's mu), 2 for one of squares (Adam's nu): mlres.growth.optimizer says why. stacks:
  an NNX module's stacks, else its own `stacks` where it has them.
  """
  if nnx_trees.is_nnx(tree):
    return _widen_nnx(tree, sizes, operator, roles, seed, noise, moment, stacks)
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
    raise ValueError(f'widen: seed={seed!r}: a non-negative integer, or None for exact copies')
  if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise >= 0:
    raise ValueError(f'widen: noise={noise!r}: a non-negative number, the spread of the copies\' shares')
  if seed is not None and (operator != 'clone' or moment):
    raise ValueError(f"widen: seed={seed!r} breaks the symmetry of clone's copies in the weights; "
                     f"not for operator {operator!r} or moment={moment}")
  if moment not in (0, 1, 2):
    raise ValueError(f'widen: moment={moment!r}: 0 (weights), 1 (sums of gradients) or 2 (of their squares)')
  roles, dims = _plan(tree, sizes, operator, roles)
  keys, xs, shares, plans = [], [], [], []
  for coll, path, stripped, _, x in _leaves(tree):
    axes = width_roles.roles_of(roles, path, stripped)
    if _grown(axes, dims, np.ndim(x)):
      rng = None if seed is None else np.random.default_rng([seed, zlib.crc32('/'.join(path).encode())])
      keys.append((coll, path))
      xs.append(x)
      plans.append(axes)
      shares.append(None if rng is None else _shares(np.shape(x), axes, dims, noise, rng))
  # One program for all the leaves: eagerly, each gather and product would compile on its own.
  def widen_leaves(xs, shares):
    return [_leaf(x, axes, dims, operator, moment, s) for x, axes, s in zip(xs, plans, shares)]
  grown = jax.jit(widen_leaves)(xs, shares)
  return _rebuild(tree, dict(zip(keys, grown)))


def _rebuild(tree, mapped):
  def visit(node, coll, path):
    if isinstance(node, Mapping):
      return {k: visit(v, coll, path + (str(k),)) for k, v in node.items()}
    return mapped.get((coll, path), node)
  if stacks_lib.is_variables(tree):
    return {k: v if k in _SKIPPED else visit(v, k, ()) for k, v in tree.items()}
  return visit(tree, None, ())


def width_fields(tree, *, roles: Roles | None = None, stacks=None) -> dict:
  """The widths of a tree or an NNX module, read from its shapes: a ResNet's {'widths': (...)}, a
  ViT's or GPT's {'width', 'num_heads', 'mlp_dim'}, a declared model's {dim: size}."""
  if nnx_trees.is_nnx(tree):
    roles = roles if roles is not None else getattr(tree, 'roles', None)
    tree = nnx_trees.variables(tree, stacks) if _stacks(tree, stacks) else _pure(tree)
  roles, family = width_roles.declaration(stacks_lib.first_collection(tree), roles)
  return width_roles.fields(family, _read(tree, roles)[0])


def _stacks(module, stacks) -> bool:
  return bool(stacks if stacks is not None else getattr(module, 'stacks', None))


def _pure(module):
  """An NNX module without declared stacks as collections of pure dicts."""
  return {name: p for name, kind in (('params', nnx.Param), ('batch_stats', nnx.BatchStat))
          if (p := nnx.to_pure_dict(nnx.state(module, kind)))}


def _widen_nnx(module, sizes, operator, roles, seed, noise, moment, stacks):
  roles = roles if roles is not None else getattr(module, 'roles', None)
  def fn(colls, _=None):
    part = {k: colls[k] for k in ('params', 'batch_stats') if k in colls}
    return {**colls, **widen(part, sizes, operator, roles=roles, seed=seed, noise=noise, moment=moment)}
  if _stacks(module, stacks):
    wide = nnx_trees.map_nnx(module, fn, 1.0, stacks)
  else:
    wide = nnx.clone(module)
    for name, kind in (('params', nnx.Param), ('batch_stats', nnx.BatchStat)):
      state = nnx.state(wide, kind)
      if name in (grown := fn(_pure(module))):
        nnx.replace_by_pure_dict(state, grown[name])
        nnx.update(wide, state)
  _refit(wide)
  return wide


def _refit(module) -> None:
  """Flax's layers keep their sizes in attributes, which a forward pass checks: set from the shapes."""
  for _, m in nnx.iter_modules(module):
    if isinstance(m, nnx.MultiHeadAttention):
      m.in_features, m.num_heads, m.head_dim = m.query.kernel.shape[-3:]
      m.in_kv_features, m.num_kv_heads = m.key.kernel.shape[-3:-1]
      m.qkv_features, m.out_features = m.num_heads * m.head_dim, m.out.kernel.shape[-1]
    elif isinstance(m, nnx.LinearGeneral):
      n_in, n_out = len(m.in_features), len(m.out_features)
      shape = m.kernel.shape[m.kernel.ndim - n_in - n_out:]
      m.in_features, m.out_features = tuple(shape[:n_in]), tuple(shape[n_in:])
    elif isinstance(m, (nnx.Linear, nnx.Conv)):
      m.in_features = m.kernel.shape[-2] * getattr(m, 'feature_group_count', 1)
      m.out_features = m.kernel.shape[-1]
    elif isinstance(m, nnx.Embed):
      m.num_embeddings, m.features = m.embedding.shape[-2:]
    elif isinstance(m, (nnx.LayerNorm, nnx.RMSNorm, nnx.BatchNorm)):
      held = next(v for a in ('scale', 'bias', 'mean') if (v := getattr(m, a, None)) is not None)
      m.num_features = held.shape[-1]
