"""What the commands share: flags parsed with one-line errors, quiet logging, exit status 2.

A user who mistypes a flag, a config field or a config file's path gets one line naming it, not a
traceback; so does a run stopped by a known fault (bad config, data, checkpoint, non-finite loss).
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
import ml_collections

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
