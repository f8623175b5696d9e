"""The restarted cosine learning rate (eq. 9) and the theoretical savings (Table 2)."""
import numpy as np
import pytest

import mlres
from mlres import schedules


def test_table2_time_saved():
  saved = [round(100 * mlres.theoretical_time_saved(k)) for k in range(6)]
  assert saved == [0, 25, 42, 53, 61, 67]


def test_time_saved_rejects_bad_k():
  with pytest.raises(ValueError, match='k=-1'):
    mlres.theoretical_time_saved(-1)


def test_relative_cost_of_the_papers_plans():
  assert mlres.relative_cost([(5, 5, 5), (10, 10, 10), (20, 20, 20)], [60, 50, 50]) == pytest.approx(0.5625)
  assert mlres.relative_cost([(8, 8, 8)] * 3, [60, 50, 50]) == 1.0
  for k in range(1, 5):  # equal cycles reproduce Table 2
    plan = [(2 ** i,) for i in range(k + 1)]
    assert 1 - mlres.relative_cost(plan, [10] * (k + 1)) == pytest.approx(mlres.theoretical_time_saved(k))


def test_relative_cost_of_measured_step_times():
  plan, epochs = [(2, 2, 2), (4, 4, 4), (8, 8, 8)], [60, 50, 50]
  assert mlres.relative_cost(plan, epochs, [3.0, 5.0, 10.0]) == pytest.approx((180 + 250 + 500) / 1600)
  assert mlres.relative_cost(plan, epochs, [6, 12, 24]) == mlres.relative_cost(plan, epochs)


def test_learning_rate_restarts_at_every_cycle():
  lr = schedules.learning_rate([60, 50, 50], eta_max=0.5, eta_min=0.001)
  for start, length in ((0, 60), (60, 50), (110, 50)):
    assert float(lr(start)) == pytest.approx(0.5)
    assert float(lr(start + length // 2)) == pytest.approx((0.5 + 0.001) / 2, rel=1e-3)
    assert float(lr(start + length - 1)) < 0.002
    t = np.arange(length)
    eq9 = 0.001 + 0.5 * (0.5 - 0.001) * (1 + np.cos(np.pi * t / length))
    np.testing.assert_allclose([float(lr(start + i)) for i in t], eq9, rtol=1e-5)


def test_learning_rate_without_reset_is_one_cosine():
  lr = schedules.learning_rate([60, 50, 50], eta_max=0.5, eta_min=0.001, reset=False)
  assert float(lr(0)) == pytest.approx(0.5)
  assert float(lr(80)) == pytest.approx((0.5 + 0.001) / 2, rel=1e-3)
  values = [float(lr(i)) for i in range(160)]
  assert all(a >= b for a, b in zip(values, values[1:]))


def test_each_cycle_warms_up_linearly_before_its_cosine():
  """nanoGPT's warmup, eta_max (i + 1) / (w + 1) at step i, at the start of every cycle; then the
  cosine of eq. 9 over the cycle's remaining steps."""
  lr = schedules.learning_rate([60, 50, 50], eta_max=0.5, eta_min=0.001, warmup=10)
  for start, length in ((0, 60), (60, 50), (110, 50)):
    warm = [float(lr(start + i)) for i in range(10)]
    np.testing.assert_allclose(warm, 0.5 * (np.arange(10) + 1) / 11, rtol=1e-6)
    t = np.arange(length - 10)
    eq9 = 0.001 + 0.5 * (0.5 - 0.001) * (1 + np.cos(np.pi * t / (length - 10)))
    np.testing.assert_allclose([float(lr(start + 10 + i)) for i in t], eq9, rtol=1e-5)


def test_without_reset_the_run_warms_up_once():
  lr = schedules.learning_rate([60, 50, 50], eta_max=0.5, eta_min=0.001, reset=False, warmup=10)
  values = [float(lr(i)) for i in range(160)]
  np.testing.assert_allclose(values[:10], 0.5 * (np.arange(10) + 1) / 11, rtol=1e-6)
  assert values[10] == pytest.approx(0.5) and all(a >= b for a, b in zip(values[10:], values[11:]))


# Training images per paper dataset: an epoch is as many whole batches as they hold.
TRAIN_IMAGES = {'cifar10': 50_000, 'cifar100': 50_000, 'stl10': 5_000}


def test_the_papers_sgd_configs_keep_their_schedule_bit_for_bit():
  """warmup_steps=0, their default, gives the schedule they had before the field existed: SGDR's
  cosines without warmup, at every step of the run, compiled as the train step uses it."""
  import jax
  import optax
  from test_config import CONFIGS, load
  schedules_of = set()
  for path in CONFIGS:
    c = load(path)
    if c.dataset in TRAIN_IMAGES and c.optimizer.name == 'sgd':
      steps = TRAIN_IMAGES[c.dataset] // c.batch_size
      o = c.optimizer
      schedules_of.add((tuple(n * steps for n in c.cycles.epochs), o.eta_max, o.eta_min, o.reset_lr,
                        o.warmup_steps))
  assert len(schedules_of) == 2  # CIFAR's 500 steps per epoch and STL-10's 156, 160 epochs each
  for cycle_steps, eta_max, eta_min, reset, warmup in schedules_of:
    before = optax.sgdr_schedule([dict(init_value=eta_max, peak_value=eta_max, end_value=eta_min,
                                       warmup_steps=0, decay_steps=n) for n in cycle_steps])
    now = schedules.learning_rate(cycle_steps, eta_max, eta_min, reset, warmup)
    steps = np.arange(sum(cycle_steps))
    np.testing.assert_array_equal(jax.jit(jax.vmap(now))(steps), jax.jit(jax.vmap(before))(steps))
