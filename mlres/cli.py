"""What the commands share: flags parsed with one-line errors, quiet logging, exit status 2; and
a config file read as mlres.main reads it, for the launchers.

A user who mistypes a flag, a config field or a config file's path gets one line naming it, not a
traceback; so does a run stopped by a known fault (bad config, data, checkpoint, non-finite loss).
"""
from __future__ import annotations

import re
import sys

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

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
    return _parsed(flags.FLAGS, argv)
  except ConfigError as e:
    fail(str(e))


def _parsed(values: flags.FlagValues, argv: list[str]):
  """values(argv), with what a flag, a config field or a config file did wrong as one line."""
  where = next((a for a in argv if a.startswith('--config=')), '--config')
  try:
    return values(argv)
  except flags.Error as e:
    raise ConfigError(_first_line(str(e))) from e
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a field that is not there
    raise ConfigError(_no_such_field(e, argv)) from e
  except OSError as e:  # an override met a config file that config_flags could not load
    raise ConfigError(f'{where}: cannot load the config file: {_last_line(str(e))}') from e
  except Exception as e:  # the config file itself: a syntax error, an import that fails
    raise ConfigError(f'{where}: cannot load the config file: {type(e).__name__}: '
                      f'{_first_line(str(e))}') from e


# ml_collections' suggestion for a near miss, the second line of its KeyError's message.
_SUGGESTION = re.compile(r'Did you mean "(.+)" instead of "(.+)"\?')


def _no_such_field(e: Exception, argv: list[str]) -> str:
  """One line naming the override's path up to the field that is not there, and ml_collections'
  suggestion where it has one: its KeyError holds the field's repr and, for a near miss, a second
  line, and arrives wrapped in an AttributeError whose str() shows them escaped."""
  while e.args and isinstance(e.args[0], Exception):
    e = e.args[0]
  lines = str(e.args[0] if e.args else e).splitlines() or ['']
  near = next(filter(None, map(_SUGGESTION.fullmatch, lines)), None)
  field = near.group(2) if near else lines[0].strip('\'"')
  paths = [a.partition('=')[0].removeprefix('--config.').split('.') for a in argv
           if a.startswith('--config.')]
  path = next((p[:p.index(field)] for p in paths if field in p), [])
  suggestion = f' (did you mean {".".join(path + [near.group(1)])}?)' if near else ''
  return f'no such config field: {".".join(path + [field])}{suggestion}; every field is in mlres/config.py'


def config_flag(name: str = 'config', values: flags.FlagValues = flags.FLAGS):
  """The value of a config-file flag; ConfigError for a file that failed to load."""
  config, where = values[name].value, f'--{name}={values[name].config_filename}'
  try:
    config.keys()  # config_flags stands in for a file it could not load with an object that raises
  except OSError as e:  # config_flags defers a file it could not load to the first access
    raise ConfigError(f'{where}: cannot load the config file: {_last_line(str(e))}') from e
  except AttributeError:  # not a mapping at all: refused just below
    pass
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'{where}: get_config() returned {type(config).__name__!r}, not a ConfigDict')
  return config


def load_config(path: str, overrides=()) -> ml_collections.ConfigDict:
  """What `mlres.main --config=PATH OVERRIDES` trains, for a launcher that must tell whether a
  finished run is of it: parsed by the same config_flags, so that the two agree (a tuple field
  given twice, for one, is joined)."""
  argv = [sys.argv[0], f'--config={path}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values, lock_config=True, sys_argv=argv)
  _parsed(values, argv)
  return config_flag('config', values)


def _last_line(message: str) -> str:
  return message.strip().splitlines()[-1].strip()


def _first_line(message: str) -> str:
  """The line that says what was wrong: config_flags puts a traceback into some messages."""
  lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
  if 'Traceback (most recent call last):' in lines:
    return f'{lines[0]} {lines[-1]}'
  return lines[0] if lines else message

