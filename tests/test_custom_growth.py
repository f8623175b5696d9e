"""The example of docs/growth.md: a custom residual MLP grown mid-training in a plain optax loop."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mlres


class MlpBlock(nn.Module):
  """One Euler step y + h W2 relu(W1 LN(y))."""
  hidden: int

  @nn.compact
  def __call__(self, y, h):
    f = nn.relu(nn.Dense(self.hidden, name='dense1')(nn.LayerNorm(name='norm')(y)))
    g = h * nn.Dense(y.shape[-1], name='dense2')(f)
    self.sow('intermediates', 'residual', g)
    return y + g


class ResMLP(nn.Module):
  num_blocks: int = 2
  width: int = 8
  num_classes: int = 3
  h: float = 1.0
  scan: bool = False

  # The last layer of a block's branch: zeroed, the block is the identity (operator 'zero').
  stacks = {'body': mlres.Stack(zero=('dense2',))}

  @nn.compact
  def __call__(self, x, train=False):
    h = self.variable('ode', 'h', lambda: jnp.asarray(self.h, jnp.float32)).value
    y = nn.Dense(self.width, name='embed')(x)
    block = functools.partial(MlpBlock, 2 * self.width)
    y = mlres.ResidualStack(block, self.num_blocks, scan=self.scan, name='body')(y, h=h)
    return nn.Dense(self.num_classes, name='head')(y)


def loss_fn(model, params, ode, x, y):
  logits = model.apply({'params': params, 'ode': ode}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(model, tx, ode):
  """One SGD step of `model`, compiled for its architecture."""
  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(functools.partial(loss_fn, model))(params, ode, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def train_growing(operator, cycles=3, steps=20):
  """Trains a 1-block ResMLP, doubling its blocks between cycles; returns the losses of each cycle,
  the loss just before and just after each growth, and the last model, variables and optimizer state."""
  x = jax.random.normal(jax.random.key(0), (64, 6))
  y = jnp.argmax(x @ jax.random.normal(jax.random.key(1), (6, 3)), axis=-1)
  model = ResMLP(num_blocks=1, h=0.5)
  variables = model.init(jax.random.key(2), x)
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(variables['params'])
  grow = functools.partial(mlres.interpolate, operator=operator, stacks=model.stacks)
  losses, growth = [], []
  for cycle in range(cycles):
    if cycle:
      before = loss_fn(model, variables['params'], variables['ode'], x, y)
      opt_state = mlres.grow_opt_state(opt_state, variables['params'], grow)
      variables = grow(variables)
      model = model.clone(num_blocks=2 * model.num_blocks)
      growth.append((before, loss_fn(model, variables['params'], variables['ode'], x, y)))
    step = make_step(model, tx, variables['ode'])
    params, cycle_losses = variables['params'], []
    for _ in range(steps):
      params, opt_state, loss = step(params, opt_state, x, y)
      cycle_losses.append(float(loss))
    variables = {**variables, 'params': params}
    losses.append(cycle_losses)
  return losses, growth, (model, variables, opt_state, tx)


@pytest.mark.parametrize('operator', ['copy', 'zero'])
def test_a_custom_model_grows_mid_training(operator):
  losses, growth, (model, variables, opt_state, tx) = train_growing(operator)
  assert mlres.architecture(variables)['stacks'] == {'body': 4} and model.num_blocks == 4
  assert float(variables['ode']['h']) == (0.125 if operator == 'copy' else 0.5)
  chex.assert_trees_all_equal_shapes_and_dtypes(opt_state, tx.init(variables['params']))
  assert losses[-1][-1] < 0.5 * losses[0][0]
  before, after = np.array(growth).T
  if operator == 'zero':  # growth keeps the function: the loss goes on where it stood
    np.testing.assert_array_equal(after, before)
  else:  # h = 0.5 is no small step: copying moves the function
    assert np.all(after != before)
