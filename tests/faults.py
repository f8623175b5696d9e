"""Runs `python -m mlres.main` with a fault injected, for the kill tests of test_reliability.py.

    python tests/faults.py POINT:EPOCH --config=... --workdir=...

POINT is where the process sends itself a signal during epoch EPOCH (1-based):
  step   SIGKILL after the epoch's second dispatched step
  save   SIGKILL while orbax writes the checkpoint of the epoch's end (the state item written,
         the metadata not yet, the folder still temporary)
  grow   SIGKILL right after the first interpolation, before the deeper model compiles (EPOCH unused)
  term   SIGTERM after the epoch's second dispatched step (the run saves and exits)
"""
import os
import signal
import sys

import orbax.checkpoint as ocp

from mlres import cli, main, report, train


def on_second_step(epoch: int, signum: int) -> None:
  progress = report.progress

  class Bar:
    def __init__(self, bar):
      self.bar, self.updates = bar, 0

    def update(self, n):
      self.bar.update(n)
      self.updates += 1
      if self.updates == 3:  # the first update is the resumed steps (none here)
        os.kill(os.getpid(), signum)

  def patched(total, description):
    bar = progress(total, description)
    if not description.startswith(f'epoch {epoch}/'):
      return bar
    class Wrapped:
      def __enter__(self):
        return Bar(bar.__enter__())

      def __exit__(self, *exc):
        return bar.__exit__(*exc)
    return Wrapped()
  report.progress = patched


def while_saving(epoch: int) -> None:
  write = ocp.JsonCheckpointHandler._save_fn

  async def patched(self, x, directory):
    if x.get('epoch') == epoch and 'partial' not in x:
      os.kill(os.getpid(), signal.SIGKILL)
    return await write(self, x, directory)
  ocp.JsonCheckpointHandler._save_fn = patched


def after_growing(_: int) -> None:
  grow = train.grow
  make_train_chunk = train.make_train_chunk
  grown = []

  def patched_grow(*args, **kwargs):
    grown.append(True)
    return grow(*args, **kwargs)

  def patched_chunk(*args, **kwargs):  # called after grow, before the deeper model compiles
    if grown:
      os.kill(os.getpid(), signal.SIGKILL)
    return make_train_chunk(*args, **kwargs)
  train.grow, train.make_train_chunk = patched_grow, patched_chunk


if __name__ == '__main__':
  point, epoch = sys.argv.pop(1).split(':')
  {'step': lambda e: on_second_step(e, signal.SIGKILL), 'save': while_saving, 'grow': after_growing,
   'term': lambda e: on_second_step(e, signal.SIGTERM)}[point](int(epoch))
  cli.run(main.main)
