"""Width growth (mlres.widen): clone keeps the logits of every family, layout and API to rounding in
float64, zero too where it applies, copies stay copies unless a seed splits them, the optimizer state
is mapped as the gradient and keeps the structure of a fresh one, and bad input gets one line.
Weights are smooth patterns in place of a random init, whose compiles would cost the most."""
import collections
import functools
import zlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mlres
from mlres.growth import width_roles

F64 = jnp.float64
IMAGES = np.cos(np.arange(2 * 8 * 8 * 3.0)).reshape(2, 8, 8, 3)
TOKENS = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])


def pattern(path, shape, dtype=F64, positive=False):
  """A distinct smooth pattern per leaf: scales and variances (or all, where positive) around 1,
  the rest around 0."""
  k = zlib.crc32(jax.tree_util.keystr(path).encode()) % 97
  x = 0.5 * np.sin(np.arange(int(np.prod(shape))) * 0.9 + k).reshape(shape)
  return (x + (positive or str(getattr(path[-1], 'key', '')) in ('scale', 'var'))).astype(dtype)


def filled(tree):
  """Every array leaf of a tree (or of jax.eval_shape's) as its pattern, a float64 numpy array (the
  tests' own arithmetic stays on the host: an eager jnp op would compile for each shape); h = 1."""
  def fill(path, x):
    return np.float64(1.0) if x.ndim == 0 else pattern(path, x.shape)
  return jax.tree_util.tree_map_with_path(fill, tree)


def linen(model, x):
  """The model's variables as patterns (no init run) and its float64 logits before the cast to float32."""
  return filled(jax.eval_shape(model.init, jax.random.key(0), x))


# Compiled without XLA's backend optimizations: half the compile time of these tiny programs, which
# is most of this file's time; every comparison here is in float64, so rounding is far below it.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def logits(model, variables, x, train=False):
  """The logits in float64: the head's output where there is one (the families cast theirs to
  float32), else the model's; and the batch statistics a training step updated."""
  out, state = model.apply(variables, x, train=train, mutable=['intermediates'] + ['batch_stats'] * train,
                           capture_intermediates=lambda m, _: m.name == 'head')
  head = state.get('intermediates', {}).get('head')
  return out if head is None else head['__call__'][0], state.get('batch_stats')


@functools.lru_cache(maxsize=None)
def logits_fn(model, train=False, optimize=False):
  """The logits in evaluation and, with train=True, those of a training step and the batch statistics
  it updated; compiled once per model, at XLA's default optimization where `optimize`."""
  run = lambda v, x: (logits(model, v, x)[0], *(logits(model, v, x, True) if train else ()))
  return jax.jit(run) if optimize else jit(run)


def assert_same(a, b, tol=1e-12):
  """The largest difference of two arrays of logits relative to the largest logit (or 1), <= tol."""
  a, b = np.asarray(a), np.asarray(b)  # on the host: an eager jnp op would compile for each shape
  diff = float(np.abs(a - b).max()) / max(1.0, float(np.abs(a).max()))
  assert diff <= tol, diff
  return diff


def clone_diff(model, variables, x, sizes, train=False, roles=None, **kw):
  """(the relative logits difference (assert_same), in evaluation and with train=True in a training
  step too, the wide model, its variables) of widen(variables, sizes)."""
  wide = mlres.widen(variables, sizes, roles=roles, **kw)
  wide_model = model.clone(**mlres.width_fields(wide, roles=roles))
  narrow, wider = logits_fn(model, train)(variables, x), logits_fn(wide_model, train)(wide, x)
  if train:  # the batch statistics of the wide batch are the narrow ones, copied per channel
    chex.assert_trees_all_close(mlres.widen({'batch_stats': narrow[2]}, sizes), {'batch_stats': wider[2]},
                                atol=1e-12, rtol=0)
  return max(assert_same(a, b) for a, b in zip(narrow[:2], wider[:2])), wide_model, wide


RESNETS = {  # (stage sizes, widths, new widths)
    # Factors 3, 2, 3: stage1 has 12 channels from its shortcut beside its own 4 (1 copy each), stage2
    # 16 beside its own 8 (4 copies each).
    'resnet': ((1, 2, 1), (4, 8, 16), (12, 16, 48)),
    'wide-resnet': ((1, 1, 1), mlres.RESNET_WIDTHS, mlres.WIDE_RESNET_WIDTHS),
}


@pytest.mark.parametrize('name', RESNETS)
def test_clone_keeps_the_resnets_logits_through_the_padded_shortcuts(name):
  stage_sizes, widths, new = RESNETS[name]
  with jax.enable_x64(True):
    model = mlres.ResNet(stage_sizes=stage_sizes, widths=widths, num_classes=5, dtype=F64)
    variables = linen(model, IMAGES)
    train = name == 'resnet'  # evaluation, and a training step: the batch statistics too
    diff, wide_model, _ = clone_diff(model, variables, IMAGES, {'widths': new}, train=train)
    print(f'\n{name} {widths} -> {new}: relative logit difference {diff:.2e}')
    assert wide_model.widths == new


def transformer(family, scan, **fields):
  fields = {'num_blocks': 2, 'width': 8, 'num_heads': 2, 'mlp_dim': 16, 'scan_blocks': scan, 'dtype': F64,
            **fields}
  if family == 'vit':
    return mlres.ViT(patch_size=4, num_classes=5, **fields), IMAGES
  return mlres.GPT(context=8, vocab_size=11, **fields), TOKENS


# The ViT's and the GPT's widenings: heads following the width with the head dimension kept; heads
# given, the head dimension grown; all three, each by its own factor.
SIZES = {'vit-list': {'width': 16}, 'vit-scan': {'width': 16, 'num_heads': 2, 'mlp_dim': 48},
         'gpt-list': {'width': 24, 'num_heads': 6, 'mlp_dim': 32},
         'gpt-scan': {'width': 16, 'num_heads': 2, 'mlp_dim': 48}}


@pytest.mark.parametrize('layout', ['list', 'scan'])
@pytest.mark.parametrize('family', ['vit', 'gpt'])
def test_clone_keeps_the_transformers_logits(family, layout):
  with jax.enable_x64(True):
    model, x = transformer(family, layout == 'scan')
    variables = linen(model, x)
    sizes = SIZES[f'{family}-{layout}']
    diff, wide_model, wide = clone_diff(model, variables, x, sizes)
    print(f'\n{family} {layout} {sizes} -> {mlres.width_fields(wide)}: relative logit difference {diff:.2e}')
    if family == 'gpt':  # causality kept: no logit of the wide GPT sees a later token
      later = np.concatenate([x[:, :4], np.full_like(x[:, 4:], 7)], axis=1)
      a, b = logits_fn(wide_model)(wide, x)[0], logits_fn(wide_model)(wide, later)[0]
      np.testing.assert_array_equal(a[:, :4], b[:, :4])
      assert float(np.abs(np.asarray(a[:, 4:] - b[:, 4:])).max()) > 1e-3


class MlpBlock(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, y, h):
    f = nn.gelu(nn.Dense(self.hidden, name='dense1')(nn.LayerNorm(name='norm')(y)))
    return y + h * nn.Dense(y.shape[-1], name='dense2')(f)


class TiedLM(nn.Module):
  """The tests' own declared model: a residual MLP over tokens whose head is its embedding, tied."""
  num_blocks: int = 2
  width: int = 6
  hidden: int = 10
  scan: bool = False

  stacks = {'body': mlres.Stack(zero=('dense2',))}
  roles = mlres.Roles({
      'embed/embedding': (None, 'width'),
      'body/norm/scale': ('norm:width',), 'body/norm/bias': ('norm:width',),
      'body/dense1/kernel': ('in:width', 'hidden'), 'body/dense1/bias': ('hidden',),
      'body/dense2/kernel': ('in:hidden', 'width'), 'body/dense2/bias': ('width',),
      'norm/scale': ('in:width',), 'norm/bias': ('in:width',)})  # the tied head's 1/n

  @nn.compact
  def __call__(self, tokens, train=False):
    h = self.variable('ode', 'h', lambda: jnp.asarray(0.5)).value
    embed = nn.Embed(11, self.width, name='embed', param_dtype=F64)
    y = embed(tokens)
    y = mlres.ResidualStack(functools.partial(MlpBlock, self.hidden), self.num_blocks, scan=self.scan,
                            name='body')(y, h=h)
    return embed.attend(nn.LayerNorm(name='norm')(y))


def tied(layout):
  with jax.enable_x64(True):
    model = TiedLM(scan=layout == 'scan')
    return model, linen(model, TOKENS)


TIED_ROLES = TiedLM.roles


@pytest.mark.parametrize('layout', ['list', 'scan'])
def test_clone_keeps_the_logits_of_a_declared_model_with_a_tied_head(layout):
  model, variables = tied(layout)
  with jax.enable_x64(True):
    assert mlres.width_fields(variables, roles=TIED_ROLES) == {'width': 6, 'hidden': 10}
    sizes = {'width': 12, 'hidden': 30}
    diff, wide_model, wide = clone_diff(model, variables, TOKENS, sizes, roles=TIED_ROLES)
    print(f'\ndeclared {layout}: clone relative logit difference {diff:.2e}')
    assert (wide_model.width, wide_model.hidden) == (12, 30)
    # a pure function of the tree's structure and shapes: the same under jit
    jitted = jax.jit(functools.partial(mlres.widen, sizes=sizes, roles=TIED_ROLES))
    chex.assert_trees_all_equal(jitted(variables), wide)


ZERO = {'resnet': {'widths': (6, 12, 20)}, 'vit': {'mlp_dim': 20}, 'tied': {'hidden': 13}}


@pytest.mark.parametrize('name', ZERO)
def test_zero_keeps_the_logits_where_no_norm_spans_the_new_units(name):
  """The new units add exact zeros. XLA may group the longer sums differently (at its default
  optimization the ResNet's come out bit for bit and the ViT's within an ulp; at level 0 the
  reverse), so the logits agree to 1e-15 of their size and are bit-equal where printed so."""
  with jax.enable_x64(True):
    if name == 'resnet':
      model, x = mlres.ResNet(stage_sizes=(1, 2, 1), widths=(4, 8, 16), num_classes=5, dtype=F64), IMAGES
      variables, roles = linen(model, x), None
    elif name == 'vit':
      (model, x), roles = transformer('vit', False), None
      variables = linen(model, x)
    else:
      (model, variables), x, roles = tied('list'), TOKENS, TIED_ROLES
    wide = mlres.widen(variables, ZERO[name], 'zero', roles=roles)
    train = name == 'resnet'  # evaluation and a training step
    pairs = list(zip(logits_fn(model, train)(variables, x)[:2],
                     logits_fn(model.clone(**mlres.width_fields(wide, roles=roles)), train)(wide, x)[:2]))
    diff = max(assert_same(a, b, tol=1e-15) for a, b in pairs)
    print(f'\nzero {name} {ZERO[name]}: relative logit difference {diff:.2e}' +
          (' (bit-equal)' if all(np.array_equal(a, b) for a, b in pairs) else ''))


SGD = optax.sgd(0.5)


def copies_spread(x, axes, fields):
  """The spread (max - min) over the copies of each unit along the grown axes of a leaf: clone lays
  a unit's copies side by side."""
  spread = 0.0
  for i, role in enumerate(axes):
    _, dim = width_roles.parse(role) if role else (None, None)
    if dim in fields and x.shape[x.ndim - len(axes) + i] != fields[dim]:
      ax, n = x.ndim - len(axes) + i, x.shape[x.ndim - len(axes) + i] // fields[dim]
      y = np.moveaxis(np.asarray(x), ax, -1).reshape(x.shape[:ax] + x.shape[ax + 1:] + (fields[dim], n))
      spread = max(spread, float((y.max(-1) - y.min(-1)).max()))
  return spread


@functools.lru_cache(maxsize=None)
def sgd_step(model, tx):
  """One SGD step of next-token cross-entropy on TOKENS, compiled once for the model."""
  targets = np.roll(TOKENS, -1, axis=1)

  def step(variables, opt_state):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({**variables, 'params': p}, TOKENS), targets).mean()
    updates, opt_state = tx.update(jax.grad(loss)(variables['params']), opt_state)
    return {**variables, 'params': optax.apply_updates(variables['params'], updates)}, opt_state
  return jit(step)


def sgd_copies_spread(seed, steps=10):
  """The largest spread among the copies of a unit after `steps` SGD steps of the widened TiedLM,
  how far its weights moved, and its logits' difference at widening."""
  model, variables = tied('list')
  with jax.enable_x64(True):
    old = mlres.width_fields(variables, roles=TIED_ROLES)
    wide = mlres.widen(variables, {'width': 12, 'hidden': 20}, roles=TIED_ROLES, seed=seed)
    wide_model = model.clone(width=12, hidden=20)
    diff = assert_same(logits_fn(model)(variables, TOKENS)[0], logits_fn(wide_model)(wide, TOKENS)[0])
    tx = SGD
    trained, opt_state = wide, tx.init(wide['params'])
    for _ in range(steps):
      trained, opt_state = sgd_step(wide_model, tx)(trained, opt_state)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(wide)))
    spread = 0.0
    for kp, x in jax.tree_util.tree_flatten_with_path(trained['params'])[0]:
      path = tuple(str(k.key) for k in kp)
      axes = width_roles.roles_of(TIED_ROLES, path, tuple(k for k in path if not k.startswith('block')))
      spread = max(spread, copies_spread(x, axes, old))
  return spread, moved, diff


def test_copies_stay_copies_under_sgd_unless_a_seed_splits_them():
  spread, moved, _ = sgd_copies_spread(seed=None)
  print(f'\nwithout a seed: copies {spread:.2e} apart after 10 steps that moved the weights by {moved:.2e}')
  assert moved > 1e-2 and spread < 1e-12, (moved, spread)
  spread, _, diff = sgd_copies_spread(seed=0)
  print(f'\nwith seed=0: logits at widening within {diff:.2e}; copies {spread:.2e} apart after 10 steps')
  assert spread > 1e-3


@pytest.mark.parametrize('name', ['resnet', 'vit', 'tied'])
def test_the_moments_map_is_the_wide_models_gradient(name):
  """widen(g, moment=1) of the narrow gradient is the wide model's gradient at the clone: what the
  moments carry over (mlres.growth.optimizer's derivation)."""
  with jax.enable_x64(True):
    if name == 'resnet':  # stage1: 8 channels from its shortcut (2 copies each), 4 copies of its own 4
      model = mlres.ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=5, dtype=F64)
      x, sizes, roles = IMAGES, {'widths': (8, 24)}, None
      variables = linen(model, x)
    elif name == 'vit':  # the head dimension grown: the query's 1/sqrt(copies)
      (model, x), sizes, roles = transformer('vit', False, num_blocks=1), {'width': 16, 'num_heads': 2}, None
      variables = linen(model, x)
    else:
      (model, variables), x, sizes, roles = tied('list'), TOKENS, {'width': 12, 'hidden': 20}, TIED_ROLES
    wide = mlres.widen(variables, sizes, roles=roles)
    wide_model = model.clone(**mlres.width_fields(wide, roles=roles))
    loss = lambda m, v: lambda p: jnp.sum(jnp.sin(logits(m, {**v, 'params': p}, x)[0]))
    grad = lambda m, v: jit(jax.grad(loss(m, v)))(v['params'])
    chex.assert_trees_all_close(mlres.widen(grad(model, variables), sizes, roles=roles, moment=1),
                                grad(wide_model, wide), atol=1e-12, rtol=0)


def test_a_wide_step_is_the_clone_of_a_narrow_step_with_scaled_rates():
  """With the moments mapped, one SGD or Adam step of the wide TiedLM (width and hidden doubled) is
  the clone of a narrow step whose rate on a leaf is x 2 per input axis, / 2 per output or norm axis
  under SGD, x 2 per input axis under Adam (mlres.growth.optimizer)."""
  _, variables = tied('list')
  with jax.enable_x64(True):
    params, sizes = variables['params'], {'width': 12, 'hidden': 20}
    widen = lambda tree, moment=0: jax.tree.map(np.asarray, mlres.widen(tree, sizes, roles=TIED_ROLES,
                                                                        moment=moment))
    mu = filled(params)
    nu = jax.tree.map(lambda m: m * m + 0.1, mu)
    kinds = lambda axes: [width_roles.parse(a)[0] for a in axes if a]
    rate = {'sgd': lambda axes: 2.0 ** sum({'in': 1, 'out': -1, 'norm': -1}[k] for k in kinds(axes)),
            'adam': lambda axes: 2.0 ** sum(k == 'in' for k in kinds(axes))}
    adam = lambda mu, nu: jax.tree.map(lambda m, v: m / np.sqrt(v), mu, nu)  # eps aside
    steps = {'sgd': (mu, widen(mu, 1)), 'adam': (adam(mu, nu), adam(widen(mu, 1), widen(nu, 2)))}
    for name, (narrow, wide) in steps.items():
      scaled = jax.tree_util.tree_map_with_path(
          lambda kp, p, u: p - rate[name](width_roles.roles_of(TIED_ROLES, key(kp), key(kp, strip=True))) * u,
          params, narrow)
      chex.assert_trees_all_close(widen(scaled), jax.tree.map(lambda p, u: p - u, widen(params), wide),
                                  atol=1e-12, rtol=0)


def key(kp, strip=False):
  """A leaf's path of keys, without its block key where `strip`."""
  path = tuple(str(k.key) for k in kp)
  return tuple(k for k in path if not k.startswith('block')) if strip else path


@pytest.mark.parametrize('make', [lambda: optax.sgd(0.1, momentum=0.9),
                                  lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))])
def test_the_optimizer_state_has_the_structure_of_a_fresh_one(make):
  tx = make()
  _, variables = tied('list')
  with jax.enable_x64(True):
    params, sizes = variables['params'], {'width': 12, 'hidden': 20}
    state = filled(jax.eval_shape(tx.init, params))
    state = jax.tree.map(lambda a, b: b if jnp.issubdtype(b.dtype, jnp.integer) else a, state, tx.init(params))
    grown = mlres.widen_opt_state(state, params, sizes, roles=TIED_ROLES)
    fresh = tx.init(mlres.widen(params, sizes, roles=TIED_ROLES))
    assert jax.tree.structure(grown) == jax.tree.structure(fresh)
    chex.assert_trees_all_equal_shapes_and_dtypes(grown, fresh)
    for field, power in (('trace', 1), ('mu', 1), ('nu', 2)):
      for old_part, new_part in zip(_fields(state, field), _fields(grown, field)):
        chex.assert_trees_all_equal(new_part, mlres.widen(old_part, sizes, roles=TIED_ROLES, moment=power))
    for old_count, new_count in zip(_fields(state, 'count'), _fields(grown, 'count')):
      assert int(old_count) == int(new_count)
    reset = mlres.widen_opt_state(state, params, sizes, roles=TIED_ROLES, reset=True)
    for field in ('trace', 'mu', 'nu'):
      assert all(not np.asarray(x).any() for part in _fields(reset, field) for x in jax.tree.leaves(part))


def _fields(state, name):
  """Every value of a named field in an optax state."""
  named = lambda n: hasattr(n, '_fields') and name in n._fields
  return [getattr(n, name) for n in jax.tree.leaves(state, is_leaf=named) if named(n)]


class NnxBlock(nnx.Module):
  def __init__(self, width, heads, hidden, rngs):
    self.norm1 = nnx.LayerNorm(width, param_dtype=F64, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, width, decode=False, param_dtype=F64, rngs=rngs)
    self.norm2 = nnx.LayerNorm(width, param_dtype=F64, rngs=rngs)
    self.mlp1 = nnx.Linear(width, hidden, param_dtype=F64, rngs=rngs)
    self.mlp2 = nnx.Linear(hidden, width, param_dtype=F64, rngs=rngs)

  def __call__(self, y, h):
    y = y + h * self.attn(self.norm1(y), mask=nnx.make_causal_mask(y[..., 0]))
    return y + h * self.mlp2(nnx.gelu(self.mlp1(self.norm2(y))))


_ATTN = {'query': 'query:head_dim', 'key': 'head_dim', 'value': 'head_dim'}


class NnxLM(nnx.Module):
  """The tests' own NNX model: a causal transformer whose heads and width are separate (the
  attention's qkv_features follows the heads), in either layout."""
  stacks = {'body': mlres.Stack(zero=('attn/out', 'mlp2'))}
  roles = mlres.Roles({
      'embed/embedding': (None, 'width'), 'body/norm1/*': ('norm:width',), 'body/norm2/*': ('norm:width',),
      **{f'body/attn/{n}/kernel': ('in:width', 'heads', r) for n, r in _ATTN.items()},
      **{f'body/attn/{n}/bias': ('heads', r) for n, r in _ATTN.items()},
      'body/attn/out/kernel': ('in:heads', 'in:head_dim', 'width'), 'body/attn/out/bias': ('width',),
      'body/mlp1/kernel': ('in:width', 'hidden'), 'body/mlp1/bias': ('hidden',),
      'body/mlp2/kernel': ('in:hidden', 'width'), 'body/mlp2/bias': ('width',),
      'norm/*': ('norm:width',), 'head/kernel': ('in:width', None), 'head/bias': ()})

  def __init__(self, num_blocks=2, width=8, heads=2, hidden=12, scan=False):
    rngs = nnx.Rngs(0)
    self.h = mlres.StepSize(jnp.asarray(0.5, F64))
    self.embed = nnx.Embed(11, width, param_dtype=F64, rngs=rngs)
    make = lambda rngs: NnxBlock(width, heads, hidden, rngs)
    self.body = (nnx.split_rngs(splits=num_blocks)(nnx.vmap(make))(rngs) if scan
                 else nnx.List([make(rngs) for _ in range(num_blocks)]))
    self.norm = nnx.LayerNorm(width, param_dtype=F64, rngs=rngs)
    self.head = nnx.Linear(width, 11, param_dtype=F64, rngs=rngs)
    self.scan = scan

  def __call__(self, tokens):
    y, h = self.embed(tokens), self.h[...]
    if self.scan:
      y = nnx.scan(lambda y, block: block(y, h), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(y, self.body)
    else:
      for block in self.body:
        y = block(y, h)
    return self.head(self.norm(y))


@functools.partial(jit, static_argnums=0)
def _nnx_apply(graphdef, state, x):
  return nnx.merge(graphdef, state)(x)


def nnx_logits(m, x):
  return _nnx_apply(*nnx.split(m), x)


def nnx_model(layout):
  """An NnxLM built abstractly (no init run), every variable then set: patterns in the parameters,
  h = 0.5, RNG keys and counts of zeros."""
  m = nnx.eval_shape(lambda: NnxLM(scan=layout == 'scan'))
  state = nnx.state(m)

  def fill(path, x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(np.zeros(x.shape + (2,), np.uint32))
    if jnp.issubdtype(x.dtype, jnp.integer):
      return np.zeros(x.shape, x.dtype)
    return jnp.asarray(0.5 if x.ndim == 0 else pattern(path, x.shape), F64)
  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state)))
  nnx.update(m, state)
  return m


def nnx_params(m):
  return nnx.to_pure_dict(nnx.state(m, nnx.Param))


@pytest.mark.parametrize('layout', ['list', 'scan'])
def test_an_nnx_model_widens_by_clone_and_by_zero_and_is_left_untouched(layout):
  with jax.enable_x64(True):
    m = nnx_model(layout)
    before = jax.tree.map(np.asarray, nnx_params(m))
    wide = mlres.widen(m, {'width': 16, 'heads': 4, 'hidden': 24})
    assert mlres.width_fields(wide) == {'width': 16, 'heads': 4, 'head_dim': 4, 'hidden': 24}
    diff = assert_same(nnx_logits(m, TOKENS), nnx_logits(wide, TOKENS))
    print(f'\nNNX {layout}: clone relative logit difference {diff:.2e}')
    assert wide.body[0].attn.in_features == 16 if layout == 'list' else wide.body.attn.num_heads == 4
    if layout == 'list':  # heads alone (qkv_features follows them) and the MLP by zero
      heads = mlres.widen(m, {'heads': 4, 'hidden': 16}, 'zero')
      diff = assert_same(nnx_logits(m, TOKENS), nnx_logits(heads, TOKENS), tol=1e-15)
      print(f'NNX zero heads 2 -> 4, hidden 12 -> 16: relative logit difference {diff:.2e}')
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, nnx_params(m)), before)  # the input untouched


def test_an_nnx_optimizer_widens_with_its_model():
  with jax.enable_x64(True):
    m = nnx_model('list')
    tx = optax.adam(1e-2)
    optimizer = nnx.Optimizer(m, tx, wrt=nnx.Param)
    state = nnx.state(optimizer.opt_state)  # moments as patterns, as after some steps; count 3
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(
        lambda p, x: np.full(x.shape, 3, x.dtype) if jnp.issubdtype(x.dtype, jnp.integer) else
        jnp.asarray(pattern(p, x.shape, positive=True)), nnx.to_pure_dict(state)))
    nnx.update(optimizer.opt_state, state)
    optimizer.step[...] = 3
    sizes = {'width': 16, 'heads': 4}
    wide, wide_optimizer = mlres.grow_wider(m, optimizer, sizes)
    fresh = nnx.Optimizer(wide, tx, wrt=nnx.Param)
    assert jax.tree.structure(nnx.state(wide_optimizer)) == jax.tree.structure(nnx.state(fresh))
    chex.assert_trees_all_equal_shapes_and_dtypes(nnx.state(wide_optimizer), nnx.state(fresh))
    old, new = nnx.as_pure(optimizer.opt_state)[0], nnx.as_pure(wide_optimizer.opt_state)[0]
    assert int(wide_optimizer.step[...]) == 3 and int(new.count) == int(old.count) == 3
    for moment, power in (('mu', 1), ('nu', 2)):  # each as widen maps the gradients it sums
      holder = nnx.clone(m)  # holding the moment in place of its parameters
      params = nnx.state(holder, nnx.Param)
      nnx.replace_by_pure_dict(params, nnx.to_pure_dict(getattr(old, moment)))
      nnx.update(holder, params)
      chex.assert_trees_all_equal(nnx.to_pure_dict(getattr(new, moment)),
                                  nnx_params(mlres.widen(holder, sizes, moment=power)))


def resnet_variables():
  with jax.enable_x64(True):
    return linen(mlres.ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=5, dtype=F64), IMAGES)


def vit_variables():
  with jax.enable_x64(True):
    model, x = transformer('vit', False)
    return linen(model, x)


@pytest.mark.parametrize('tree, call, message', [
    (vit_variables, lambda v: mlres.widen(v, {'width': 12}),
     'width: clone repeats each unit a whole number of times'),
    (vit_variables, lambda v: mlres.widen(v, {'mlp_dim': 16.0}), 'mlp_dim=16.0: must be a positive integer'),
    (vit_variables, lambda v: mlres.widen(v, {'width': 16, 'num_heads': 3}),
     'num_heads=3 does not divide width=16'),
    (vit_variables, lambda v: mlres.widen(v, {'num_heads': 4}),
     'num_heads=4 at width=8 shrinks the head dimension'),
    (vit_variables, lambda v: mlres.widen(v, {'width': 16}, 'zero'),
     'zero would not be exact for width: params/encoder/block0/norm1/bias spans width'),
    (vit_variables, lambda v: mlres.widen(v, {'depth': 3}), "'depth' is not a width of this model"),
    (vit_variables, lambda v: mlres.widen(v, {'mlp_dim': 8}), 'mlp_dim: mlp_dim would shrink'),
    (vit_variables, lambda v: mlres.widen(v, {'mlp_dim': 32}, 'net2net'), "operator='net2net'"),
    (vit_variables, lambda v: mlres.widen(v, {'mlp_dim': 20}, 'zero', seed=0), 'seed=0 breaks the symmetry'),
    (resnet_variables, lambda v: mlres.widen(v, {'widths': (8,)}), 'give one width per stage, 2'),
    (resnet_variables, lambda v: mlres.widen(v, {'widths': (12, 16)}, 'zero'), None),  # fits: no error
    (resnet_variables, lambda v: mlres.widen(v, {'widths': (8, 8)}),
     'stage1 of width 8 has 0 channels beside'),
    (resnet_variables, lambda v: mlres.widen(v, {'widths': (8, 16)}, seed=-1), 'seed=-1: a non-negative integer'),
    (lambda: tied('list')[1], lambda v: mlres.widen(v, {'width': 12}, roles=mlres.Roles(
        {k: r for k, r in TIED_ROLES.leaves.items() if k != 'body/dense1/bias'})),
     'params/body/block0/dense1/bias has no role in the declaration'),
    (lambda: tied('list')[1], lambda v: mlres.widen(v, {'width': 12}),
     'which axes are widths is not known for a tree with stacks'),
])
def test_bad_input_gets_one_line_naming_the_field_or_leaf_and_the_input_is_untouched(tree, call, message):
  with jax.enable_x64(True):
    variables = tree()
    before = jax.tree.map(np.asarray, variables)
    if message is None:
      call(variables)
      return
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')) as error:
      call(variables)
    assert '\n' not in str(error.value)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, variables), before)


def test_the_roles_declaration_is_checked():
  for leaves, message in (({}, 'give {leaf path: axis roles}'), ({'a/kernel': 'width'}, "'a/kernel': 'width'"),
                          ({'a/kernel': ('out:width',)}, "axis role 'out:width' is none of"),
                          ({'a/kernel': (3,)}, 'axis role 3 is none of')):
    with pytest.raises(ValueError, match=message):
      mlres.Roles(leaves)
  odd = collections.namedtuple('Odd', 'v')
  with pytest.raises(ValueError, match="widen_opt_state: the optimizer state field 'v'"):
    mlres.widen_opt_state(odd(v={'w': jnp.ones(2)}), {'w': jnp.ones(2)}, {'width': 4},
                          roles=mlres.Roles({'w': ('width',)}))
