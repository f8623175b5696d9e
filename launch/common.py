"""What the launchers share: a command line of their own absl flags and of `--config.*` overrides
for every mlres.main run they start, and the step from a row to its finished summary."""
import itertools
import os
import subprocess
import sys

from absl import app, flags

from mlres import cli, report
from mlres import config as config_lib
from mlres.config import ConfigError


def run(main) -> None:
  """cli.run for a launcher: main(overrides) gets the `--config.*` arguments, which are for
  mlres.main and no flags of the launcher, taken out of the command line before absl parses it."""
  overrides = [a for a in sys.argv[1:] if a.startswith('--config.')]
  sys.argv = [a for a in sys.argv if not a.startswith('--config.')]
  unknown = _unknown(sys.argv[1:])
  if unknown:  # named here as typed: absl's own error names the flag without its value
    refuse(f'unrecognized arguments: {" ".join(unknown)}')

  def launcher(argv):
    if len(argv) > 1:
      refuse(f'unrecognized arguments: {" ".join(argv[1:])}')
    main(overrides)
  cli.run(launcher)


def _unknown(args: list[str]) -> list[str]:
  """The arguments before a `--` that look like flags and name none absl knows."""
  app.define_help_flags()  # app.run defines --help and its kin only as it starts
  known = {*flags.FLAGS, 'flagfile', 'undefok'}  # the last two: absl parses them itself
  name = lambda arg: arg.lstrip('-').partition('=')[0]
  return [a for a in itertools.takewhile(lambda a: a != '--', args)
          if a.startswith('-') and not {name(a), name(a).removeprefix('no')} & known]


def refuse(message: str):
  """Exits 2 with the launcher's command line refused in one line that names the program, unlike
  the `error: ...` of a run that failed."""
  print(f'{os.path.basename(sys.argv[0])}: error: {message}', file=sys.stderr)
  sys.exit(2)


def finished_or_run(name: str, config_path: str, workdir: str, args: list[str]) -> dict:
  """The summary of `workdir`'s run of config_path with `--config.*` args: one finished earlier
  with the same config, else one trained (or resumed) now by mlres.main."""
  try:
    config = cli.load_config(config_path, args)
  except ConfigError as e:
    cli.fail(str(e))
  summary_path = os.path.join(workdir, 'summary.json')
  summary = report.read_summary(summary_path)
  if summary:
    stale = config_lib.stale(summary, config)
    if stale:
      cli.fail(f'{workdir} holds a finished run of another config ({"; ".join(stale)}); use another --root')
    return summary
  print(f'== {name}', flush=True)
  command = [sys.executable, '-m', 'mlres.main', f'--config={config_path}', f'--workdir={workdir}', *args]
  status = subprocess.run(command).returncode
  if status:
    cli.fail(f'the run of {name} in {workdir} stopped, as said above', status if status > 0 else 1)
  return report.read_summary(summary_path)
