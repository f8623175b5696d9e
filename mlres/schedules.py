"""The cycle plan's learning rates (eq. 9, restarted per cycle, with an optional warmup) and its
theoretical cost."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import optax


def learning_rate(cycle_steps: Sequence[int], eta_max: float, eta_min: float, reset: bool = True,
                  warmup: int = 0):
  """Cosine annealing from eta_max to eta_min within each cycle, restarted at each one (SGDR), after
  a linear warmup of `warmup` steps at the start of every cycle.

  The warmup is nanoGPT's: its step i has eta_max (i + 1) / (warmup + 1), so no step is lost at a
  rate of 0, and the cosine over the cycle's remaining steps starts at eta_max. Every cycle re-warms:
  after a growth the new blocks (and with 'fresh' momentum the optimizer's state) start anew, and
  staged training and MSG re-warm there too. warmup=0 is the paper's schedule. With reset=False one warmup and one cosine span all cycles (the paper's
  Fig. 10 ablation). The warmup must be shorter than each cosine (mlres.config.check_warmup).
  """
  def cosine(steps):
    return dict(init_value=eta_max / (warmup + 1), peak_value=eta_max, end_value=eta_min,
                warmup_steps=warmup, decay_steps=int(steps))
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
