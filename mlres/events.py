"""TensorBoard event files of a run's per-epoch metrics, beside its metrics.jsonl.

Written with tensorboardX, which needs no TensorFlow, when it is installed (`pip install -e
".[tensorboard]"`) and config.tensorboard is on; `tensorboard --logdir runs` shows every run under
runs/. Each start of a run opens a new file whose first event purges the epochs from the first one
it trains again: TensorBoard then drops what a crash left of later epochs, so each epoch appears once.
"""
from __future__ import annotations

from typing import Any

# Tag -> the metrics.jsonl field it plots; 'blocks' is added from the record's stage sizes.
SCALARS = {'train/loss': 'train_loss', 'train/accuracy': 'train_accuracy', 'test/loss': 'test_loss',
           'test/accuracy': 'test_accuracy', 'schedule/lr': 'lr', 'schedule/h': 'h',
           'speed/steps_per_second': 'steps_per_second'}


def writer(workdir: str, done: int):
  """A writer whose events start after epoch `done`; None where tensorboardX is not installed."""
  try:
    import tensorboardX
  except ImportError:
    return None
  # The suffix orders two starts within one second (file names begin with the time in seconds).
  return tensorboardX.SummaryWriter(workdir, purge_step=done + 1, filename_suffix=f'.{done:06d}')


def write(writer, record: dict[str, Any]) -> None:
  """One epoch's record as scalars at step = its epoch, per seed too where there are several."""
  step = record['epoch']
  for tag, field in SCALARS.items():
    writer.add_scalar(tag, record[field], step)
  writer.add_scalar('schedule/blocks', sum(record['stage_sizes']), step)
  for field, values in record.get('seeds', {}).items():
    for seed, value in enumerate(values):
      writer.add_scalar(f'seeds/{field}/{seed}', value, step)
  writer.flush()  # a crash loses no finished epoch
