"""G_stack's speedup of a grown run over the deep baseline, read from the two runs' metrics.jsonl.

speedup = the stepping seconds the baseline (launch/seeds.py's `last-cycle`) needs to reach its own
final test loss / the stepping seconds the grown run needs to reach that same loss.

- The loss is each record's `test_loss`: a language model's validation bits per byte, an image
  classifier's test loss (cross-entropy in nats; the loss, not the error, as G_stack measures).
- The clock is the stepping time: each record's `epoch_seconds` summed over the epochs up to it
  (compiling and evaluating are not in it; a resumed run's epochs carry their seconds from before
  the stop). The K seeds of a run step together, so they share one clock.
- Per seed k, the baseline's seed k against the grown run's seed k: seed k's losses are the
  records' `seeds.test_loss[k]` (a run of one seed: `test_loss`).
- A run reaches a loss at its first crossing, found by linear interpolation of (seconds, loss)
  between the two consecutive epoch records around it; one reached exactly at a record takes that
  record's seconds. Nothing is recorded before the first epoch ends, so a loss already reached
  there counts as reached at the end of the first epoch (a bound: it makes the run look slower).
  The baseline's own final loss is reached at its first record at or below it (its last record,
  unless its loss rose at the end), so `last-cycle` against itself is 1 by definition.
- A run whose records never reach the loss has no speedup: 'not reached'. The mean and its 95%
  interval (report.ci95) are over the seeds that reached it, and the cell says how many did not.
"""
from __future__ import annotations

import os

import numpy as np

from mlres import report

NOT_REACHED = '—'


def curves(workdir: str) -> tuple[list[float], list[list[float]]]:
  """A run's stepping seconds at the end of each epoch, and each seed's test loss there
  ([seed][epoch]), from its metrics.jsonl; their epochs must run 1, 2, ... without a gap."""
  path = os.path.join(workdir, 'metrics.jsonl')
  records = report.read_jsonl(path)
  if not records:
    raise report.WorkdirError(f'{path} holds no epoch records: no speedup can be read from it')
  epochs = [r['epoch'] for r in records]
  if epochs != list(range(1, len(records) + 1)):
    missing = sorted(set(range(1, max(epochs) + 1)) - set(epochs))
    raise report.WorkdirError(
        f'{path} lacks epochs {missing or "in order"}: their stepping seconds are not known, so '
        'neither is the time to reach a loss')
  times = np.cumsum([r['epoch_seconds'] for r in records]).tolist()
  losses = [r['seeds']['test_loss'] if 'seeds' in r else [r['test_loss']] for r in records]
  return times, [list(seed) for seed in zip(*losses)]


def time_to_reach(times: list[float], losses: list[float], target: float) -> float | None:
  """The stepping seconds at which `losses` first reaches `target` or below, interpolated linearly
  between the epoch records around the crossing; None if it never does."""
  for i, (t, loss) in enumerate(zip(times, losses)):
    if loss <= target:
      if i == 0 or loss == target:
        return t
      t0, loss0 = times[i - 1], losses[i - 1]  # loss0 > target: i is the first crossing
      return t0 + (t - t0) * (loss0 - target) / (loss0 - loss)
  return None


def speedups(baseline: str, grown: str) -> list[float | None]:
  """Per seed k, the seconds baseline's seed k needs to reach its own final test loss over those
  grown's seed k needs to reach it (None: not reached); baseline and grown are workdirs."""
  base_times, base_losses = curves(baseline)
  times, losses = curves(grown)
  if len(losses) != len(base_losses):
    raise report.WorkdirError(f'{grown} has {len(losses)} seeds and {baseline} {len(base_losses)}: '
                              'seed k is compared with seed k')
  out = []
  for base, seed in zip(base_losses, losses):
    target = base[-1]
    needed, took = time_to_reach(base_times, base, target), time_to_reach(times, seed, target)
    out.append(None if took is None else needed / took)
  return out


def cells(values: list[float | None]) -> tuple[str, str]:
  """The speedups' mean ± 95% interval over the seeds that reached the loss, with how many did
  not; and each seed's speedup, '—' where it was not reached."""
  reached = [v for v in values if v is not None]
  missed = len(values) - len(reached)
  per_seed = ' '.join(NOT_REACHED if v is None else f'{v:.2f}' for v in values)
  if not reached:
    return f'not reached ({missed} of {len(values)})', per_seed
  mean = f'{np.mean(reached):.2f}'
  if len(reached) > 1:
    mean += f' ± {report.ci95(reached):.2f}'
  if missed:
    mean += f' ({missed} of {len(values)} not reached)'
  return mean, per_seed


def depth_verdict(first: dict, last: dict) -> str | None:
  """Whether the deep baseline (last-cycle) beats the shallow one (first-cycle) beyond their 95%
  intervals of the headline metric (lower is better: test error, validation bits per byte); None
  where the summaries have no interval."""
  metric = report.headline(last)
  key, show = metric.key, metric.show
  if f'{key}_ci95' not in first or f'{key}_ci95' not in last:
    return None
  (m1, c1), (m2, c2) = ((s[key], s[f'{key}_ci95']) for s in (first, last))
  both = (f'last-cycle {show(m2)} ± {show(c2).rstrip("%")}, first-cycle {show(m1)} ± '
          f'{show(c1).rstrip("%")} {metric.name}')
  if m2 + c2 < m1 - c1:
    return f'Depth helps: {both}; last-cycle is better beyond their 95% intervals (disjoint).'
  if m1 + c1 < m2 - c2:
    return f'Depth hurts: {both}; first-cycle is better beyond their 95% intervals (disjoint).'
  return f'Depth not shown: {both}; their 95% intervals overlap.'
