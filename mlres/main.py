"""Trains one configuration: `python -m mlres.main --config=configs/digits.py --workdir=DIR`."""
import os
import shlex
import sys

from absl import app, flags
import jax
from ml_collections import config_flags

from mlres import cli, parallel, report, train
from mlres.signals import Interrupted

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A config file returning a ConfigDict.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics.jsonl and summary.json; '
                    'the same folder resumes the run.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.config_flag()
  parallel.initialize(config.distributed)
  if config.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(config.compilation_cache))
  try:
    summary = train.train_and_evaluate(config, FLAGS.workdir)
  except Interrupted as e:  # its checkpoint is complete
    print(f'{e}\nresume with: {shlex.join(["python", "-m", "mlres.main", *sys.argv[1:]])}',
          file=sys.stderr)
    _exit_now(128 + e.signum)
  except KeyboardInterrupt:
    print(f'error: interrupted at once; run the same command to resume from the last checkpoint in '
          f'{FLAGS.workdir}', file=sys.stderr)
    _exit_now(130)
  if not parallel.is_main_process():
    return
  print()
  print(report.table([summary]))
  print(f'\nmetrics: {os.path.join(FLAGS.workdir, "metrics.jsonl")}  '
        f'summary: {os.path.join(FLAGS.workdir, "summary.json")}')


def _exit_now(status: int) -> None:
  """Exits without waiting for a compile still running in the background: a stopped run does not
  need it, and a preempted one may have seconds left."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


if __name__ == '__main__':
  cli.run(main)
