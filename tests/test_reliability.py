"""Faults a long run meets: kills, signals, damaged checkpoints, another config, NaN, bad input."""
import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import sys

import chex
import numpy as np
import pytest

from mlres import analyze, report, train
from mlres.checkpoint import CheckpointError, Checkpointer
from mlres.config import ConfigError
from mlres.data import describe
from mlres.signals import StopSignals

from conftest import ROOT, restore, run_main

TIMING = {'epoch_seconds', 'steps_per_second'}


@pytest.fixture
def reference(tiny_run):
  """The uninterrupted tiny run: 3 epochs of 4 steps, interpolated after epoch 2."""
  return tiny_run[:2]


def assert_same_run(workdir, summary, reference, config):
  """Final parameters bit for bit, every metric but the timings, the test error."""
  ref_dir, ref_summary = reference
  chex.assert_trees_all_equal(restore(workdir, 3, config)[0], restore(ref_dir, 3, config)[0])
  strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]
  assert strip(report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))) == \
      strip(report.read_jsonl(os.path.join(ref_dir, 'metrics.jsonl')))
  assert summary['test_error'] == ref_summary['test_error'] and summary['epochs'] == 3


@pytest.mark.slow
@pytest.mark.parametrize('fault', ['step:2', 'save:2', 'grow:0'],
                         ids=['during-a-step', 'during-a-checkpoint-write', 'after-interpolating'])
def test_a_killed_run_resumes_to_the_same_result(reference, tiny_file, tmp_path, tiny_config, fault):
  workdir = str(tmp_path / 'run')
  killed = run_main([], tiny_file, workdir, fault)
  assert killed.returncode == -9, killed.stderr[-2000:]
  if fault.startswith('save'):  # killed mid-write: the epoch-2 checkpoint is a temporary folder
    assert glob.glob(os.path.join(workdir, 'checkpoints', '8.orbax-checkpoint-tmp*'))
    assert Checkpointer(os.path.join(workdir, 'checkpoints')).steps() == [4]
  summary = train.train_and_evaluate(tiny_config(), workdir)
  assert_same_run(workdir, summary, reference, tiny_config())


@pytest.mark.slow
def test_sigterm_saves_the_step_and_says_how_to_resume(reference, tiny_file, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  stopped = run_main([], tiny_file, workdir, 'term:2')
  assert stopped.returncode == 128 + 15, stopped.stderr[-2000:]
  lines = stopped.stderr.strip().splitlines()
  assert lines[-2].startswith('stopped by SIGTERM at epoch 2, step 2 of 4; saved the checkpoint of step 6')
  assert lines[-1].startswith('resume with: python -m mlres.main --config=')
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'))
  assert ckpt.steps() == [4, 6] and ckpt.meta(6)['partial']['steps'] == 2
  assert [r['epoch'] for r in report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))] == [1]
  assert analyze.load_run(workdir).label.endswith('(epoch 1 and 2 steps)')  # not taken for epoch 1's end
  summary = train.train_and_evaluate(tiny_config(), workdir)
  assert_same_run(workdir, summary, reference, tiny_config())


def damage(step_dir, how):
  if how == 'flipped-bytes':  # the largest data file: orbax would restore it without complaint
    files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True)
             if os.path.isfile(f)]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, 'rb').read())
    for i in range(len(data) // 3, len(data) // 3 + 8):
      data[i] ^= 0xFF
    open(path, 'wb').write(bytes(data))
  elif how == 'truncated-metadata':
    path = os.path.join(step_dir, 'meta', 'metadata')
    open(path, 'w').write(open(path).read()[:20])
  else:
    shutil.rmtree(os.path.join(step_dir, 'state'))


@pytest.mark.parametrize('how', ['flipped-bytes', 'truncated-metadata', 'deleted-state'])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(reference, tmp_path, tiny_config, capsys, how):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  damage(os.path.join(workdir, 'checkpoints', '12'), how)
  summary = train.train_and_evaluate(tiny_config(), workdir)
  err = capsys.readouterr().err
  assert 'warning: the checkpoint of step 12' in err and 'trying the one before' in err
  assert os.path.isdir(os.path.join(workdir, 'checkpoints.damaged', '12'))
  assert_same_run(workdir, summary, reference, tiny_config())


def test_a_run_whose_checkpoints_are_all_damaged_stops(reference, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  for step_dir in glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')):
    damage(step_dir, 'flipped-bytes')
  with pytest.raises(CheckpointError, match='no intact checkpoint'):
    train.train_and_evaluate(tiny_config(), workdir)


def test_another_config_is_refused_with_its_differences(reference, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  with pytest.raises(ConfigError, match=r'optimizer.eta_max: 0.5 -> 0.2; seed: 0 -> 1\); .*any_config'):
    train.train_and_evaluate(tiny_config(**{'optimizer.eta_max': 0.2, 'seed': 1}), workdir)
  # How the run is carried out may change: the finished run is found complete.
  same = train.train_and_evaluate(tiny_config(name='renamed', steps_per_dispatch=2), workdir)
  assert same['test_error'] == reference[1]['test_error']


def test_a_run_resumed_on_other_data_is_refused_naming_both(reference, tmp_path, tiny_config, monkeypatch):
  """Data is not in the config (data_dir is operational, and one folder may hold edited files): its
  fingerprint in every checkpoint is. Here one pixel differs; nothing of the run changes."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  load = train.data_lib.load
  original = load(tiny_config())
  images = original.train_images.copy()
  images[0, 0, 0, 0] ^= 1
  edited = dataclasses.replace(original, train_images=images)
  monkeypatch.setattr(train.data_lib, 'load', lambda config: edited)
  before = files_in(workdir)
  theirs, ours = (re.escape(describe(ds.fingerprint)) for ds in (original, edited))
  assert theirs != ours
  with pytest.raises(ConfigError, match=rf'^the checkpoint of step 12 in {re.escape(workdir)} was trained on '
                                        rf'{theirs}, but this run reads {ours}; [^\n]*any_config[^\n]*$'):
    train.train_and_evaluate(tiny_config(), workdir)
  assert files_in(workdir) == before
  # Asked to, it continues on this data: here a finished run, whose summary names the data it read.
  assert train.train_and_evaluate(tiny_config(resume='any_config'), workdir)['data'] == original.fingerprint


def files_in(folder) -> dict[str, bytes]:
  """Every file under `folder` and its bytes."""
  paths = glob.glob(os.path.join(folder, '**'), recursive=True)
  return {path: open(path, 'rb').read() for path in paths if os.path.isfile(path)}


def test_a_run_of_another_network_is_refused_and_its_checkpoints_kept(reference, tmp_path, tiny_config):
  """Its checkpoints are restored into the network their metadata names, so they are not mistaken
  for damaged ones, and the config is refused: by its differences, or with any_config by the
  network it would build."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  steps = Checkpointer(os.path.join(workdir, 'checkpoints')).steps()
  with pytest.raises(ConfigError, match=r'model.widths: \[4, 8\] -> \[4, 16\]'):
    train.train_and_evaluate(tiny_config(**{'model.widths': (4, 16)}), workdir)
  with pytest.raises(CheckpointError, match=r'holds another network than this config builds '
                                            r'\(widths: \[4, 8\] -> \[4, 16\]; num_seeds: 1 -> 2\)'):
    train.train_and_evaluate(tiny_config(**{'model.widths': (4, 16), 'num_seeds': 2,
                                            'resume': 'any_config'}), workdir)
  assert Checkpointer(os.path.join(workdir, 'checkpoints')).steps() == steps
  assert not os.path.exists(os.path.join(workdir, 'checkpoints.damaged'))


def test_a_non_finite_loss_stops_at_once_and_keeps_the_last_good_checkpoint(reference, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  for step_dir in glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')):
    if int(os.path.basename(step_dir)) > 8:
      shutil.rmtree(step_dir)
  config = tiny_config(**{'optimizer.eta_max': 1e30, 'resume': 'any_config'})  # from epoch 3
  with pytest.raises(FloatingPointError, match=r'at epoch 3, step [1-4] of 4; nothing saved, the last good '
                                               r'checkpoint is step 8'):
    train.train_and_evaluate(config, workdir)
  assert Checkpointer(os.path.join(workdir, 'checkpoints')).steps() == [8]
  assert [r['epoch'] for r in report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))] == [1, 2]


@pytest.mark.parametrize('override, message', [
    ({'batch_size': 8}, r'trained in epochs of 4 steps but this config\'s batch_size=8 makes epochs of 8'),
    ({'model.h': 0.5}, r'holds 2-2 blocks at h = 1 but this config plans 2-2 blocks at h = 0.5 there')])
def test_a_resume_that_would_not_continue_the_run_is_refused_even_when_asked(
    reference, tmp_path, tiny_config, override, message):
  """With another batch size the step-counted learning rate would not restart at the next cycle;
  with another h the restored network would keep its own step size under the config's name."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  for step_dir in glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')):
    if int(os.path.basename(step_dir)) > 8:
      shutil.rmtree(step_dir)
  with pytest.raises(CheckpointError, match=message):
    train.train_and_evaluate(tiny_config(**override, resume='any_config'), workdir)
  assert Checkpointer(os.path.join(workdir, 'checkpoints')).steps() == [8]


def test_a_workdir_that_cannot_hold_checkpoints_is_refused_before_training(tmp_path, tiny_config):
  """orbax, failing to save in its background thread, would leave the run hanging."""
  (tmp_path / 'checkpoints').write_text('a file in the way')
  with pytest.raises(report.WorkdirError, match=f'--workdir={tmp_path}: cannot write checkpoints there '
                                                r'\(File exists: .*checkpoints\)'):
    train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['checkpoints']
  with pytest.raises(report.WorkdirError, match='--workdir is empty: name a folder'):
    train.train_and_evaluate(tiny_config(), '')  # not the current folder


def test_a_checkpoint_write_that_fails_is_one_error(tmp_path):
  """As a disk that fills during the run: orbax's background failure surfaces as one line."""
  (tmp_path / 'checkpoints').write_text('in the way')
  ckpt = Checkpointer(str(tmp_path / 'checkpoints'))
  with pytest.raises(CheckpointError, match=r'writing a checkpoint \(step 1\) in .*checkpoints failed '
                                            r'\(NotADirectoryError: '):
    ckpt.save(1, {'w': np.ones(3, np.float32)}, {'epoch': 1})
    ckpt.wait()


def interrupted_after_epoch_2(reference, workdir):
  """The reference run as a kill during epoch 3 leaves it: checkpoints to epoch 2, no summary."""
  shutil.copytree(reference[0], workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '12'))
  os.remove(os.path.join(workdir, 'summary.json'))
  return os.path.join(workdir, 'metrics.jsonl')


def test_a_metrics_line_cut_short_by_a_crash_is_dropped(reference, tmp_path, tiny_config, capsys):
  workdir = str(tmp_path / 'run')
  metrics = interrupted_after_epoch_2(reference, workdir)
  text = open(metrics).read()
  open(metrics, 'w').write(text[:-len(text.splitlines()[-1]) // 2 - 1])  # epoch 3's line, half
  summary = train.train_and_evaluate(tiny_config(), workdir)
  assert 'warning: the last line of' in capsys.readouterr().err
  assert_same_run(workdir, summary, reference, tiny_config())


def test_a_damaged_metrics_line_before_the_last_stops_the_run(reference, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  metrics = interrupted_after_epoch_2(reference, workdir)
  lines = open(metrics).read().splitlines(keepends=True)
  open(metrics, 'w').write(lines[0][:10] + '\n' + ''.join(lines[1:]))
  with pytest.raises(report.WorkdirError, match=r'metrics.jsonl, line 1, is not JSON'):
    train.train_and_evaluate(tiny_config(), workdir)


def test_lost_metrics_lines_are_said_and_never_reported_as_the_result(reference, tmp_path, tiny_config,
                                                                       capsys):
  workdir = str(tmp_path / 'run')
  metrics = interrupted_after_epoch_2(reference, workdir)
  os.remove(metrics)
  train.train_and_evaluate(tiny_config(), workdir)  # epoch 3 is trained again and recorded
  assert 'lacks 2 of the 2 epochs the checkpoint has trained (1 to 2)' in capsys.readouterr().err
  assert [r['epoch'] for r in report.read_jsonl(metrics)] == [3]
  os.remove(os.path.join(workdir, 'summary.json'))
  os.remove(metrics)  # finished, and the last epoch's line gone: no result to report
  with pytest.raises(report.WorkdirError, match='lacks the last epoch, 3'):
    train.train_and_evaluate(tiny_config(), workdir)


def test_a_finished_run_keeps_its_summary(reference, tmp_path, tiny_config):
  """Even continued with another config: nothing is trained, so nothing of it changes."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  before = open(os.path.join(workdir, 'summary.json')).read()
  summary = train.train_and_evaluate(tiny_config(**{'optimizer.eta_max': 0.2, 'resume': 'any_config'}),
                                     workdir)
  assert summary['config']['optimizer']['eta_max'] == 0.5
  assert open(os.path.join(workdir, 'summary.json')).read() == before
  open(os.path.join(workdir, 'summary.json'), 'w').write('{"test_err')  # not a summary: made again
  assert train.train_and_evaluate(tiny_config(), workdir)['test_error'] == reference[1]['test_error']
  assert report.read_summary(os.path.join(workdir, 'summary.json'))['epochs'] == 3


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--config=configs/digits.py', '--config.no_such_field=1'], 'no such config field: no_such_field'),
    (['--config=configs/digits.py', '--config.batch_size=abc'], '--config.batch_size=abc: invalid literal'),
    (['--config=configs/no_such_file.py'], "--config=configs/no_such_file.py: cannot load the config file: [Errno 2] No such file"),
    (['--config=configs/digits.py', '--config.cycles.epochs=(12,10,11)'], 'must add up to num_epochs=32'),
    (['--config=configs/digits.py', '--config.resume=maybe'], "config.resume='maybe': must be one of"),
    (['--config=configs', '--config.num_epochs=3'], "--config=configs: cannot load the config file: Configuration"),
    (['--config=configs/digits.py', 'stray'], 'error: unexpected arguments: stray'),
], ids=['unknown-field', 'wrong-type', 'missing-file', 'epochs-do-not-add-up', 'unknown-resume',
        'folder-with-an-override', 'stray-argument'])
def test_bad_command_lines_get_one_line(tmp_path, args, message):
  result = run_main(args + [f'--workdir={tmp_path}'])
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], result.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('body, message', [
    ('def get_config():\n  raise ValueError("no such experiment")\n',
     'flag --config={bad}: Error whilst parsing config file: ValueError: no such experiment'),
    ('def get_config(:\n', '--config={bad}: cannot load the config file: SyntaxError: invalid syntax (bad.py, line 1)'),
    ('import no_such_module\n', "--config={bad}: cannot load the config file: ModuleNotFoundError: No module named "
                                "'no_such_module'"),
    ('def get_config():\n  return 1\n', "--config={bad}: get_config() returned 'int', not a ConfigDict"),
], ids=['raises', 'syntax-error', 'failing-import', 'not-a-config'])
def test_a_config_file_that_cannot_load_gets_one_line(tmp_path, body, message):
  bad = tmp_path / 'bad.py'
  bad.write_text(body)
  result = run_main([], str(bad), str(tmp_path / 'run'))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [f'error: {message.format(bad=bad)}']


def test_ctrl_c_asks_to_save_and_a_second_stops_at_once(capsys):
  """raise_signal runs the handler before it returns: os.kill's delivery may come later. The handler
  found before (Python's, or SIG_IGN where pytest itself started in the background) comes back."""
  found = signal.getsignal(signal.SIGINT)
  with StopSignals() as stop:
    signal.raise_signal(signal.SIGINT)
    assert stop.signum == signal.SIGINT  # recorded, no KeyboardInterrupt: the loop saves first
    assert 'SIGINT: saving a checkpoint after the current step' in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is found


# A process that inherits `signum` ignored, as a background job of a non-interactive shell inherits
# SIGINT, waits in StopSignals for the signal twice.
IGNORING_CHILD = """
import signal, sys, time
from mlres.signals import StopSignals
signum = int(sys.argv[1])
signal.signal(signum, signal.SIG_IGN)
with StopSignals() as stop:
  print('ready', flush=True)
  while stop.signum is None:
    time.sleep(0.01)
  print('recorded', flush=True)
  time.sleep(120)
print('not stopped', flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_second_signal_stops_at_once_whatever_handler_was_inherited(signum):
  child = subprocess.Popen([sys.executable, '-c', IGNORING_CHILD, str(int(signum))], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'})
  try:
    assert child.stdout.readline() == 'ready\n'
    child.send_signal(signum)
    assert child.stdout.readline() == 'recorded\n'
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)  # it would sleep 120 s, then say 'not stopped'
  finally:
    child.kill()
  assert child.returncode == -signum and out == '', err  # Python dies by SIGINT after KeyboardInterrupt
  assert err.rstrip().endswith('KeyboardInterrupt') == (signum == signal.SIGINT), err

