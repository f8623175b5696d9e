"""Data parallelism on 8 virtual CPU devices (in subprocesses) against the same run on one device."""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import chex
import jax
import pytest

from mlres import report, train
from mlres.checkpoint import Checkpointer

from conftest import ROOT, restore, run_main

pytestmark = [pytest.mark.slow,  # every test starts processes of several devices
              pytest.mark.skipif(jax.device_count() != 1, reason='the reference runs on one device')]


@pytest.fixture
def one_device(tiny_run):
  return tiny_run[0]


def final_params(workdir, config):
  """The parameters of the run's latest checkpoint, which must be the end of epoch 3."""
  state, meta = restore(workdir, 3, config)
  assert meta['step'] == Checkpointer(os.path.join(workdir, 'checkpoints')).steps()[-1]
  return state['params']


def assert_close_runs(workdir, reference, config):
  """float32 tolerance: the devices sum their shares of the batch in another order."""
  got = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  want = report.read_jsonl(os.path.join(reference, 'metrics.jsonl'))
  assert [r['epoch'] for r in got] == [1, 2, 3]
  for g, w in zip(got, want):
    assert g['train_loss'] == pytest.approx(w['train_loss'], rel=1e-5)
    assert g['test_loss'] == pytest.approx(w['test_loss'], rel=1e-5)
  chex.assert_trees_all_close(final_params(workdir, config), final_params(reference, config),
                              rtol=1e-4, atol=1e-5)


def test_eight_devices_train_like_one_through_the_launcher(one_device, tiny_file, tmp_path, tiny_config):
  workdir = str(tmp_path / 'eight')
  result = subprocess.run(['bash', 'launch/multi_gpu.sh', tiny_file, workdir], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu',
                                                       'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'on 8 cpu device(s), 1 process(es)' in result.stdout
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['num_devices'] == 8
  assert_close_runs(workdir, one_device, tiny_config())


def test_the_step_is_one_program_over_the_global_batch():
  """Compiled for 8 devices, the step all-reduces (gradients and batch-norm statistics)."""
  script = (
      'import sys; sys.path.insert(0, "tests"); from conftest import tiny\n'
      'import jax, jax.numpy as jnp\n'
      'from mlres import data, input_pipeline, parallel, schedules, train\n'
      'c = tiny(); ds = data.load(c); layout = parallel.Layout.all_devices()\n'
      'setup = train.Setup.create(c, ds, layout)\n'
      'source = input_pipeline.DeviceInput(setup, setup.task.train_arrays())\n'
      'model = train.make_model(c, (2, 2), 4, 1.0); tx = train.make_optimizer(c)\n'
      'state = jax.jit(lambda: train.init_state(model, tx, jax.random.key(0), (8, 8, 3)),'
      ' out_shardings=layout.replicated)()\n'
      'chunk = train.make_train_chunk(model, tx, schedules.learning_rate([8], 0.5, 0.0),'
      ' setup.task, jax.random.key(1), 1, layout, 4, source.fetch)\n'
      'batches = layout.replicate(jnp.arange(64, dtype=jnp.int32).reshape(4, 16))\n'
      'hlo = jax.jit(chunk).lower(state, (source.train, batches), 0).compile().as_text()\n'
      'print(layout.num_devices, hlo.count("all-reduce("))\n')
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  devices, all_reduces = map(int, out.stdout.split())
  assert devices == 8 and all_reduces > 0


def test_a_batch_that_does_not_divide_stops_at_start(tiny_file, tmp_path):
  result = run_main(['--config.batch_size=12'], tiny_file, str(tmp_path / 'run'), devices=8)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: config.batch_size=12: the global batch must divide by the 8 devices of this run; '
      'use a multiple of 8']
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_a_checkpoint_of_eight_devices_resumes_on_one(one_device, tiny_file, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  stopped = run_main([], tiny_file, workdir, fault='term:2', devices=8)
  assert stopped.returncode == 128 + 15, stopped.stderr[-3000:]
  assert Checkpointer(os.path.join(workdir, 'checkpoints')).steps() == [4, 6]
  summary = train.train_and_evaluate(tiny_config(), workdir)
  assert summary['num_devices'] == 1
  assert_close_runs(workdir, one_device, tiny_config())


def test_a_checkpoint_of_one_device_resumes_on_eight(one_device, tiny_file, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  shutil.copytree(one_device, workdir)
  for step_dir in glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')):
    if int(os.path.basename(step_dir)) > 8:  # back to the end of the first cycle
      shutil.rmtree(step_dir)
  result = run_main([], tiny_file, workdir, devices=8)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the checkpoint of step 8' in result.stdout
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['num_devices'] == 8
  assert_close_runs(workdir, one_device, tiny_config())


def test_the_benchmark_reports_images_per_second_against_device_count(tmp_path):
  out = tmp_path / 'bench.json'
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  result = subprocess.run([sys.executable, '-m', 'mlres.bench', '--quick', '--chains=res14', '--steps=4',
                           f'--out={out}'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out) as f:
    scaling = json.load(f)['scaling']
  assert [r['devices'] for r in scaling] == [1, 2, 4, 8]
  for r in scaling:
    assert r['stage_sizes'] == [2, 2] and r['images_per_second'] == pytest.approx(16e3 / r['step_ms'])
  assert 'Speed-up' in result.stdout


def test_two_processes_of_two_devices_train_like_one(one_device, tiny_file, tmp_path, tiny_config):
  """launch/multi_host.sh twice on one machine: jax.distributed over localhost, process 0 writes;
  the train state sharded over the four devices of both processes (fsdp 4), so that every
  checkpoint is written and restored from shards no process holds all of."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / 'run')
  procs = [subprocess.Popen(
      ['bash', 'launch/multi_host.sh', f'localhost:{port}', '2', str(i), tiny_file, workdir,
       '--config.mesh.fsdp=4', '--config.mesh.min_shard_size=0'], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
  assert 'on 4 cpu device(s), 2 process(es)' in outs[0][0] and 'epoch' not in outs[1][0]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert (summary['num_devices'], summary['num_processes']) == (4, 2)
  assert_close_runs(workdir, one_device, tiny_config())
