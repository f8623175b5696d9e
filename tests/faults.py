"""Runs `python -m mlres.main` with a fault injected, for the kill tests of test_reliability.py.

    python tests/faults.py POINT:EPOCH --config=... --workdir=...

POINT is where the process sends itself a signal during epoch EPOCH (1-based):
  step   SIGKILL after the epoch's second dispatched step
  save   SIGKILL while orbax writes the checkpoint of the epoch's end (the state item written,
         the metadata not yet, the folder still temporary)
  grow   SIGKILL right after the first interpolation, before the deeper model's first step (EPOCH unused)
  term   SIGTERM after the epoch's second dispatched step (the run saves and exits)
"""
import os
import signal
import sys

import jax
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
  grow = train.Setup.grow

  def patched(self, state):  # the interpolated state computed, the deeper model not yet stepped
    jax.block_until_ready(grow(self, state))
    os.kill(os.getpid(), signal.SIGKILL)
  train.Setup.grow = patched


if __name__ == '__main__':
  point, epoch = sys.argv.pop(1).split(':')
  {'step': lambda e: on_second_step(e, signal.SIGKILL), 'save': while_saving, 'grow': after_growing,
   'term': lambda e: on_second_step(e, signal.SIGTERM)}[point](int(epoch))
  cli.run(main.main)
