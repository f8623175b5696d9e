"""Stopping a run cleanly: the first SIGINT or SIGTERM asks the loop to save and stop, a second one
stops it at once."""
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
  and stop after its current step; a second one stops at once (`stop_now`), whatever handler the
  block found. The handlers it found are restored when it ends."""

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
      stop_now(signum)
      return
    self.signum = signum
    print(f'\n{signal.Signals(signum).name}: saving a checkpoint after the current step; send it '
          'again to stop at once', file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}


def stop_now(signum: int) -> None:
  """Stops the process as the signal's default action does: KeyboardInterrupt for SIGINT (what
  Python's own handler raises), death by the signal for SIGTERM. Not by the handler found before:
  a process started in the background by a non-interactive shell, or under nohup, inherits SIGINT
  ignored, and re-raising the signal there did nothing."""
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  signal.signal(signum, signal.SIG_DFL)
  signal.raise_signal(signum)
