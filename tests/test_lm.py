"""The trainer's second task: a GPT grown on the standard library's bytes, through the same loop,
checkpoints, resume and growth as the image classifiers."""
import json
import math
import os
import shutil

import chex
import pytest

import mlres
from mlres import report, train
from mlres.checkpoint import CheckpointError
from mlres.config import ConfigError
from mlres.data import DataError, text

from conftest import ROOT, config_file, restore, run_main, tiny_lm, train_counting_traces

TIMING = ('epoch_seconds', 'steps_per_second', 'tokens_per_second')


@pytest.fixture(scope='module')
def lm_run(tmp_path_factory):
  """The uninterrupted tiny language model: (workdir, summary, the blocks each trace was for)."""
  workdir = str(tmp_path_factory.mktemp('lm'))
  return (workdir, *train_counting_traces(tiny_lm(), workdir))


def records(workdir, timings=True):
  rs = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return rs if timings else [{k: v for k, v in r.items() if k not in TIMING} for r in rs]


def test_a_gpt_trains_in_bits_per_byte_and_grows_once(lm_run):
  workdir, summary, traces = lm_run
  assert traces == [(1,), (2,)]  # one compile per cycle
  rs = records(workdir)
  assert [(r['task'], r['stage_sizes'], r['h']) for r in rs] == [('language_model', [1], 1.0)] * 2 + [
      ('language_model', [2], 0.5)]
  assert abs(rs[0]['train_loss'] - 8) < 1  # bits: about log2(256) at the start
  assert rs[-1]['test_loss'] < rs[0]['test_loss'] and rs[-1]['train_loss'] < rs[0]['train_loss']
  assert 0 <= rs[-1]['test_accuracy'] <= 1 and 'test_loss_at_growth' in rs[2]
  assert summary['task'] == 'language_model' and summary['validation_bits_per_byte'] == rs[-1]['test_loss']
  assert summary['test_error'] == pytest.approx(1 - rs[-1]['test_accuracy'])
  assert summary['data'] == text.pystdlib().fingerprint
  state, meta = restore(workdir, 3, tiny_lm())
  assert meta['model'] == 'gpt' and meta['context'] == 8 and meta['num_classes'] == 256
  assert mlres.stack_sizes(state['params']) == {'decoder': 2}
  assert int(state['opt_state'][0].count) == 12  # Adam's count kept through the growth


def test_validation_is_in_bits_per_byte_of_its_fixed_windows(lm_run):
  """The held-out loss, recomputed here from the final weights over the same windows, in bits."""
  import jax.numpy as jnp
  import numpy as np
  import optax
  workdir, summary, _ = lm_run
  state, _ = restore(workdir, 3, tiny_lm())
  ds = text.pystdlib()
  offsets = text.eval_offsets(len(ds.validation), 8, 16)
  windows = np.asarray(text.windows(ds.validation, offsets, 8)).astype(np.int32)
  model = mlres.GPT(num_blocks=2, width=8, num_heads=2, mlp_dim=16, context=8, h=0.5)
  logits = model.apply(train.variables(state), jnp.asarray(windows[:, :-1]))
  nats = optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()
  assert summary['validation_bits_per_byte'] == pytest.approx(float(nats) / math.log(2), rel=1e-5)


def test_the_table_reads_the_run_against_the_compressors_on_its_split(lm_run):
  """The summary holds the baselines of the corpus it trained on; the table shows them as reference
  rows and says that this run's 16 windows of 8 bytes are not the whole split they are of."""
  from mlres.data import baselines
  _, summary, _ = lm_run
  split = len(text.pystdlib().validation)
  assert summary['validation_bytes'] == [16 * 8, split]
  assert summary['baselines'] == {b.name: b.bits_per_byte for b in baselines.measure(text.pystdlib())}
  lines = report.table([summary]).splitlines()
  assert [line.split()[0] for line in lines[2:7]] == ['tiny-lm', 'gzip', 'bzip2', 'xz', 'unigram']
  assert lines[3].split()[2:4] == ['-', f'{summary["baselines"]["gzip -9"]:.4f}']
  assert lines[-1] == (f'References (python -m mlres.data baselines): the compressors and a unigram byte '
                       f'model on the whole validation split, {split:,} bytes, of which the run\'s '
                       'validation read 128 (text.eval_windows).')
  whole = {**summary, 'validation_bytes': [split - 8, split]}  # all windows: a tail under the context
  assert report.table([whole]).endswith(f'{split:,} bytes, as the run\'s validation does.')


# Tiny LM: 4 steps of 8 windows of 8 bytes per epoch, 256 tokens; FLOPs per token by the hand count
# of test_gpt (19,968 for 2 blocks), 16,128 for 1 block (N = 512 + 2,048; 6 N + 12 x 8 x 8).
EPOCH_TOKENS, ONE_BLOCK, TWO_BLOCKS = 256, 16_128, 19_968


def test_tokens_and_flops_are_counted_from_the_steps_and_survive_a_resume(lm_run, tmp_path, capsys):
  """Tokens seen and model FLOPs so far in every record, each cycle's cost in the summary and in its
  first line; resumed after epoch 2, the run counts the same: epoch 3's totals hold the first cycle's
  steps, which this start did not train."""
  workdir, summary, _ = lm_run
  rs = records(workdir)
  assert [r['tokens'] for r in rs] == [256, 512, 768]
  assert [r['flops_per_token'] for r in rs] == [ONE_BLOCK, ONE_BLOCK, TWO_BLOCKS]
  assert [r['flops'] for r in rs] == [256 * ONE_BLOCK, 512 * ONE_BLOCK, 512 * ONE_BLOCK + 256 * TWO_BLOCKS]
  assert all(r['tokens_per_second'] == pytest.approx(EPOCH_TOKENS / r['epoch_seconds']) for r in rs)
  assert summary['cycle_costs'] == [
      {'tokens': 512, 'flops_per_token': ONE_BLOCK, 'flops': 512 * ONE_BLOCK},
      {'tokens': 256, 'flops_per_token': TWO_BLOCKS, 'flops': 256 * TWO_BLOCKS}]
  assert (summary['tokens'], summary['flops']) == (768, rs[-1]['flops'])
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  for step in os.listdir(os.path.join(resumed, 'checkpoints')):
    if step.isdigit() and int(step) > 8:  # keeps epoch 2's, the first cycle's end
      shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  capsys.readouterr()
  train.train_and_evaluate(tiny_lm(), resumed)
  assert records(resumed, timings=False) == records(workdir, timings=False)
  out = capsys.readouterr().out
  assert 'resuming from the checkpoint of step 8, after epoch 2' in out
  assert (f'cycle 1: 2 blocks, h=0.5, 5,632 parameters, {TWO_BLOCKS:,} FLOPs per token x 256 tokens = '
          f'{256 * TWO_BLOCKS:.3g} FLOPs, compiled in ') in out
  assert [line.rsplit('  ', 1)[-1] for line in out.splitlines() if line.startswith('epoch')] == ['768 tokens']


@pytest.mark.slow
def test_a_gpt_stopped_after_its_growth_resumes_bit_for_bit(lm_run, tmp_path):
  """`python -m mlres.main`, SIGTERM after the second step of epoch 3 (the first of the grown
  network), then the same command again."""
  workdir, summary, _ = lm_run
  config, stopped = config_file(str(tmp_path), 'tiny_lm'), str(tmp_path / 'run')
  first = run_main([], config, stopped, 'term:3')
  assert first.returncode == 128 + 15, first.stderr[-2000:]
  assert first.stdout.startswith(f'tiny-lm on {text.describe(summary["data"])}: JAX ')
  assert 'at epoch 3, step 2 of 4' in first.stderr
  again = run_main([], config, stopped)
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'resuming from the checkpoint of step 10, after epoch 2 and 2 steps' in again.stdout
  head, _, row, gzip = again.stdout.split('\n\n')[1].splitlines()[:4]  # then the other references
  assert gzip.startswith('gzip -9 ')
  assert head.split() == ['Model', '#', 'Blocks', 'Val', 'bpb', 'Next-byte', 'acc', 'Time']
  assert row.split()[:5] == ['tiny-lm', '1', 'to', '2', f'{summary["validation_bits_per_byte"]:.4f}']
  chex.assert_trees_all_equal(restore(stopped, 3, tiny_lm())[0], restore(workdir, 3, tiny_lm())[0])
  assert records(stopped, timings=False) == records(workdir, timings=False)


def test_the_operators_launcher_reads_a_language_models_summary(lm_run, monkeypatch):
  monkeypatch.syspath_prepend(os.path.join(ROOT, 'launch'))
  import seeds  # here: it defines the launcher's flags
  workdir, summary, _ = lm_run
  name, blocks, count, mean, per_seed, jumps, seconds = seeds.row('copy', summary, workdir)
  assert (blocks, count, mean, per_seed) == ('1 to 2', '1', f'{summary["validation_bits_per_byte"]:.4f}',
                                             f'{summary["validation_bits_per_byte"]:.4f}')
  rs = records(workdir)
  assert float(jumps) == pytest.approx(rs[2]['test_loss_at_growth'] - rs[1]['test_loss'], abs=1e-4)


@pytest.mark.parametrize('files, message', [
    ({}, 'holds no UTF-8 text file'),
    ({'a.bin': b'\x00\x01\x02'}, 'holds no UTF-8 text file'),
    ({'a.txt': 'tiny', 'b.txt': 'x' * 400}, 'context=8 needs windows of 9 bytes.*validation split has 5'),
], ids=['empty-folder', 'no-text', 'context-longer-than-validation'])
def test_bad_text_is_one_line_and_writes_nothing(tmp_path, files, message):
  folder = tmp_path / 'corpus'
  folder.mkdir()
  for name, content in files.items():
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
  if len(files) == 2:  # which file validation gets is the path hash's: make it the short one
    assert text.text_folder(str(folder)).validation.size == 5  # 'tiny' and its END
  with pytest.raises(DataError, match=message) as e:
    train.train_and_evaluate(tiny_lm(dataset='text', data_dir=str(folder)), str(tmp_path / 'run'))
  assert '\n' not in str(e.value) and not os.path.exists(tmp_path / 'run')


def test_a_context_that_does_not_fit_the_checkpoint_is_refused(lm_run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(lm_run[0], workdir)
  steps = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(ConfigError, match=r'model.context: 8 -> 16'):
    train.train_and_evaluate(tiny_lm(**{'model.context': 16}), workdir)
  with pytest.raises(CheckpointError, match=r'another network .*context: 8 -> 16') as e:
    train.train_and_evaluate(tiny_lm(**{'model.context': 16, 'resume': 'any_config'}), workdir)
  assert '\n' not in str(e.value)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == steps
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['validation_bits_per_byte'] == lm_run[1]['validation_bits_per_byte']


def test_a_language_model_resumed_on_another_corpus_is_refused(lm_run, tmp_path, monkeypatch):
  """pystdlib of another Python: another corpus under the same config."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(lm_run[0], workdir)
  other = text._dataset('pystdlib', [('a.py', b'x = 1\n' * 50), ('b.py', b'y = 2\n' * 50)], python='3.99.0')
  monkeypatch.setattr(text, 'pystdlib', lambda: other)
  with pytest.raises(ConfigError, match=r'was trained on pystdlib of Python [\d.]+: .* but this run reads '
                                        r'pystdlib of Python 3.99.0: 2 files, ') as e:
    train.train_and_evaluate(tiny_lm(), workdir)
  assert '\n' not in str(e.value) and lm_run[1]['data']['sha256'][:12] in str(e.value)


def test_epochs_of_other_steps_name_the_field_that_sets_them(lm_run, tmp_path):
  """A language model's epoch is text.steps_per_epoch steps, whatever its batch size."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(lm_run[0], workdir)
  with pytest.raises(CheckpointError, match=r"epochs of 4 steps but this config's text.steps_per_epoch=5 "
                                            r'makes epochs of 5; .* resume with the text.steps_per_epoch'):
    train.train_and_evaluate(tiny_lm(**{'text.steps_per_epoch': 5, 'resume': 'any_config'}), workdir)


@pytest.mark.parametrize('overrides, message', [
    ({'dataset': 'digits'}, "config.model.name='gpt': a gpt is a language model of bytes: use dataset 'pystdlib'"),
    ({'model.context': 0}, 'config.model.context=0: must be a positive integer'),
    ({'text.steps_per_epoch': 0}, 'config.text.steps_per_epoch=0: must be a positive integer'),
    ({'optimizer.warmup_steps': 4}, r"^config.optimizer.warmup_steps=4: must be shorter than cycle 1's 4 "
                                    r'steps \(1 epoch of 4\)$'),
    ({'optimizer.warmup_steps': 12, 'optimizer.reset_lr': False},
     r"^config.optimizer.warmup_steps=12: must be shorter than the run's 12 steps \(3 epochs of 4\)$"),
], ids=['gpt-on-images', 'context', 'steps', 'warmup', 'warmup-without-reset'])
def test_a_config_that_cannot_train_a_language_model_is_one_line(overrides, message):
  """Before any data is read: a language model's steps per epoch are the config's own."""
  with pytest.raises(ConfigError, match=message):
    mlres.config.validate(tiny_lm(**overrides))
