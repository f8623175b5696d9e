"""Runs `python -m mlres.main` with a fault injected, for the kill tests of test_reliability.py.

    python tests/faults.py POINT:EPOCH --config=... --workdir=...

POINT is where the process sends itself a signal during epoch EPOCH (1-based):
  step   SIGKILL after the epoch's second dispatched step
  save   SIGKILL while orbax writes the checkpoint of the epoch's end (the state item written,
         the metadata not yet, the folder still temporary)
  grow   SIGKILL right after the first interpolation, before the deeper model's first step (EPOCH unused)
  term   SIGTERM after the epoch's second dispatched step (the run saves and exits)
  int    SIGINT, likewise (Ctrl-C)
"""
import contextlib
import os
import signal
import sys

import jax
import orbax.checkpoint as ocp

from mlres import cli, report, train


def signalling_progress(progress, epoch: int, signum: int):
  """`progress` (report.progress) whose bar for epoch EPOCH raises `signum` after the epoch's
  second dispatched step, inside the update: handled before it returns, so no race with the next."""
  class Bar:
    def __init__(self, bar):
      self.bar, self.updates = bar, 0

    def update(self, n):
      self.bar.update(n)
      self.updates += 1
      if self.updates == 3:  # the first update is the resumed steps (none here)
        signal.raise_signal(signum)

  @contextlib.contextmanager
  def patched(total, description):
    with progress(total, description) as bar:
      yield Bar(bar) if description.startswith(f'epoch {epoch}/') else bar
  return patched


def on_second_step(epoch: int, signum: int) -> None:
  report.progress = signalling_progress(report.progress, epoch, signum)


def while_saving(epoch: int) -> None:
  write = ocp.JsonCheckpointHandler._save_fn

  async def patched(self, x, directory):
    if x.get('epoch') == epoch and 'partial' not in x:
      os.kill(os.getpid(), signal.SIGKILL)
    return await write(self, x, directory)
  ocp.JsonCheckpointHandler._save_fn = patched


def after_growing(_: int) -> None:
  grow = train.Programs.grow

  def patched(self, state):  # the interpolated state computed, the deeper model not yet stepped
    jax.block_until_ready(grow(self, state))
    os.kill(os.getpid(), signal.SIGKILL)
  train.Programs.grow = patched


if __name__ == '__main__':
  point, epoch = sys.argv.pop(1).split(':')
  {'step': lambda e: on_second_step(e, signal.SIGKILL), 'save': while_saving, 'grow': after_growing,
   'term': lambda e: on_second_step(e, signal.SIGTERM),
   'int': lambda e: on_second_step(e, signal.SIGINT)}[point](int(epoch))
  from mlres import main  # here: importing it defines its flags, which the tests' process must not
  cli.run(main.main)
