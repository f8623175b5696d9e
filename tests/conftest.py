"""Shared fixtures: a tiny config, one JAX compilation cache for all the processes of a run,
`python -m mlres.main` in a subprocess, and restoring a run's checkpoint."""
import os
import shutil
import subprocess
import sys
import tempfile

import jax
import pytest

import mlres
from mlres import config as config_lib, train
from mlres.checkpoint import Checkpointer

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
# One compilation cache per run of the suite, shared by all its processes (pytest-xdist's workers
# inherit the variable; the commands the tests start take JAX's own, which a config's default
# compilation_cache follows) and removed at the end: a cache carried over from an earlier run, or
# the user's ~/.cache/mlres/jax, would hide what a fresh clone pays.
_OWN_CACHE = 'MLRES_TESTS_JAX_CACHE' not in os.environ
CACHE = os.environ.setdefault('MLRES_TESTS_JAX_CACHE', tempfile.mkdtemp(prefix='mlres-tests-jax-cache-'))
os.environ['JAX_COMPILATION_CACHE_DIR'] = CACHE
jax.config.update('jax_compilation_cache_dir', CACHE)
# Every program, however quick to compile: the workers and the tests compile many of the same small
# ones (the fast tier: 218 s against 239 s at a 0.5 s threshold, docs/testing.md).
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(CACHE, ignore_errors=True)


def write_files(root, files: dict) -> None:
  """Each `files` entry, a path under `root` and its bytes, written with its folders."""
  for name, content in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(content)


def split_names(count: int, validation: bool, prefix: str = 'src/f') -> list[str]:
  """The first `count` names '{prefix}{i}.py' that text.py's hash rule puts in (or out of) the
  validation split."""
  from mlres.data import text
  chosen = (f'{prefix}{i}.py' for i in range(10_000))
  return [n for n in chosen if text.in_validation(n) == validation][:count]


def tiny(**overrides):
  """Two stages of width 4 and 8 on 8x8 synthetic images: compiles in seconds on a CPU."""
  c = config_lib.default()
  c.name = 'tiny'
  c.dataset = 'synthetic'
  c.synthetic.update(dict(num_train=64, num_test=40, image_size=8, channels=3, num_classes=4))
  c.model.widths = (4, 8)
  c.cycles.stage_sizes, c.cycles.epochs = ((2, 2), (4, 4)), (2, 1)
  c.num_epochs = 3
  c.batch_size = 16
  c.eval_batch_size = 32
  c.augment.update(dict(pad=2, flip=True))
  c.checkpoint_every_epochs = 1
  c.compilation_cache = ''
  c.compile_ahead = 'on'  # the background compile, as on a GPU ('auto' is off on a CPU)
  c.update_from_flattened_dict(overrides)
  return c


def tiny_lm(**overrides):
  """A GPT of width 8 (1 then 2 blocks, context 8) on the standard library's bytes, AdamW with its
  moments carried through the growth, warmed up for 2 steps a cycle and clipped: 3 epochs of 4 steps
  of 8 windows, 16 validation windows."""
  c = config_lib.gpt('i')
  c.name = 'tiny-lm'
  c.model = config_lib.model('gpt', width=8, num_heads=2, mlp_dim=16, context=8)
  c.cycles.stage_sizes, c.cycles.epochs = ((1,), (2,)), (2, 1)
  c.num_epochs = 3
  c.text.update(dict(steps_per_epoch=4, eval_windows=16))
  c.batch_size, c.eval_batch_size = 8, 8
  c.optimizer.momentum_at_interpolation = 'interpolate'
  c.optimizer.warmup_steps = 2  # the configs' warmup, shorter than the tiny cycles
  c.checkpoint_every_epochs = 1
  c.compilation_cache = ''
  c.update_from_flattened_dict(overrides)
  return c


def train_counting_traces(config, workdir):
  """Trains, recording the architecture each time the train step is traced."""
  traces, original = [], train.train_step

  def counting(model, *args):
    traces.append(getattr(model, 'stage_sizes', None) or (model.num_blocks,))  # a ViT's, GPT's one stack
    return original(model, *args)
  train.train_step = counting
  try:
    return train.train_and_evaluate(config, workdir), traces
  finally:
    train.train_step = original


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """One uninterrupted run of the tiny config, shared by every test that reads it or copies its
  workdir: (workdir, summary, the architectures the train step was traced for)."""
  workdir = str(tmp_path_factory.mktemp('tiny-run'))
  return (workdir, *train_counting_traces(tiny(), workdir))


@pytest.fixture
def tiny_config():
  return tiny


def config_file(folder, name: str) -> str:
  """Config `name` of this file (tiny, tiny_lm) as a config file for a subprocess, sharing the
  tests' compilation cache."""
  path = os.path.join(folder, f'{name}.py')
  with open(path, 'w') as f:
    f.write(f'import sys\nsys.path.insert(0, {TESTS!r})\nfrom conftest import {name}\n\n'
            f'def get_config():\n  return {name}(compilation_cache={CACHE!r})\n')
  return path


@pytest.fixture
def tiny_file(tmp_path):
  return config_file(tmp_path, 'tiny')


def run_main(args, config_file=None, workdir=None, fault=None, devices=1, script=None):
  """`python -m mlres.main` (or tests/faults.py with a fault, or another `script`) on `devices`
  virtual CPU devices."""
  command = [sys.executable, *([os.path.join(TESTS, 'faults.py'), fault] if fault else
                               [script] if script else ['-m', 'mlres.main'])]
  command += [f'--config={config_file}'] if config_file else []
  command += [f'--workdir={workdir}'] if workdir else []
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  return subprocess.run(command + args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def scalars(workdir):
  """tag -> [(epoch, value)] as TensorBoard's own reader gives them (purges applied)."""
  from tensorboard.backend.event_processing import event_accumulator
  reader = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.SCALARS: 0})
  reader.Reload()
  return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()['scalars']}


def restore(workdir, epoch, config):
  """The train state saved at the end of `epoch`, in the architecture its metadata names."""
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'))
  state, meta = ckpt.restore(ckpt.step_of_epoch(epoch), lambda meta: train.abstract_state(
      mlres.data.load(config), meta))
  ckpt.close()
  return state, meta
