"""Byte-level text data: the split by file, the fingerprint, the windows a step reads, bad input."""
import hashlib
import json
import os
import platform
import re
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlres.data import text
from mlres.data.dataset import DataError


@pytest.fixture(scope='module')
def stdlib():
  """Read once: the suite is near its time budget."""
  return text.pystdlib()


def write(root, files: dict, order=None) -> None:
  """`files` (relative path -> bytes) under `root`, created in `order` (default: as given)."""
  for name in order or files:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(files[name])


def split_of(ds, content: bytes) -> str:
  """Which split holds `content`, asserting it is exactly one."""
  where = [split for split, data in (('train', ds.train), ('validation', ds.validation))
           if content in data.tobytes()]
  assert len(where) == 1, where
  return where[0]


def test_pystdlib_is_this_pythons_sources_split_by_file(stdlib):
  fp = stdlib.fingerprint
  assert fp['dataset'] == 'pystdlib' and fp['python'] == platform.python_version()
  assert fp['files'] > 300 and fp['bytes'] > 5_000_000
  assert json.loads(json.dumps(fp)) == fp
  for data, split in ((stdlib.train, fp['train']), (stdlib.validation, fp['validation'])):
    assert data.dtype == np.uint8 and data.shape == (split['bytes'],)
  assert fp['train']['bytes'] + fp['validation']['bytes'] == fp['bytes']
  assert fp['train']['files'] + fp['validation']['files'] == fp['files']
  assert 0.01 < fp['validation']['bytes'] / fp['bytes'] < 0.15
  assert hashlib.sha256(stdlib.train.tobytes() + stdlib.validation.tobytes()).hexdigest() == fp['sha256']
  # The rule hashes the relative path: these two land where they do on every machine.
  root = sysconfig.get_paths()['stdlib']
  for name, split in (('traceback.py', 'validation'), ('os.py', 'train')):
    with open(os.path.join(root, name), 'rb') as f:
      assert split_of(stdlib, f.read()) == split
  assert f'Python {platform.python_version()}: {fp["files"]:,} files' in text.describe(fp)


def test_pystdlib_leaves_out_packages_tests_generated_and_compiled_files(tmp_path):
  kept = {'a.py': b'<kept a>\n', 'pkg/b.py': b'<kept b>\n'}
  left_out = {name: f'<left out {name}>\n'.encode() for name in (
      'test/t.py', 'pkg/tests/t.py', 'idlelib/idle_test/t.py', 'site-packages/m/x.py', 'encodings/cp1.py',
      'pydoc_data/topics.py', '.hidden/h.py', 'README.txt')}
  write(tmp_path, {**kept, **left_out, 'pkg/__init__.py': b'', 'c.pyc': b'\x00\x01'})
  ds = text.pystdlib(str(tmp_path))
  assert ds.fingerprint['files'] == 2 and ds.fingerprint['bytes'] == sum(len(c) + 1 for c in kept.values())
  assert {split_of(ds, content) for content in kept.values()} == {'train', 'validation'}


def test_the_split_is_disjoint_and_independent_of_listing_order(tmp_path):
  names = [f'd{i % 3}/f{i:02d}.txt' for i in range(40)]
  files = {name: f'<{name}>\n'.encode() * (i + 1) for i, name in enumerate(names)}
  write(tmp_path / 'a', files)
  write(tmp_path / 'b', files, order=names[::-1])
  a, b = text.text_folder(str(tmp_path / 'a')), text.text_folder(str(tmp_path / 'b'))
  np.testing.assert_array_equal(a.train, b.train)
  np.testing.assert_array_equal(a.validation, b.validation)
  assert a.fingerprint == b.fingerprint
  splits = {name: split_of(a, content) for name, content in files.items()}
  # Pinned: another rule would silently give every corpus another validation split.
  assert sorted(n for n, s in splits.items() if s == 'validation') == ['d1/f13.txt', 'd1/f16.txt']
  for data, split in ((a.train, 'train'), (a.validation, 'validation')):  # each file, then its end
    assert data.tobytes() == b''.join(files[n] + b'\0' for n in sorted(names) if splits[n] == split)


@pytest.mark.parametrize('names, validation', [(('a.txt', 'b.txt'), 'a.txt'),  # the rule picks neither
                                               (('1.txt', '18.txt'), '1.txt')])  # it picks both
def test_two_files_make_two_splits(tmp_path, names, validation):
  write(tmp_path, {name: f'<{name}>'.encode() for name in names})
  ds = text.text_folder(str(tmp_path))
  assert ds.validation.tobytes() == f'<{validation}>\0'.encode()
  assert ds.fingerprint['train']['files'] == ds.fingerprint['validation']['files'] == 1


def test_a_single_file_is_cut_at_the_validation_fraction(tmp_path):
  content = bytes(range(32, 127)) * 10
  write(tmp_path, {'only.txt': content})
  ended = content + b'\0'
  for where in (tmp_path, tmp_path / 'only.txt'):
    ds = text.text_folder(str(where))
    cut = len(ended) - int(len(ended) * text.VALIDATION_FRACTION)
    assert ds.train.tobytes() == ended[:cut] and ds.validation.tobytes() == ended[cut:]
    assert ds.fingerprint['files'] == 1


def test_the_fingerprint_changes_with_one_byte(tmp_path):
  files = {f'{i}.txt': b'x' * 100 for i in range(5)}
  write(tmp_path, files)
  before = text.text_folder(str(tmp_path)).fingerprint
  write(tmp_path, {'3.txt': b'x' * 50 + b'y' + b'x' * 49})
  after = text.text_folder(str(tmp_path)).fingerprint
  assert after['sha256'] != before['sha256']
  assert {**after, 'sha256': None} == {**before, 'sha256': None}


def test_text_reads_a_user_folder_and_skips_what_is_not_text(tmp_path):
  texts = {'a.txt': b'plain\n', 'notes/b.md': '# caf\u00e9 \u2603\n'.encode(), 'notes/deep/c.py': b'x = 1\n'}
  others = {'image.png': b'\x89PNG\x00\x00', 'latin1.txt': b'caf\xe9\n', 'empty.txt': b'',
            '.git/config': b'[core]\n', 'notes/.env': b'KEY=1\n'}
  write(tmp_path, {**texts, **others})
  ds = text.text_folder(str(tmp_path))
  assert ds.name == 'text' and 'python' not in ds.fingerprint
  assert ds.fingerprint['files'] == 3 and ds.fingerprint['bytes'] == sum(len(c) + 1 for c in texts.values())
  assert all(split_of(ds, content) for content in texts.values())


def test_a_corpus_past_max_bytes_is_refused_before_the_rest_is_read(tmp_path, monkeypatch):
  """Offsets are int32: a corpus past 2 GiB failed at the first batch, after being read in full."""
  write(tmp_path, {name: b'x' * 100 for name in ('a.txt', 'b.txt', 'c.txt')})
  read, text_of = [], text._text
  monkeypatch.setattr(text, '_text', lambda path: read.append(os.path.basename(path)) or text_of(path))
  monkeypatch.setattr(text, 'MAX_BYTES', 150)
  with pytest.raises(DataError, match=f'^the text files under {re.escape(str(tmp_path))} pass 150 bytes at '
                                      r'b.txt: [^\n]*$'):
    text.text_folder(str(tmp_path))
  assert read == ['a.txt', 'b.txt']


def test_a_file_that_is_not_text_is_read_no_further_than_its_first_bad_chunk(tmp_path, monkeypatch):
  write(tmp_path, {'a.txt': b'text\n', 'x.bin': b'ab\0d' + b'e' * 1000, 'y.txt': b'\xffcafe' + b'e' * 1000})
  counted = {}

  class Counting:
    def __init__(self, path, mode):
      self.name, self.file = os.path.basename(path), open(path, mode)

    def read(self, n=-1):
      data = self.file.read(n)
      counted[self.name] = counted.get(self.name, 0) + len(data)
      return data

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.file.close()
  monkeypatch.setattr(text, 'open', Counting, raising=False)
  monkeypatch.setattr(text, 'CHUNK', 4)
  assert text.text_folder(str(tmp_path)).fingerprint['files'] == 1
  assert counted == {'a.txt': 5, 'x.bin': 4, 'y.txt': 4}


def test_every_drawn_window_lies_inside_its_split():
  n, context = 50, 7
  data = jnp.arange(n, dtype=jnp.uint8)
  draw = jax.jit(lambda key: text.windows(data, text.draw_offsets(key, n, context, (2, 200)), context))
  starts = []
  for seed in range(5):
    batch = np.asarray(draw(jax.random.key(seed)))
    assert batch.shape == (2, 200, context + 1) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, batch[..., :1] + np.arange(context + 1, dtype=np.uint8))
    starts.append(batch[..., 0].ravel())
  starts = np.concatenate(starts)
  assert starts.min() == 0 and starts.max() == n - context - 1  # uniform: both ends are drawn
  assert len(set(map(tuple, np.split(starts, 5)))) == 5  # each key draws its own


@pytest.mark.parametrize('n, context', [(8, 7), (50, 7), (51, 7), (57, 8), (1000, 64)])
def test_eval_windows_predict_each_byte_once_inside_the_split(n, context):
  offsets = text.eval_offsets(n, context)
  assert len(offsets) and offsets[-1] + context <= n - 1
  targets = (offsets[:, None] + np.arange(1, context + 1)).ravel()
  np.testing.assert_array_equal(targets, np.arange(1, len(targets) + 1))
  assert n - 1 - len(targets) < context  # only a tail shorter than a window is left unread
  windows = text.windows(jnp.arange(n, dtype=jnp.int32), jnp.asarray(offsets), context)
  np.testing.assert_array_equal(windows, offsets[:, None] + np.arange(context + 1))


def test_a_limit_keeps_eval_windows_spread_over_the_split():
  every = text.eval_offsets(10_000, 64)
  assert np.array_equal(text.eval_offsets(10_000, 64, len(every) + 5), every)
  some = text.eval_offsets(10_000, 64, 10)
  assert len(some) == 10 and set(some) <= set(every) and np.all(np.diff(some) >= 64)
  assert some[0] == 0 and some[-1] >= every[-1] - len(every) // 10 * 64


def test_a_context_longer_than_a_split_is_one_line(tmp_path):
  write(tmp_path, {'a.txt': b'a' * 30, 'b.txt': b'b' * 300})
  ds = text.text_folder(str(tmp_path))
  text.check_context(ds, 30)  # 30 bytes and the file's END
  with pytest.raises(DataError, match=r'^context=31 needs windows of 32 bytes, but the text validation split '
                                      r'has 31 bytes; [^\n]*$'):
    text.check_context(ds, 31)


@pytest.mark.parametrize('files, at, match', [
    ({}, '', 'the folder {} .* holds no UTF-8 text file'),
    ({'x.bin': b'\x00\x01', 'sub/y.txt': b'\xff\xfe', '.hidden.txt': b'text'}, '',
     'holds no UTF-8 text file'),
    ({}, 'nowhere', "no file or folder at '{}'"),
    ({'x.bin': b'\x00\x01'}, 'x.bin', '{} .* is not a UTF-8 text file'),
])
def test_a_folder_without_text_is_one_line(tmp_path, files, at, match):
  write(tmp_path, files)
  where = str(tmp_path / at) if at else str(tmp_path)
  with pytest.raises(DataError, match=match.format(re.escape(where))) as error:
    text.text_folder(where)
  assert '\n' not in str(error.value) and 'config.data_dir' in str(error.value)


def test_a_python_without_sources_names_the_text_dataset(tmp_path, monkeypatch):
  write(tmp_path, {'__pycache__/os.cpython-311.pyc': b'\x00pyc', 'test/t.py': b'x = 1\n'})
  monkeypatch.setattr(sysconfig, 'get_paths', lambda: {'stdlib': str(tmp_path)})
  where = re.escape(str(tmp_path))
  with pytest.raises(DataError, match=f"no standard library sources in {where} .*dataset='text' with "
                                      'config.data_dir') as error:
    text.pystdlib()
  assert '\n' not in str(error.value)
