"""Batches read on the host (config.input='host', mlres.input_pipeline), token files and image
folders in training: what the host reads, its seeds, its resume to the batch, and its bad input."""
import os
import shutil

import chex
import numpy as np
import pytest

import mlres.data
from mlres import config as config_lib
from mlres import input_pipeline, parallel, report, tasks, train
from mlres.config import ConfigError
from mlres.data import DataError, shards, text, tokens

from conftest import config_file, restore, run_main, split_names, tiny, tiny_lm, write_files

TIMING = ('epoch_seconds', 'steps_per_second', 'tokens_per_second')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A small folder of Python-like text and the token files written from it: (text dir, token dir)."""
  root = tmp_path_factory.mktemp('corpus')
  names = split_names(6, False) + split_names(2, True)
  write_files(root / 'text', {n: (f'def f{i}(x):\n    return x * {i}\n' * (40 + 7 * i)).encode()
                              for i, n in enumerate(names)})
  tokens.write_corpus(tokens.text_corpus(str(root / 'text')), str(root / 'tokens'), progress=False)
  return str(root / 'text'), str(root / 'tokens')


def lm_task(ds, **overrides):
  return tasks.create(tiny_lm(**overrides), ds)


def test_token_files_are_the_bytes_they_were_written_from_and_the_host_reads_its_windows(corpus):
  folder, files = corpus
  plain, mapped = text.text_folder(folder), tokens.dataset(files)
  assert isinstance(mapped.train, np.memmap) and mapped.vocab_size == 256
  assert mapped.train.tobytes() == plain.train.tobytes()
  assert mapped.validation.tobytes() == plain.validation.tobytes()
  task = lm_task(mapped)
  for seed, epoch, step in ((0, 0, 0), (0, 2, 3), (5, 1, 2)):
    x, y = task.host_batch((mapped.train,), seed, epoch, step, slice(0, 8))
    assert np.array_equal(x, lm_task(plain).host_batch((plain.train,), seed, epoch, step, slice(0, 8))[0])
    # The windows at the offsets of the run's global step, their next bytes the labels.
    offsets = shards.token_offsets(seed, epoch * task.steps + step, len(plain.train), 8, 8)
    want = np.stack([plain.train[o:o + 9] for o in offsets])
    assert np.array_equal(x, want[:, :-1]) and np.array_equal(y, want[:, 1:])


def test_each_process_reads_its_rows_and_together_they_are_the_global_batch(corpus):
  mapped = tokens.dataset(corpus[1])
  lm, images = lm_task(mapped), tasks.create(tiny(), mlres.data.load(tiny()))
  for task, train_arrays in ((lm, (mapped.train,)), (images, images.arrays(32)[0])):
    whole = task.host_batch(train_arrays, 3, 1, 2, slice(0, task.batch_size))
    parts = [task.host_batch(train_arrays, 3, 1, 2, shards.local_rows(task.batch_size, p, 4))
             for p in range(4)]
    for j in (0, 1):
      assert np.array_equal(np.concatenate([p[j] for p in parts]), whole[j])
  # An image epoch: every example at most once, in the host's permutation.
  n, b = len(images.ds.train_labels), images.batch_size
  labels = np.concatenate([images.host_batch(images.arrays(32)[0], 0, 4, s, slice(0, b))[1]
                           for s in range(images.steps)])
  order = shards.permutation(n, 4, 0)[:images.steps * b]
  assert np.array_equal(labels, images.ds.train_labels[order])


def host_lm(files, **overrides):
  return tiny_lm(**{'dataset': 'tokens', 'data_dir': files, 'input': 'host', **overrides})


@pytest.fixture(scope='module')
def host_runs(corpus, tmp_path_factory):
  """The tiny GPT on the token files, read by the host: one seed, seed 1 alone, and both together."""
  workdirs = {}
  for name, overrides in (('one', {}), ('seed1', {'seed': 1}), ('two', {'num_seeds': 2})):
    workdirs[name] = str(tmp_path_factory.mktemp(name))
    train.train_and_evaluate(host_lm(corpus[1], **overrides), workdirs[name])
  return workdirs


def records(workdir):
  return [{k: v for k, v in r.items() if k not in TIMING}
          for r in report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]


@pytest.mark.slow
def test_seed_k_read_by_the_host_trains_as_its_run_alone(host_runs):
  together = records(host_runs['two'])
  for k, alone in enumerate((records(host_runs['one']), records(host_runs['seed1']))):
    for both, one in zip(together, alone, strict=True):
      for key in ('train_loss', 'test_loss'):
        assert both['seeds'][key][k] == pytest.approx(one[key], rel=1e-5)


@pytest.mark.slow
def test_a_run_read_by_the_host_stopped_mid_epoch_resumes_to_the_batch(corpus, host_runs, tmp_path):
  """SIGTERM after the second step of epoch 2, then the same command: the batches it reads from
  there are the uninterrupted run's, so its parameters end bit for bit the same."""
  config, stopped = config_file(str(tmp_path), 'tiny_lm'), str(tmp_path / 'run')
  flags = ['--config.dataset=tokens', f'--config.data_dir={corpus[1]}', '--config.input=host']
  first = run_main(flags, config, stopped, 'term:2')
  assert first.returncode == 128 + 15 and 'at epoch 2, step 2 of 4' in first.stderr, first.stderr[-2000:]
  again = run_main(flags, config, stopped)
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'resuming from the checkpoint of step 6, after epoch 1 and 2 steps' in again.stdout
  want = host_lm(corpus[1])
  chex.assert_trees_all_equal(restore(stopped, 3, want)[0], restore(host_runs['one'], 3, want)[0])
  assert records(stopped) == records(host_runs['one'])


def test_bad_input_is_one_line_naming_the_field(corpus):
  with pytest.raises(ConfigError, match=r"^config.input='disk': must be one of auto, device, host$"):
    config_lib.validate(tiny_lm(input='disk'))
  with pytest.raises(DataError, match=r"^dataset='tokens' reads token files from config.data_dir; set it"):
    tokens.dataset('')
  # A split past what an int32 offset reaches cannot lie on the devices (a zero-stride stand-in).
  huge = np.broadcast_to(np.zeros(1, np.uint8), (text.MAX_BYTES + 2,))
  ds = text.TextDataset('huge', huge, np.zeros(100, np.uint8), {'dataset': 'huge'})
  with pytest.raises(ConfigError, match=r"^config.input='device': the train split's 2,147,483,649 tokens"):
    train.Setup.create(tiny_lm(input='device'), ds, parallel.Layout.all_devices())
  auto = lambda ds: input_pipeline.create(
      train.Setup.create(tiny_lm(input='auto'), ds, parallel.Layout.all_devices()), (ds.train,))
  assert isinstance(auto(ds), input_pipeline.HostInput)  # 'auto' reads more than 1 GiB on the host
  assert isinstance(auto(tokens.dataset(corpus[1])), input_pipeline.DeviceInput)  # and keeps the rest there


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """A 4-class image folder of 8x8 JPEGs (test_imagefolder's) and the tiny ResNet trained on it, read
  by the host at image_size 8: (folder, workdir)."""
  from test_imagefolder import make_folder
  folder = make_folder(tmp_path_factory.mktemp('images'))
  workdir = str(tmp_path_factory.mktemp('folder-run'))
  train.train_and_evaluate(folder_config(folder), workdir)
  return folder, workdir


def folder_config(folder, **overrides):
  return tiny(**{'dataset': 'imagefolder', 'data_dir': folder, 'image_size': 8, 'batch_size': 4,
                 'eval_batch_size': 4, **overrides})


FOLDER_FLAGS = ['--config.dataset=imagefolder', '--config.image_size=8', '--config.batch_size=4',
                '--config.eval_batch_size=4']


@pytest.mark.slow
def test_an_image_folder_trains_read_by_the_host_and_resumes_to_the_batch(images, tmp_path):
  """12 training images in batches of 4: 3 steps an epoch; SIGTERM after the second of epoch 2."""
  folder, workdir = images
  summary = report.read_summary(os.path.join(workdir, 'summary.json'))
  assert summary['data']['dataset'] == 'imagefolder' and len(records(workdir)) == 3
  config, stopped = config_file(str(tmp_path), 'tiny'), str(tmp_path / 'run')
  flags = [*FOLDER_FLAGS, f'--config.data_dir={folder}']
  first = run_main(flags, config, stopped, 'term:2')
  assert first.returncode == 128 + 15 and 'at epoch 2, step 2 of 3' in first.stderr, first.stderr[-2000:]
  again = run_main(flags, config, stopped)
  assert again.returncode == 0, again.stderr[-2000:]
  want = folder_config(folder)
  chex.assert_trees_all_equal(restore(stopped, 3, want)[0], restore(workdir, 3, want)[0])
  assert records(stopped) == records(workdir)


@pytest.mark.slow
def test_an_unreadable_training_image_stops_the_run_in_one_line_naming_it(images, tmp_path):
  folder = str(tmp_path / 'folder')
  shutil.copytree(images[0], folder)
  bad = os.path.join(folder, 'train', 'bee', 'bee_1.JPEG')
  with open(bad, 'r+b') as f:
    f.truncate(40)
  result = run_main([*FOLDER_FLAGS, f'--config.data_dir={folder}'], config_file(str(tmp_path), 'tiny'),
                    str(tmp_path / 'run'))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith(f'error: {bad} is not a readable image (')


def test_an_image_folder_is_read_by_the_host_only(images):
  with pytest.raises(ConfigError, match=r"^config.input='device': an image folder is decoded on the host"):
    train.Setup.create(folder_config(images[0], input='device'),
                       mlres.data.load(folder_config(images[0])), parallel.Layout.all_devices())
