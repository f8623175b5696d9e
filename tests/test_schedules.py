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
