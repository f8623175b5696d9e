"""What the commands share: flags parsed with one-line errors, quiet logging, exit status 2; and
the launchers' step from a row to its finished summary.

A user who mistypes a flag, a config field or a config file's path gets one line naming it, not a
traceback; so does a run stopped by a known fault (bad config, data, checkpoint, non-finite loss).
"""
from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags, logging
import ml_collections

from mlres import config as config_lib
from mlres import report
from mlres.checkpoint import CheckpointError
from mlres.config import ConfigError
from mlres.data import DataError
from mlres.report import WorkdirError

ERRORS = (ConfigError, DataError, CheckpointError, WorkdirError, FloatingPointError)


def fail(message: str, status: int = 2):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def run(main, errors=ERRORS) -> None:
  """absl's app.run, with flag and config-file errors and `errors` reported in one line."""
  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # orbax and JAX are chatty at INFO
    try:
      main(argv)
    except errors as e:
      fail(str(e))
    except app.UsageError as e:  # one line and status 2, not absl's help text
      fail(str(e))
  app.run(guarded, flags_parser=_parse)


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(_first_line(str(e)))
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a field that is not there
    field = str(e).strip('\'"')
    fail(f'no such config field: {field}; every field is in mlres/config.py')
  except OSError as e:  # an override met a config file that config_flags could not load
    fail(f'--config: cannot load the config file: {_last_line(str(e))}')
  except Exception as e:  # the config file itself: a syntax error, an import that fails
    fail(f'--config: cannot load the config file: {type(e).__name__}: {_first_line(str(e))}')


def config_flag(name: str = 'config'):
  """The value of a config-file flag; a file that failed to load is reported in one line."""
  config = flags.FLAGS[name].value
  try:
    config.keys()  # config_flags stands in for a file it could not load with an object that raises
  except OSError as e:  # config_flags defers a file it could not load to the first access
    fail(f'--{name}: cannot load the config file: {_last_line(str(e))}')
  except AttributeError:  # not a mapping at all: refused just below
    pass
  if not isinstance(config, ml_collections.ConfigDict):
    fail(f'--{name}: get_config() returned {type(config).__name__!r}, not a ConfigDict')
  return config


def _last_line(message: str) -> str:
  return message.strip().splitlines()[-1].strip()


def _first_line(message: str) -> str:
  """The line that says what was wrong: config_flags puts a traceback into some messages."""
  lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
  if 'Traceback (most recent call last):' in lines:
    return f'{lines[0]} {lines[-1]}'
  return lines[0] if lines else message


def finished_or_run(name: str, config_path: str, workdir: str, args: list[str]) -> dict:
  """The summary of `workdir`'s run of config_path with `--config.*` args: one finished earlier
  with the same config, else one trained (or resumed) now by mlres.main."""
  try:
    config = config_lib.from_file(config_path, args)
  except ConfigError as e:
    fail(str(e))
  summary_path = os.path.join(workdir, 'summary.json')
  summary = report.read_summary(summary_path)
  if summary:
    stale = config_lib.stale(summary, config)
    if stale:
      fail(f'{workdir} holds a finished run of another config ({"; ".join(stale)}); use another --root')
    return summary
  print(f'== {name}', flush=True)
  command = [sys.executable, '-m', 'mlres.main', f'--config={config_path}', f'--workdir={workdir}', *args]
  status = subprocess.run(command).returncode
  if status:
    fail(f'the run of {name} in {workdir} stopped, as said above', status if status > 0 else 1)
  return report.read_summary(summary_path)
