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


def relative_cost(stage_sizes: Sequence[Sequence[int]], epochs: Sequence[int]) -> float:
  """Theoretical time of a cycle plan relative to training its last model for all epochs.

  Step time is taken proportional to the number of blocks (paper, Sec. 4.2).
  """
  depth = np.array([sum(s) for s in stage_sizes], float)
  epochs = np.asarray(epochs, float)
  return float((depth * epochs).sum() / (depth[-1] * epochs.sum()))


def theoretical_time_saved(k: int) -> float:
  """Fraction of time saved by k interpolations over k + 1 equal cycles (Table 2).

  1 - (2^(k+1) - 1) / (2^k (k + 1)); the paper's printed denominator 2^(k(k+1)) is a typo.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
    raise ValueError(f'k={k!r}: the number of interpolations must be a non-negative integer')
  return 1.0 - (2 ** (k + 1) - 1) / (2 ** k * (k + 1))
