"""TensorBoard's event files hold every epoch of metrics.jsonl exactly once, after any stop and resume:
real signals sent to a real `python -m mlres.main` (tests/faults.py), read by TensorBoard's reader."""
import os

import numpy as np
import pytest

from mlres import events, report, train

from conftest import run_main, scalars


def assert_every_epoch_once(workdir, when):
  """TensorBoard shows each epoch of metrics.jsonl once, with its values, and nothing else."""
  records = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  got = scalars(workdir)
  for tag, field in events.SCALARS.items():
    assert got.get(tag, []) == [(r['epoch'], np.float32(r[field])) for r in records], f'{when}: {tag}'
  return [r['epoch'] for r in records]


def test_an_epoch_is_on_disk_when_written(tmp_path):
  """Not when the writer is closed: a stopped run leaves through os._exit without closing it."""
  record = {'epoch': 1, 'stage_sizes': [2, 2], **{field: 0.5 for field in events.SCALARS.values()}}
  report.write_jsonl(str(tmp_path / 'metrics.jsonl'), [record])
  file = events.writer(str(tmp_path), 0)
  events.write(file, record)
  assert assert_every_epoch_once(str(tmp_path), 'before closing') == [1]
  file.close()


# One run, stopped three times, each start resuming where the one before stopped (the tiny config:
# 3 epochs of 4 steps, cycle 0 ends after epoch 2): the fault, its exit status, what it says.
STOPS = [('int:1', 128 + 2, 'stopped by SIGINT at epoch 1, step 2 of 4'),  # inside the first epoch
         ('term:1', 128 + 15, 'stopped by SIGTERM at the end of epoch 1'),
         ('save:2', -9, '')]  # SIGKILL while the checkpoint at cycle 0's end is written


@pytest.mark.slow
def test_every_epoch_once_after_each_kind_of_stop(tiny_file, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  for fault, status, said in STOPS:
    stopped = run_main([], tiny_file, workdir, fault)
    assert stopped.returncode == status and said in stopped.stderr, stopped.stderr[-2000:]
    assert_every_epoch_once(workdir, f'after {fault}')
  # The epoch-2 checkpoint was never completed: epoch 2 is trained again, and its first record purged.
  train.train_and_evaluate(tiny_config(), workdir)
  assert assert_every_epoch_once(workdir, 'at the end') == [1, 2, 3]
