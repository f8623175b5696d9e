"""Token files (mlres.data.tokens): `python -m mlres.data tokens` writes what text.py reads, a file at
a time and atomically; the memory-mapped reader, its windows and offsets; every bad input in one line
naming the file, and nothing written on failure. Generated data of a few KB only."""
import json
import os
import platform
import sys

import numpy as np
import pytest

from mlres import data
from mlres.data import __main__ as command, shards, text, tokens
from mlres.data.dataset import DataError

from conftest import split_names, write_files


def body(i: int) -> bytes:
  return (f'# file {i}: caf\u00e9 \u2192\n' + f'def f{i}(x):\n    return x * {i}\n' * (10 + i)).encode()


def corpus_files(count_train=5, count_validation=2) -> dict:
  files = {n: body(i) for i, n in enumerate(split_names(count_train, False) + split_names(count_validation, True))}
  return {**files, '.hidden/x.py': b'hidden', 'data.bin': b'\x00\x01\x02', 'empty.py': b''}


def command_output(capsys, argv) -> tuple[int, list[str], str]:
  status = command.main(argv)
  out, err = capsys.readouterr()
  return status, out.splitlines(), err


def numpy_tokens(root, train, validation, dtype='uint16', vocab_size=300, **meta) -> str:
  """A token folder as a user with a tokenizer writes it (docs/data.md)."""
  os.makedirs(root, exist_ok=True)
  np.asarray(train, dtype).tofile(os.path.join(root, 'train.bin'))
  np.asarray(validation, dtype).tofile(os.path.join(root, 'val.bin'))
  with open(os.path.join(root, 'meta.json'), 'w') as f:
    json.dump(dict(dtype=dtype, vocab_size=vocab_size, **meta), f)
  return str(root)


def test_the_command_writes_token_files_that_read_back_as_their_source(tmp_path, capsys):
  write_files(tmp_path / 'src', corpus_files())
  out = tmp_path / 'out'
  status, lines, err = command_output(capsys, ['tokens', 'text', f'--data_dir={tmp_path / "src"}',
                                               f'--out={out}'])
  ds = text.text_folder(str(tmp_path / 'src'))
  assert status == 0
  assert sorted(os.listdir(out)) == ['meta.json', 'train.bin', 'val.bin']  # no temporary file left
  files = tokens.TokenFiles.open(str(out))
  assert files.dtype == np.uint8 and files.vocab_size == 256 and isinstance(files.train, np.memmap)
  assert files.train.tobytes() == ds.train.tobytes() and files.validation.tobytes() == ds.validation.tobytes()
  meta = json.loads((out / 'meta.json').read_text())
  assert meta['fingerprint'] == ds.fingerprint and meta['source'] == 'text' and meta['end'] == 0
  assert meta['tokens'] == dict(train=len(ds.train), validation=len(ds.validation)) and meta['created']
  assert lines == [text.describe(ds.fingerprint),
                   f'{out / "train.bin"}: {len(ds.train):,} uint8 tokens (train)',
                   f'{out / "val.bin"}: {len(ds.validation):,} uint8 tokens (validation)',
                   f'{out / "meta.json"}: dtype uint8, vocab_size 256']
  assert 'tokens text: 100% (' in err  # the progress line (stderr is no terminal here)
  files.scan()  # bytes below 256: nothing to find
  # Written again over itself: the same files.
  assert command_output(capsys, ['tokens', 'text', f'--data_dir={tmp_path / "src"}', f'--out={out}'])[0] == 0
  assert tokens.TokenFiles.open(str(out)).train.tobytes() == ds.train.tobytes()


@pytest.mark.parametrize('count_train, count_validation', [(2, 0), (0, 2), (1, 0)])
def test_the_split_s_fallbacks_and_a_single_file_are_text_py_s(tmp_path, count_train, count_validation):
  """Both splits get a file where the hash rule gives one none, and a single file is cut: the writer,
  deciding as it streams, rewrites to match text.py."""
  write_files(tmp_path / 'src', {n: body(i) for i, n in enumerate(split_names(count_train, False) +
                                                           split_names(count_validation, True))})
  meta = tokens.write_corpus(tokens.text_corpus(str(tmp_path / 'src')), str(tmp_path / 'out'), progress=False)
  ds = text.text_folder(str(tmp_path / 'src'))
  files = tokens.TokenFiles.open(str(tmp_path / 'out'))
  assert meta['fingerprint'] == ds.fingerprint
  assert files.train.tobytes() == ds.train.tobytes() and files.validation.tobytes() == ds.validation.tobytes()


def test_pystdlib_s_token_files_are_dataset_pystdlib(tmp_path):
  """On a stand-in standard library (the real one: 10 MB), with the folders pystdlib leaves out."""
  root = tmp_path / 'lib'
  write_files(root, {**{n: body(i) for i, n in enumerate(split_names(6, False, 'pkg/m') + split_names(2, True, 'pkg/m'))},
               'site-packages/jax/core.py': b'x = 1\n', 'test/test_os.py': b'x = 2\n',
               'encodings/cp1252.py': b'x = 3\n'})
  meta = tokens.write_corpus(tokens.pystdlib_corpus(str(root)), str(tmp_path / 'out'), progress=False)
  ds = text.pystdlib(str(root))
  assert meta['fingerprint'] == ds.fingerprint and meta['fingerprint']['files'] == 8
  assert tokens.TokenFiles.open(str(tmp_path / 'out')).train.tobytes() == ds.train.tobytes()


def test_pysource_is_each_real_py_file_once_named_by_its_innermost_root(tmp_path):
  lib, site, other = tmp_path / 'lib', tmp_path / 'lib' / 'site-packages', tmp_path / 'other'
  write_files(lib, {'os.py': body(1), 'json/__init__.py': body(2), '.hidden/h.py': body(3), 'notes.txt': b'x',
              'empty.py': b''})
  write_files(site, {'jax/core.py': body(4), 'six.py': body(5)})
  write_files(other, {'six.py': body(6), 'tool.py': body(7)})
  os.symlink(lib / 'os.py', other / 'os_link.py')  # the same real file: read once
  os.symlink(tmp_path / 'nowhere.py', other / 'broken.py')
  corpus = tokens.pysource_corpus([str(lib), str(site), str(other), str(lib)])
  assert [n for n, _ in corpus.files] == ['empty.py', 'jax/core.py', 'json/__init__.py', 'os.py', 'six.py',
                                          'six.py', 'tool.py']
  assert [p for n, p in corpus.files if n == 'six.py'] == [str(site / 'six.py'), str(other / 'six.py')]
  assert corpus.roots == [str(lib), str(site), str(other)]
  meta = tokens.write_corpus(corpus, str(tmp_path / 'out'), progress=False)
  # What text.py makes of the same files: the same split by name and fingerprint.
  read = [(n, text._text(p)) for n, p in corpus.files]
  ds = text._dataset('pysource', [(n, c) for n, c in read if c], python=platform.python_version())
  assert meta['fingerprint'] == ds.fingerprint and meta['fingerprint']['files'] == 6
  assert tokens.TokenFiles.open(str(tmp_path / 'out')).train.tobytes() == ds.train.tobytes()
  assert meta['roots'] == corpus.roots
  assert data.describe(meta['fingerprint']).startswith(f'pysource of Python {platform.python_version()}: 6 files')


def test_pysource_s_roots_are_sys_path_s_folders_but_the_current_one(tmp_path, monkeypatch):
  for folder in ('here', 'lib'):
    os.makedirs(tmp_path / folder)
  monkeypatch.chdir(tmp_path / 'here')
  monkeypatch.setattr(sys, 'path', ['', str(tmp_path / 'here'), str(tmp_path / 'python311.zip'),
                                    str(tmp_path / 'lib'), str(tmp_path / 'missing')])
  assert tokens.pysource_roots() == [str(tmp_path / 'lib')]


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path, monkeypatch, capsys):
  write_files(tmp_path / 'src', corpus_files())
  out = str(tmp_path / 'out')
  source = tokens.text_corpus(str(tmp_path / 'src'))
  # A folder the command made is gone again; one that was there keeps its files, untouched.
  calls = []

  def failing(path):
    calls.append(path)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return original(path)

  original = text._text
  monkeypatch.setattr(text, '_text', failing)
  with pytest.raises(KeyboardInterrupt):
    tokens.write_corpus(source, out, progress=False)
  assert not os.path.exists(out)
  monkeypatch.setattr(text, '_text', original)
  tokens.write_corpus(source, out, progress=False)
  before = {name: open(os.path.join(out, name), 'rb').read() for name in os.listdir(out)}
  calls.clear()
  monkeypatch.setattr(text, '_text', failing)
  with pytest.raises(KeyboardInterrupt):
    tokens.write_corpus(source, out, progress=False)
  assert {name: open(os.path.join(out, name), 'rb').read() for name in os.listdir(out)} == before


def test_a_crash_between_the_renames_leaves_no_metadata_so_nothing_reads_as_whole(tmp_path, monkeypatch):
  write_files(tmp_path / 'src', corpus_files())
  out = str(tmp_path / 'out')
  tokens.write_corpus(tokens.text_corpus(str(tmp_path / 'src')), out, progress=False)  # an old, whole one
  replaced, original = [], os.replace

  def crash(a, b):
    if replaced:
      raise SystemExit('killed')
    replaced.append(b)
    original(a, b)

  monkeypatch.setattr(os, 'replace', crash)
  with pytest.raises(SystemExit):
    tokens.write_corpus(tokens.text_corpus(str(tmp_path / 'src')), out, progress=False)
  monkeypatch.setattr(os, 'replace', original)
  assert replaced == [os.path.join(out, 'train.bin')] and sorted(os.listdir(out)) == ['train.bin', 'val.bin']
  with pytest.raises(DataError, match=f'^{os.path.join(out, "meta.json")} is missing'):
    tokens.TokenFiles.open(out)


def test_windows_lie_inside_their_split_and_are_its_ids(tmp_path):
  train, validation = np.arange(1000) % 300, (np.arange(90) * 7) % 300
  files = tokens.TokenFiles.open(numpy_tokens(tmp_path, train, validation))
  assert files.dtype == np.uint16 and (len(files.train), len(files.validation)) == (1000, 90)
  context, batch = 16, 8
  for step in range(50):
    offsets = shards.token_offsets(3, step, len(files.train), context, batch)
    assert offsets.shape == (batch,) and offsets.min() >= 0 and offsets.max() + context + 1 <= 1000
    w = files.windows('train', offsets, context)
    assert w.shape == (batch, context + 1) and np.array_equal(w, train[offsets[:, None] + np.arange(context + 1)])
  last = len(files.validation) - context - 1
  assert np.array_equal(files.windows('validation', [last], context)[0], validation[last:])
  evaluated = files.windows('validation', text.eval_offsets(len(files.validation), context), context)
  assert evaluated.shape == ((90 - 1) // context, context + 1)
  for bad in ([last + 1], [-1]):
    with pytest.raises(ValueError, match=r'lie in \[0, 73\]'):
      files.windows('validation', bad, context)


def test_offsets_are_a_function_of_the_step_and_two_processes_read_the_global_batch(tmp_path):
  one = shards.token_offsets(5, 7, 10_000, 32, 8)
  assert np.array_equal(one, shards.token_offsets(5, 7, 10_000, 32, 8))  # a resumed run's
  assert not np.array_equal(one, shards.token_offsets(5, 8, 10_000, 32, 8))
  parts = [shards.token_offsets(5, 7, 10_000, 32, 8, p, 2) for p in range(2)]
  assert np.array_equal(np.concatenate(parts), one)
  with pytest.raises(ValueError, match='does not divide among 3 processes'):
    shards.token_offsets(5, 7, 10_000, 32, 8, 0, 3)


def test_the_metadata_s_vocabulary_against_a_model_s(tmp_path):
  root = numpy_tokens(tmp_path, [1, 2, 3], [4, 5], vocab_size=300)
  files = tokens.TokenFiles.open(root)
  files.check_vocabulary(300)
  files.check_vocabulary(320)  # a padded embedding
  tokens.check_vocabulary(files.meta, 300)
  with pytest.raises(DataError, match=f'^{os.path.join(root, "meta.json")}: the token files\' vocabulary of '
                                      "300 ids is larger than the model's 256"):
    files.check_vocabulary(256)
  with pytest.raises(DataError, match="^meta.json: the token files' vocabulary"):
    tokens.check_vocabulary(files.meta, 10)


def test_an_id_at_or_above_the_vocabulary_is_named_where_it_is_read_and_by_scan(tmp_path):
  train = np.arange(100) % 250
  train[61] = 250  # the vocabulary's size: one too many
  root = numpy_tokens(tmp_path, train, [1, 2, 3, 4], vocab_size=250)
  files = tokens.TokenFiles.open(root)  # open reads no id
  message = f'^{os.path.join(root, "train.bin")}: token 61 is 250, not below the vocab_size 250 of '
  files.windows('train', [0, 62], 10)  # windows that miss it
  with pytest.raises(DataError, match=message):
    files.windows('train', [0, 55], 10)
  with pytest.raises(DataError, match=message):  # offsets of any shape
    files.windows('train', [[0, 1], [2, 58]], 4)
  for chunk in (7, 1 << 20):
    with pytest.raises(DataError, match=message):
      files.scan(chunk)


def bad_folder(root, case: str) -> str:
  ok = dict(train=np.arange(10), validation=np.arange(4))
  if case == 'no val.bin':
    numpy_tokens(root, **ok)
    os.remove(os.path.join(root, 'val.bin'))
  elif case == 'no meta.json':
    numpy_tokens(root, **ok)
    os.remove(os.path.join(root, 'meta.json'))
  elif case == 'meta not JSON':
    numpy_tokens(root, **ok)
    with open(os.path.join(root, 'meta.json'), 'w') as f:
      f.write('{"dtype": ')
  elif case == 'dtype unknown':
    numpy_tokens(root, **ok, dtype='int64')
  elif case == 'vocab not in dtype':
    numpy_tokens(root, **ok, dtype='uint8', vocab_size=300)
  elif case == 'vocab missing':
    numpy_tokens(root, **ok, vocab_size=None)
  elif case == 'size not of the dtype':
    numpy_tokens(root, **ok, dtype='uint16')
    with open(os.path.join(root, 'train.bin'), 'ab') as f:
      f.write(b'\x01')  # half an id
  elif case == 'empty split':
    numpy_tokens(root, train=[], validation=[1, 2])
  elif case == 'count not the metadata s':
    numpy_tokens(root, **ok, tokens=dict(train=11, validation=4))
  elif case == 'no folder':
    root = os.path.join(root, 'nowhere')
  return str(root)


@pytest.mark.parametrize('case, match', [
    ('no val.bin', '{root}/val.bin is missing'),
    ('no meta.json', '{root}/meta.json is missing'),
    ('meta not JSON', '{root}/meta.json is not readable JSON'),
    ('dtype unknown', "{root}/meta.json: dtype 'int64' must be one of uint8, uint16, uint32"),
    ('vocab not in dtype',
     '{root}/meta.json: vocab_size 300 does not fit dtype uint8 (ids below 256); use uint16'),
    ('vocab missing', '{root}/meta.json: vocab_size None must be a positive integer'),
    ('size not of the dtype', '{root}/train.bin: 21 bytes are not a whole, non-zero number of uint16 ids'),
    ('empty split', '{root}/train.bin: 0 bytes are not a whole, non-zero number'),
    ('count not the metadata s', '{root}/train.bin holds 10 ids, meta.json says 11'),
    ('no folder', 'token files: no folder {root}'),
])
def test_bad_token_files_are_one_line_naming_the_file(tmp_path, case, match):
  root = bad_folder(tmp_path, case)
  with pytest.raises(DataError) as error:
    tokens.TokenFiles.open(root)
  assert str(error.value).startswith(match.format(root=root)) and '\n' not in str(error.value)


@pytest.mark.parametrize('files, argv, match', [
    ({}, ['tokens', 'text', '--data_dir={src}', '--out={out}'],
     "dataset 'text': the folder {src} (--data_dir) holds no UTF-8 text file"),
    ({'a.bin': b'\x00'}, ['tokens', 'text', '--data_dir={src}/a.bin', '--out={out}'],
     "dataset 'text': {src}/a.bin (--data_dir) is not a UTF-8 text file"),
    ({}, ['tokens', 'text', '--data_dir={src}/nowhere', '--out={out}'],
     "dataset 'text': no file or folder at '{src}/nowhere' (--data_dir)"),
    ({'a.py': b'x = 1\n'}, ['tokens', 'text', '--data_dir={src}', '--out={src}/a.py'],
     '--out={src}/a.py is a file, not a folder'),
])
def test_the_command_s_bad_input_is_one_line_status_2_and_writes_nothing(tmp_path, capsys, files, argv, match):
  src, out = tmp_path / 'src', tmp_path / 'out'
  write_files(src, files)
  os.makedirs(src, exist_ok=True)
  status, lines, err = command_output(capsys, [a.format(src=src, out=out) for a in argv])
  assert status == 2 and not lines and not os.path.exists(out)
  *progress, last = err.splitlines()  # the progress lines of what was read before it stopped
  assert last.startswith('error: ' + match.format(src=src)) and err.endswith('\n')
  assert all(line.startswith('tokens text: ') for line in progress)


@pytest.mark.parametrize('argv, match', [
    (['tokens', 'text', '--out=o'], '`tokens text` needs --data_dir=DIR'),
    (['tokens', 'pysource', '--data_dir=d', '--out=o'], '--data_dir is for `tokens text`'),
    (['tokens', 'pystdlib'], 'the following arguments are required: --out'),
])
def test_the_command_s_usage_errors_are_one_line(capsys, argv, match):
  with pytest.raises(SystemExit) as exit_:
    command.main(argv)
  err = capsys.readouterr().err
  assert exit_.value.code == 2 and err.startswith('error: ') and match in err and err.count('\n') == 1
