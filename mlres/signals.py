"""Stopping a run cleanly: the first SIGINT or SIGTERM asks the loop to save and stop."""
from __future__ import annotations

import signal
import sys
import threading


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped the run after it saved a checkpoint; exit with 128 + signum."""

  def __init__(self, signum: int, detail: str):
    super().__init__(f'stopped by {signal.Signals(signum).name} {detail}')
    self.signum = signum


class StopSignals:
  """Within the block, the first SIGINT or SIGTERM is recorded in `signum` for the loop to save
  and stop after its current step; a second one stops at once, as if the block had not caught it."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum, self._previous = None, {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # only there can Python catch signals
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    if self.signum is not None:
      self.__exit__()
      signal.raise_signal(signum)
      return
    self.signum = signum
    print(f'\n{signal.Signals(signum).name}: saving a checkpoint after the current step; send it '
          'again to stop at once', file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
