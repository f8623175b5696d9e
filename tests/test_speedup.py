"""launch/speedup.py: G_stack's speedup column of launch/seeds.py on hand-made metrics.jsonl files
(no training): reached at an epoch, between epochs, not reached, and seed k against seed k."""
import importlib.util
import os

import pytest

from mlres import report

from conftest import ROOT

# launch/ is no package; loaded by path, so that its common.py never shadows another `common`.
_spec = importlib.util.spec_from_file_location('launch_speedup', os.path.join(ROOT, 'launch', 'speedup.py'))
speedup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speedup)


def run(tmp_path, name, seconds, losses):
  """A workdir whose metrics.jsonl has one record per epoch: `seconds` of stepping each, and
  `losses` the test loss of each epoch (a list per epoch: each seed's)."""
  workdir = tmp_path / name
  workdir.mkdir()
  records = []
  for epoch, (s, loss) in enumerate(zip(seconds, losses), 1):
    r = {'task': 'language_model', 'epoch': epoch, 'epoch_seconds': s, 'test_accuracy': 0.5}
    if isinstance(loss, list):
      r |= {'test_loss': sum(loss) / len(loss), 'seeds': {'test_loss': loss, 'test_accuracy': [0.5] * len(loss)}}
    else:
      r['test_loss'] = loss
    records.append(r)
  report.write_jsonl(str(workdir / 'metrics.jsonl'), records)
  return str(workdir)


@pytest.fixture
def deep(tmp_path):
  """The deep baseline: 10 s an epoch, ending at 2.0 after 30 s."""
  return run(tmp_path, 'last-cycle', [10.0, 10.0, 10.0], [3.0, 2.5, 2.0])


def test_speedup_reached_exactly_at_an_epoch(tmp_path, deep):
  grown = run(tmp_path, 'copy', [5.0, 5.0, 5.0], [2.8, 2.0, 1.9])  # 2.0 at 10 s
  assert speedup.speedups(deep, grown) == [3.0]
  assert speedup.cells([3.0]) == ('3.00', '3.00')


def test_speedup_reached_between_epochs(tmp_path, deep):
  """2.4 at 10 s, 1.6 at 15 s: 2.0 is half-way, at 12.5 s; 30 / 12.5 = 2.4."""
  grown = run(tmp_path, 'copy', [5.0, 5.0, 5.0], [2.8, 2.4, 1.6])
  assert speedup.speedups(deep, grown) == [pytest.approx(2.4)]
  assert speedup.time_to_reach([5.0, 10.0, 15.0], [2.8, 2.4, 1.6], 2.0) == pytest.approx(12.5)


def test_speedup_reached_in_the_first_epoch_counts_at_its_end(tmp_path, deep):
  """Nothing is recorded before the first epoch ends: its end is the time, a bound."""
  grown = run(tmp_path, 'copy', [6.0, 6.0], [1.9, 1.8])
  assert speedup.speedups(deep, grown) == [5.0]


def test_speedup_not_reached(tmp_path, deep):
  grown = run(tmp_path, 'zero', [5.0, 5.0, 5.0], [2.8, 2.4, 2.1])
  assert speedup.speedups(deep, grown) == [None]
  assert speedup.time_to_reach([5.0, 10.0, 15.0], [2.8, 2.4, 2.1], 2.0) is None
  assert speedup.cells([None]) == ('not reached (1 of 1)', '—')


def test_speedup_of_the_baseline_against_itself_is_one(tmp_path):
  """At its first crossing of its own final loss, also when its loss rose at the end: 2.1 is
  first reached between 10 s (3.0) and 20 s (2.0), at 19 s, on both sides."""
  deep = run(tmp_path, 'last-cycle', [10.0, 10.0, 10.0], [3.0, 2.0, 2.1])
  assert speedup.time_to_reach([10.0, 20.0, 30.0], [3.0, 2.0, 2.1], 2.1) == pytest.approx(19.0)
  assert speedup.speedups(deep, deep) == [1.0]


def test_speedup_with_two_seeds_pairs_seed_k_with_seed_k(tmp_path):
  """Seed 0's baseline ends at 2.0 after 30 s, seed 1's at 2.2. The grown run's seed 0 reaches
  2.0 at 12.5 s (between 2.4 at 10 s and 1.6 at 15 s): 2.4; its seed 1 reaches 2.2 exactly at 10 s
  (and never 2.0, which would be seed 0's): 3.0."""
  deep = run(tmp_path, 'last-cycle', [10.0] * 3, [[3.0, 3.2], [2.5, 2.6], [2.0, 2.2]])
  grown = run(tmp_path, 'copy', [5.0] * 3, [[2.8, 2.9], [2.4, 2.2], [1.6, 2.1]])
  values = speedup.speedups(deep, grown)
  assert values == [pytest.approx(2.4), pytest.approx(3.0)]
  assert speedup.cells(values) == (f'2.70 ± {report.ci95(values):.2f}', '2.40 3.00')
  assert report.ci95(values) == pytest.approx(12.7062 * 0.3, rel=1e-4)  # t(0.975, 1) s/sqrt(2)
  # Seed 1 of another run never reaches its 2.2: the interval is over the seed that did, and says so.
  slow = run(tmp_path, 'zero', [5.0] * 3, [[2.8, 2.9], [2.4, 2.5], [1.6, 2.3]])
  values = speedup.speedups(deep, slow)
  assert values == [pytest.approx(2.4), None]
  assert speedup.cells(values) == ('2.40 (1 of 2 not reached)', '2.40 —')
  assert speedup.cells([None, None]) == ('not reached (2 of 2)', '— —')


def test_speedup_refuses_records_it_cannot_time(tmp_path, deep):
  """A lost epoch's seconds are not known, nor then any time after it; other seed counts do not pair."""
  gap = run(tmp_path, 'gap', [5.0, 5.0], [2.8, 1.9])
  records = report.read_jsonl(os.path.join(gap, 'metrics.jsonl'))
  records[1]['epoch'] = 3
  report.write_jsonl(os.path.join(gap, 'metrics.jsonl'), records)
  with pytest.raises(report.WorkdirError, match=r'gap/metrics.jsonl lacks epochs \[2\]'):
    speedup.speedups(deep, gap)
  two = run(tmp_path, 'two', [5.0], [[2.0, 2.0]])
  with pytest.raises(report.WorkdirError, match='has 2 seeds and .* 1: seed k is compared with seed k'):
    speedup.speedups(deep, two)
  with pytest.raises(report.WorkdirError, match='holds no epoch records'):
    speedup.speedups(deep, str(tmp_path))


def test_speedup_table_says_whether_depth_helps():
  """Lower is better; the 95% intervals disjoint or not."""
  key = 'validation_bits_per_byte'
  lm = lambda bits, ci: {'task': 'language_model', key: bits, f'{key}_ci95': ci}
  assert speedup.depth_verdict(lm(2.2, 0.05), lm(2.0, 0.05)) == (
      'Depth helps: last-cycle 2.0000 ± 0.0500, first-cycle 2.2000 ± 0.0500 validation bits per byte; '
      'last-cycle is better beyond their 95% intervals (disjoint).')
  assert speedup.depth_verdict(lm(2.05, 0.05), lm(2.0, 0.05)).startswith('Depth not shown: ')
  assert speedup.depth_verdict(lm(2.0, 0.01), lm(2.2, 0.01)).startswith('Depth hurts: ')
  images = speedup.depth_verdict({'test_error': 0.1, 'test_error_ci95': 0.01},
                                 {'test_error': 0.08, 'test_error_ci95': 0.005})
  assert images.startswith('Depth helps: last-cycle 8.00% ± 0.50, first-cycle 10.00% ± 1.00 test error')
  assert speedup.depth_verdict({key: 2.0}, lm(2.0, 0.1)) is None
