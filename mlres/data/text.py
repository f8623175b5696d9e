"""Byte-level text for a language model: the running Python's standard library (no download) or a
user's UTF-8 files, split by file into train and validation, and the windows a step reads.

Bytes are the tokens (vocabulary 256), so no tokenizer is needed and any text can be read. A
corpus is every text file under a root in sorted relative-path order, each followed by a NUL byte
(END): no text file holds one, so it is a free end-of-file token, and a window that spans two files
sees where the first ends instead of reading unrelated files as one. A file is text when it is
non-empty, has no NUL byte and decodes as UTF-8 (others, e.g. `.pyc` or images, are skipped, read
no further than their first bad chunk). Names starting with '.' (`.git`, `.venv`) are skipped with
everything under them. A corpus holds at most MAX_BYTES: the windows' offsets are int32.

The split is by file, so validation holds whole files the model never trained on: a file goes
to validation when the first 8 bytes of the SHA-256 of its relative path ('/'-separated), read
as a fraction of 2**64, are below VALIDATION_FRACTION. That depends on the path only, not on
the listing order, the machine or the run. With two files or more, both splits get at least
one: where the rule gives validation none, the file of the smallest hash goes there; where it
gives train none, the file of the largest stays in train. A single file is cut instead: the last
VALIDATION_FRACTION of its bytes and END (at least one byte) is the validation split.

`mlres.data.tokens` writes the same corpora as token files, a file at a time, with this rule
(`in_validation`, `validation_names`, `single_file_cut`).
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import platform
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np

from mlres import report
from mlres.data.dataset import DataError

VOCAB_SIZE = 256
VALIDATION_FRACTION = 0.05
END = b'\0'  # after every file: its end
MAX_BYTES = 2**31 - 1  # the last byte an int32 offset reaches
CHUNK = 1 << 20  # bytes of a file read at a time, each checked before the next is read
# Folders of the standard library, at any depth, that are not code its authors wrote: installed
# packages, the test suites (whose data include deliberately malformed sources), and generated
# files: the codecs' charmap tables (1.4 MB of hex) and pydoc's help topics (0.76 MB of prose in one
# file, which by its path's hash would be 60% of the validation split).
STDLIB_EXCLUDED = frozenset({'site-packages', 'dist-packages', 'test', 'tests', 'idle_test', 'encodings',
                             'pydoc_data'})


@dataclasses.dataclass(frozen=True)
class TextDataset:
  name: str
  train: np.ndarray       # uint8, (n,): the train files' bytes, each followed by END, read-only
  validation: np.ndarray  # uint8, (m,): the validation files' bytes, likewise
  fingerprint: dict  # JSON-ready: what identifies the corpus (see `_dataset`)
  vocab_size: int = VOCAB_SIZE  # ids lie below it: bytes, or a tokenizer's (token files)


def pystdlib(root: str | None = None) -> TextDataset:
  """The `*.py` sources of the standard library at `root` (this Python's by default), without
  the folders in STDLIB_EXCLUDED: about 10 MB of real code on every machine (Python 3.11),
  and a different corpus for each Python version, which the fingerprint records."""
  root = root or sysconfig.get_paths()['stdlib']
  texts = _read(root, _names(root, STDLIB_EXCLUDED, '.py'))
  if not texts:
    raise DataError(f"dataset 'pystdlib': this Python ({platform.python_version()}) ships no standard "
                    f"library sources in {root} (only compiled .pyc, if any); use dataset='text' with "
                    'config.data_dir set to a folder of text files')
  return _dataset('pystdlib', texts, python=platform.python_version())


def text_folder(path: str, source: str = 'config.data_dir') -> TextDataset:
  """Dataset `text`: the UTF-8 text file at `path`, or every one under the folder at `path`. Its
  errors name `source`, where the path came from (a command-line flag for `python -m mlres.data`)."""
  where = os.path.expanduser(path)
  if os.path.isfile(where):
    texts = _read(os.path.dirname(where), [os.path.basename(where)])
    if not texts:
      raise DataError(f"dataset 'text': {where} ({source}) is not a UTF-8 text file: it is empty, "
                      'has NUL bytes or does not decode')
  elif os.path.isdir(where):
    texts = _read(where, _names(where))
    if not texts:
      raise DataError(f"dataset 'text': the folder {where} ({source}) holds no UTF-8 text file "
                      '(non-empty, without NUL bytes, not hidden)')
  else:
    raise DataError(f"dataset 'text': no file or folder at {where!r} ({source}); set it to a UTF-8 "
                    'text file or a folder of them')
  return _dataset('text', texts)


def _names(root: str, excluded: frozenset[str] = frozenset(), suffix: str = '') -> list[str]:
  """'/'-separated paths relative to `root` of its files ending in `suffix`, hidden names and
  `excluded` folders aside. Walking prunes those folders: site-packages' files are never listed."""
  names = []
  for folder, folders, files in os.walk(root):
    folders[:] = [f for f in folders if f not in excluded and not f.startswith('.')]
    relative = os.path.relpath(folder, root)
    names += [os.path.normpath(os.path.join(relative, f)).replace(os.sep, '/')
              for f in files if f.endswith(suffix) and not f.startswith('.')]
  return names


def _read(root: str, names: list[str]) -> list[tuple[str, bytes]]:
  """(name, bytes) of the text files among `names` under `root`, sorted by name. Stops with a
  DataError as soon as they pass MAX_BYTES, not after reading them all."""
  texts, total = [], 0
  for name in sorted(names):
    path = os.path.join(root, name)
    try:
      content = _text(path)
    except OSError as e:
      raise DataError(f'{path} cannot be read ({report.error_line(e)})') from e
    if content is not None:
      texts.append((name, content))
      total += len(content) + len(END)
      if total > MAX_BYTES:
        raise DataError(f'the text files under {root} pass {MAX_BYTES:,} bytes at {name}: more than '
                        'int32 window offsets reach; use a folder of less text')
  return texts


def _text(path: str) -> bytes | None:
  """The file's bytes where it is text (non-empty, no NUL, UTF-8), else None; a file that is not is
  read no further than its first chunk that shows it."""
  chunks, decoder = [], codecs.getincrementaldecoder('utf-8')()
  with open(path, 'rb') as f:
    while chunk := f.read(CHUNK):
      if END in chunk:
        return None
      try:
        decoder.decode(chunk)
      except UnicodeDecodeError:
        return None
      chunks.append(chunk)
  try:
    decoder.decode(b'', final=True)  # a file that ends inside a character
  except UnicodeDecodeError:
    return None
  return b''.join(chunks) or None


def _hash(name: str) -> int:
  return int.from_bytes(hashlib.sha256(name.encode('utf-8')).digest()[:8], 'big')


def in_validation(name: str) -> bool:
  """Where the hash rule alone sends a file (module docstring): before the fallbacks, which need the
  whole list (`validation_names`). A writer that streams file by file decides with this as it goes."""
  return _hash(name) < VALIDATION_FRACTION * 2**64


def validation_names(names: list[str]) -> set[str]:
  """The names, of two files or more, that go to validation: the hash rule, then its fallbacks (both
  splits get one). Names may repeat (two roots holding the same relative path): they go together."""
  hashes = {name: _hash(name) for name in names}
  to_test = {name for name in hashes if in_validation(name)}
  if not to_test:
    to_test = {min(hashes, key=hashes.get)}
  elif len(to_test) == len(hashes):
    to_test.remove(max(hashes, key=hashes.get))
  return to_test


def single_file_cut(length: int) -> int:
  """Where a corpus of a single file, `length` bytes with its END, is cut: train holds [:cut],
  validation the rest, the last VALIDATION_FRACTION and at least one byte."""
  return length - max(1, int(length * VALIDATION_FRACTION))


def _dataset(name: str, texts: list[tuple[str, bytes]], **about) -> TextDataset:
  """The split (module docstring) and the fingerprint: file and byte counts of the corpus and of
  each split (END included), and the SHA-256 of the train bytes followed by the validation bytes
  (what a run reads, the split included)."""
  if len(texts) == 1:
    content = texts[0][1] + END
    cut = single_file_cut(len(content))
    train, test, files = [content[:cut]], [content[cut:]], (1, 1)
  else:
    to_test = validation_names([path for path, _ in texts])
    train = [content + END for path, content in texts if path not in to_test]
    test = [content + END for path, content in texts if path in to_test]
    files = len(train), len(test)
  train_bytes, test_bytes = b''.join(train), b''.join(test)
  digest = hashlib.sha256(train_bytes)
  digest.update(test_bytes)
  fingerprint = dict(dataset=name, **about, files=len(texts), bytes=len(train_bytes) + len(test_bytes),
                     sha256=digest.hexdigest(),
                     train=dict(files=files[0], bytes=len(train_bytes)),
                     validation=dict(files=files[1], bytes=len(test_bytes)))
  return TextDataset(name, np.frombuffer(train_bytes, np.uint8), np.frombuffer(test_bytes, np.uint8),
                     fingerprint)


def describe(fingerprint: dict) -> str:
  """The fingerprint as a run's first line shows it: which corpus, how big, which bytes."""
  python = f' of Python {fingerprint["python"]}' if 'python' in fingerprint else ''
  train, test = fingerprint['train'], fingerprint['validation']
  return (f'{fingerprint["dataset"]}{python}: {fingerprint["files"]:,} files, {fingerprint["bytes"]:,} bytes '
          f'(train {train["bytes"]:,} in {train["files"]:,}, validation {test["bytes"]:,} in '
          f'{test["files"]:,}), sha256 {fingerprint["sha256"][:12]}')


def check_context(ds: TextDataset, context: int) -> None:
  """Every split must hold one window of `context + 1` bytes (inputs and their next bytes)."""
  for split, data in (('train', ds.train), ('validation', ds.validation)):
    if len(data) < context + 1:
      raise DataError(f'context={context} needs windows of {context + 1} bytes, but the {ds.name} '
                      f'{split} split has {len(data)} bytes; lower model.context or add text')


def draw_offsets(key: jax.Array, n_bytes: int, context: int, shape: tuple[int, ...]) -> jax.Array:
  """Window starts drawn uniformly from [0, n_bytes - context - 1], on the device from the step's
  key, so that every window of `context + 1` bytes lies inside a split of `n_bytes`."""
  return jax.random.randint(key, shape, 0, n_bytes - context, dtype=jnp.int32)


def windows(data: jax.Array, offsets: jax.Array, context: int) -> jax.Array:
  """The uint8 windows data[o : o + context + 1] for every offset o: shape offsets.shape +
  (context + 1,); a model reads [..., :-1] and predicts [..., 1:]."""
  return data[offsets[..., None] + jnp.arange(context + 1, dtype=offsets.dtype)]


def eval_offsets(n_bytes: int, context: int, limit: int = 0) -> np.ndarray:
  """The fixed validation windows' starts, every `context` bytes: the bytes they predict do not
  overlap (a window's last target is the next one's first input) and cover the split but for its
  first byte and a tail shorter than `context`. With `limit` (0: none), at most that many of them,
  spread evenly so that a cheap evaluation still reads the whole split, not its first files. Needs
  n_bytes >= context + 1 (`check_context`)."""
  count = (n_bytes - 1) // context
  chosen = np.arange(count) if not 0 < limit < count else np.arange(limit) * count // limit
  return (chosen * context).astype(np.int64)
