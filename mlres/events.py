"""TensorBoard event files of a run's per-epoch metrics, beside its metrics.jsonl.

Written with tensorboardX's record writer and protocol buffers, which need no TensorFlow, when it is
installed (`pip install -e ".[tensorboard]"`) and config.tensorboard is on; `tensorboard --logdir
runs` shows every run under runs/. Each start of a run opens a new file whose first event purges the
epochs from the first one it trains again: TensorBoard then drops what a crash left of later epochs,
so each epoch appears once.

Every event is on disk when `write` returns, written in the caller's thread. tensorboardX's
SummaryWriter hands events to a background thread, and its flush() does not wait for them: the epoch
written just before a stop was still queued, or in that thread's file buffer, when the stopped run
left through os._exit (or was killed), while its line was in metrics.jsonl and its checkpoint on
disk, so the resumed run, purging only the epochs after that checkpoint, never wrote it again.
"""
from __future__ import annotations

import os
import time
from typing import Any

# Tag -> the metrics.jsonl field it plots; 'blocks' is added from the record's stage sizes.
SCALARS = {'train/loss': 'train_loss', 'train/accuracy': 'train_accuracy', 'test/loss': 'test_loss',
           'test/accuracy': 'test_accuracy', 'schedule/lr': 'lr', 'schedule/h': 'h',
           'speed/steps_per_second': 'steps_per_second'}


def writer(workdir: str, done: int):
  """An event file whose events start after epoch `done`; None where tensorboardX is not installed."""
  try:
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
  except ImportError:
    return None
  # The suffix orders two starts within one second (file names begin with the time in seconds).
  file = EventsWriter(os.path.join(workdir, 'events'), f'.{done:06d}')
  # A restart at epoch done + 1: TensorBoard drops every event of that step and later read before it.
  file.write_event(Event(wall_time=time.time(), step=done + 1,
                         session_log=SessionLog(status=SessionLog.START)))
  file.flush()
  return file


def write(file, record: dict[str, Any]) -> None:
  """One epoch's record as scalars at step = its epoch, per seed too where there are several,
  flushed to disk before it returns."""
  from tensorboardX.proto.event_pb2 import Event
  from tensorboardX.proto.summary_pb2 import Summary
  values = {tag: record[field] for tag, field in SCALARS.items()}
  values['schedule/blocks'] = sum(record['stage_sizes'])
  for field, per_seed in record.get('seeds', {}).items():
    values.update({f'seeds/{field}/{seed}': value for seed, value in enumerate(per_seed)})
  summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))
                           for tag, value in values.items()])
  file.write_event(Event(wall_time=time.time(), step=record['epoch'], summary=summary))
  file.flush()
