"""The cycle plan's learning rates (eq. 9, restarted per cycle) and its theoretical cost."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import optax


def learning_rate(cycle_steps: Sequence[int], eta_max: float, eta_min: float, reset: bool = True):
  """Cosine annealing from eta_max to eta_min within each cycle, restarted at each one (SGDR).

  With reset=False one cosine spans all cycles (the paper's Fig. 10 ablation).
  """
  def cosine(steps):
    return dict(init_value=eta_max, peak_value=eta_max, end_value=eta_min, warmup_steps=0,
                decay_steps=int(steps))
  if not reset:
    return optax.sgdr_schedule([cosine(sum(cycle_steps))])
  return optax.sgdr_schedule([cosine(s) for s in cycle_steps])


def relative_cost(stage_sizes: Sequence[Sequence[int]], epochs: Sequence[int],
                  step_times: Sequence[float] | None = None) -> float:
  """Time of a cycle plan relative to training its last model for all epochs.

  In theory step time is proportional to the number of blocks (paper, Sec. 4.2); `step_times`,
  one per cycle, puts measured ones in its place.
  """
  cost = np.array([sum(s) for s in stage_sizes] if step_times is None else step_times, float)
  epochs = np.asarray(epochs, float)
  return float((cost * epochs).sum() / (cost[-1] * epochs.sum()))


def theoretical_time_saved(k: int) -> float:
  """Fraction of time saved by k interpolations over k + 1 equal cycles (Table 2).

  1 - (2^(k+1) - 1) / (2^k (k + 1)); the paper's printed denominator 2^(k(k+1)) is a typo.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
    raise ValueError(f'k={k!r}: the number of interpolations must be a non-negative integer')
  return 1.0 - (2 ** (k + 1) - 1) / (2 ** k * (k + 1))
