"""`python -m mlres.data baselines`: its printed figures against direct gzip, bz2 and lzma calls and a
unigram counted by hand, on the validation bytes rebuilt here from text.py's rule; bad input in one
line."""
import bz2
import collections
import gzip
import lzma
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, split_names, write_files
from mlres.data import __main__ as command, baselines, text

ROW = re.compile(r'^(\S+(?: -9e?)?) +([\d,]+) +(\d+\.\d{4})  (.*)$')


def printed(capsys, argv) -> tuple[int, list[str], str]:
  status = command.main(argv)
  out, err = capsys.readouterr()
  return status, out.splitlines(), err


def test_a_hand_counted_unigram():
  # train 'aab': p(a) = (2 + 1) / (3 + 256), p(c) = (0 + 1) / 259 (add-one: c is unseen)
  row = baselines.unigram(b'aab', b'ac')
  assert row.bits_per_byte == pytest.approx((-math.log2(3 / 259) - math.log2(1 / 259)) / 2, rel=1e-12)
  assert row.size == pytest.approx(row.bits_per_byte * 2 / 8, rel=1e-12)


def test_the_printed_figures_are_direct_calls_on_the_validation_bytes(tmp_path, capsys):
  body = lambda i: (f'# file {i}: caf\u00e9 \u2192 {"x" * i}\n' * (20 + i) + f'def f{i}(x):\n    return x * {i}\n'
                    ).encode()
  train = {n: body(i) for i, n in enumerate(split_names(4, validation=False))}
  validation = {n: body(10 + i) + b'~ \xf0\x9f\x90\x8d\n' for i, n in enumerate(split_names(2, validation=True))}
  write_files(tmp_path, {**train, **validation, '.hidden/skip.txt': b'hidden', 'bin.dat': b'\x00\x01\x02'})
  # What a run evaluates: the validation files in sorted path order, each followed by a NUL.
  v = b''.join(validation[n] + b'\0' for n in sorted(validation))
  t = b''.join(train[n] + b'\0' for n in sorted(train))
  assert text.text_folder(str(tmp_path)).validation.tobytes() == v

  status, lines, err = printed(capsys, ['baselines', 'text', f'--data_dir={tmp_path}'])
  assert status == 0 and err == ''
  assert lines[0] == text.describe(text.text_folder(str(tmp_path)).fingerprint)
  assert lines[1].startswith(f'validation split: {len(v):,} bytes in 2 files, each followed by a NUL '
                             '(TextDataset.validation)')
  assert 'whole split' in lines[2] and 'eval_windows=0' in lines[2]
  rows = {m[1]: (int(m[2].replace(',', '')), m[3], m[4]) for m in map(ROW.match, lines[4:])}
  assert list(rows) == ['gzip -9', 'bzip2 -9', 'xz -9e', 'unigram'] and len(lines) == 8
  for name, size in (('gzip -9', len(gzip.compress(v, 9))), ('bzip2 -9', len(bz2.compress(v, 9))),
                     ('xz -9e', len(lzma.compress(v, preset=9 | lzma.PRESET_EXTREME)))):
    assert rows[name][:2] == (size, f'{8 * size / len(v):.4f}'), name
  counts = collections.Counter(t)  # by hand: the validation bytes' bits under add-one train frequencies
  assert set(v) - set(t)  # the snake's bytes: unseen in train, smoothed
  bits = sum(-math.log2((counts[b] + 1) / (len(t) + 256)) for b in v)
  assert rows['unigram'][:2] == (round(bits / 8), f'{bits / len(v):.4f}')
  assert 'add-one' in rows['unigram'][2] or '+ 1' in rows['unigram'][2]
  assert baselines.unigram(t, v).bits_per_byte == pytest.approx(bits / len(v), rel=1e-12)


@pytest.mark.parametrize('files, at, argv, match', [
    ({}, '', None, "the folder {} (--data_dir) holds no UTF-8 text file"),
    ({'x.bin': b'\x00\x01', 'sub/y.txt': b'\xff\xfe', '.hidden.txt': b'text'}, '', None,
     'the folder {} (--data_dir) holds no UTF-8 text file'),
    ({}, 'nowhere', None, "no file or folder at '{}' (--data_dir)"),
    ({'x.bin': b'\x00\x01'}, 'x.bin', None, '{} (--data_dir) is not a UTF-8 text file'),
    ({}, '', ['baselines', 'text'], '`baselines text` needs --data_dir=DIR'),
    ({}, '', ['baselines', 'pystdlib', '--data_dir=DIR'], '--data_dir is for `baselines text`'),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, files, at, argv, match):
  write_files(tmp_path, files)
  where = str(tmp_path / at) if at else str(tmp_path)
  if argv is None:
    status, lines, err = printed(capsys, ['baselines', 'text', f'--data_dir={where}'])
  else:
    with pytest.raises(SystemExit) as exit_:
      command.main(argv)
    status, (lines, err) = exit_.value.code, capsys.readouterr()
  assert status == 2 and not lines
  assert err.startswith('error: ') and err.count('\n') == 1 and match.format(where) in err


@pytest.mark.slow
def test_the_command_gives_one_line_and_no_traceback_in_its_own_process(tmp_path):
  write_files(tmp_path, {'x.bin': b'\x00\x01'})
  done = subprocess.run([sys.executable, '-m', 'mlres.data', 'baselines', 'text', f'--data_dir={tmp_path}'],
                        cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': ROOT})
  assert done.returncode == 2 and done.stdout == ''
  assert done.stderr == (f"error: dataset 'text': the folder {tmp_path} (--data_dir) holds no UTF-8 text file "
                         '(non-empty, without NUL bytes, not hidden)\n')


@pytest.mark.slow
def test_pystdlib_baselines_are_of_the_split_a_run_evaluates(capsys):
  status, lines, _ = printed(capsys, ['baselines', 'pystdlib'])
  v = text.pystdlib().validation.tobytes()
  assert status == 0 and f'validation split: {len(v):,} bytes' in lines[1]
  rows = {m[1]: (int(m[2].replace(',', '')), m[3]) for m in map(ROW.match, lines[4:])}
  size = len(lzma.compress(v, preset=9 | lzma.PRESET_EXTREME))
  assert rows['xz -9e'] == (size, f'{8 * size / len(v):.4f}')
  assert 1.5 < float(rows['bzip2 -9'][1]) < float(rows['gzip -9'][1]) < 2.5  # code, not noise
