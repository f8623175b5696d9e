"""Token files: a corpus larger than memory, in nanoGPT's convention, read memory-mapped.

A folder of three files:

  train.bin   the train split's token ids, one flat little-endian array, no header
  val.bin     the validation split's, likewise
  meta.json   {"dtype": "uint8" | "uint16" | "uint32", "vocab_size": V, ...}: the ids' type and the
              vocabulary they lie below; `write` adds what made them ("source", its "fingerprint",
              "created", the "tokens" of each split, the "end" id after each document)

Bytes are uint8 with vocabulary 256 (`python -m mlres.data tokens SOURCE --out=DIR` writes the byte
corpora of `mlres.data.text` so, each file followed by its NUL); a tokenizer's ids are uint16 (a
vocabulary up to 65,536, e.g. GPT-2's 50,257) or uint32. nanoGPT's `prepare.py` files are read as
they are once a meta.json says their dtype and vocabulary (docs/data.md, "Larger than memory").

What is checked, and when (`TokenFiles.open` reads no token):
- open: meta.json parses and has a known dtype and a vocabulary that the dtype can hold; both .bin
  files exist, are non-empty and a whole number of ids; their counts are the metadata's if it
  records them. All O(1).
- `windows`: every id a window reads is below the vocabulary (the max over what was read anyway).
- `scan`: every id of both files, a chunk at a time (CHUNK ids), for a caller that wants the
  whole file checked before training rather than as it is read. Files of uint8 bytes with
  vocabulary 256 cannot hold a bad id and are not scanned.
Each failure is a one-line DataError naming the file.

Memory: the files are np.memmap'ed read-only, and the trainer reads its windows with pread (`read`),
not through the map: pages touched through a map count in the process's resident memory (clean and
reclaimable, but with the kernel's fault-around soon most of a streamed file; nanoGPT re-creates
its memmap every batch for this), while pages read stay in the kernel's cache alone. `scan` reads
the files likewise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import platform
import sys
import sysconfig
from typing import Callable, Iterator

import numpy as np

from mlres import report
from mlres.data import text
from mlres.data.dataset import DataError
from mlres.data.download import _Progress  # a tqdm bar on a terminal, else a line every 5%

FILES = {'train': 'train.bin', 'validation': 'val.bin'}
META = 'meta.json'
DTYPES = {'uint8': np.dtype('<u1'), 'uint16': np.dtype('<u2'), 'uint32': np.dtype('<u4')}
CHUNK = 1 << 24  # ids checked at a time by `scan`
SOURCES = ('pystdlib', 'text', 'pysource')  # what `python -m mlres.data tokens SOURCE` reads


# ---------------------------------------------------------------------------------------------------
# Reading


def read_meta(directory: str) -> dict:
  """meta.json of a token folder, checked for a known dtype and a vocabulary that it can hold."""
  path = os.path.join(directory, META)
  if not os.path.isdir(directory):
    raise DataError(f'token files: no folder {directory}; write one with `python -m mlres.data tokens '
                    'SOURCE --out=DIR` or as docs/data.md shows')
  try:
    with open(path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise DataError(f'{path} is missing: token files need it for their dtype and vocab_size (a '
                    '`python -m mlres.data tokens` that did not finish leaves none)') from None
  except (OSError, ValueError) as e:
    raise DataError(f'{path} is not readable JSON ({report.error_line(e)})') from e
  if not isinstance(meta, dict):
    raise DataError(f'{path} must hold a JSON object with "dtype" and "vocab_size"')
  dtype, vocab = meta.get('dtype'), meta.get('vocab_size')
  if dtype not in DTYPES:
    raise DataError(f'{path}: dtype {dtype!r} must be one of {", ".join(DTYPES)}')
  if type(vocab) is not int or vocab < 1:
    raise DataError(f'{path}: vocab_size {vocab!r} must be a positive integer')
  if vocab > 2 ** (8 * DTYPES[dtype].itemsize):
    raise DataError(f'{path}: vocab_size {vocab:,} does not fit dtype {dtype} (ids below '
                    f'{2 ** (8 * DTYPES[dtype].itemsize):,}); use {_smallest_dtype(vocab)}')
  return meta


def check_vocabulary(meta: dict, vocab_size: int, where: str = META) -> None:
  """A model of `vocab_size` embeddings can read token files of metadata `meta` (from `where`):
  their vocabulary must not be larger (a larger model vocabulary is fine: nanoGPT pads GPT-2's 50,257
  to 50,304)."""
  if meta['vocab_size'] > vocab_size:
    raise DataError(f'{where}: the token files\' vocabulary of {meta["vocab_size"]:,} ids is larger '
                    f'than the model\'s {vocab_size:,}: ids from {vocab_size:,} up have no embedding')


def _smallest_dtype(vocab: int) -> str:
  return next(name for name, d in DTYPES.items() if vocab <= 2 ** (8 * d.itemsize))


@dataclasses.dataclass(frozen=True, eq=False)
class TokenFiles:
  """A token folder opened: both splits memory-mapped, read only where a window falls."""
  directory: str
  meta: dict
  train: np.memmap       # (n,), DTYPES[meta['dtype']]
  validation: np.memmap  # (m,)

  @classmethod
  def open(cls, directory: str) -> TokenFiles:
    directory = os.path.expanduser(directory)
    meta = read_meta(directory)
    dtype = DTYPES[meta['dtype']]
    counts = meta.get('tokens') or {}
    splits = {}
    for split, name in FILES.items():
      path = os.path.join(directory, name)
      try:
        size = os.path.getsize(path)
      except FileNotFoundError:
        raise DataError(f'{path} is missing: a token folder holds {" and ".join(FILES.values())} '
                        f'beside {META}') from None
      if size == 0 or size % dtype.itemsize:
        raise DataError(f'{path}: {size:,} bytes are not a whole, non-zero number of {meta["dtype"]} '
                        f'ids ({dtype.itemsize} bytes each), as {META} says they are')
      count = size // dtype.itemsize
      if split in counts and counts[split] != count:
        raise DataError(f'{path} holds {count:,} ids, {META} says {counts[split]:,}: the files are not '
                        'the ones it describes (write them again)')
      splits[split] = np.memmap(path, dtype, mode='r')
    return cls(directory, meta, **splits)

  @property
  def dtype(self) -> np.dtype:
    return self.train.dtype

  @property
  def vocab_size(self) -> int:
    return self.meta['vocab_size']

  def path(self, split: str) -> str:
    return os.path.join(self.directory, FILES[split])

  def check_vocabulary(self, vocab_size: int) -> None:
    check_vocabulary(self.meta, vocab_size, os.path.join(self.directory, META))

  def windows(self, split: str, offsets, context: int) -> np.ndarray:
    """The windows ids[o : o + context + 1] of `split` for every offset o, shape (len(offsets),
    context + 1), in the files' dtype: a model reads [:, :-1] and predicts [:, 1:]. Reads only
    those ids; each is checked against the vocabulary."""
    data = getattr(self, split)
    offsets = np.asarray(offsets, np.int64)
    if offsets.size and (offsets.min() < 0 or offsets.max() > len(data) - context - 1):
      raise ValueError(f'window offsets must lie in [0, {len(data) - context - 1}] for windows of '
                       f'{context + 1} ids of the {len(data):,} in {self.path(split)}')
    out = data[offsets[..., None] + np.arange(context + 1)]
    if self._checked and out.size and out.max() >= self.vocab_size:
      at = np.unravel_index(np.argmax(out >= self.vocab_size), out.shape)
      self._bad(split, int(offsets[at[:-1]] + at[-1]), int(out[at]))
    return np.asarray(out)

  def scan(self, chunk: int = CHUNK) -> None:
    """Every id of both files checked against the vocabulary, `chunk` ids at a time. Read from the
    files, not through the memory maps, so the pages read stay in the kernel's cache and never count
    in this process's resident memory (through the maps, a scan of a 1 GB file left 1.1 GB of it
    resident)."""
    if not self._checked:
      return
    for split in FILES:
      with open(self.path(split), 'rb') as f:
        start = 0
        while (part := np.fromfile(f, self.dtype, chunk)).size:
          if part.max() >= self.vocab_size:
            at = int(np.argmax(part >= self.vocab_size))
            self._bad(split, start + at, int(part[at]))
          start += part.size

  @property
  def _checked(self) -> bool:
    """Whether an id of this dtype can be at or above the vocabulary."""
    return self.vocab_size < 2 ** (8 * self.dtype.itemsize)

  def _bad(self, split: str, index: int, value: int):
    raise DataError(f'{self.path(split)}: token {index:,} is {value:,}, not below the vocab_size '
                    f'{self.vocab_size:,} of {os.path.join(self.directory, META)}')

  def describe(self) -> str:
    source = self.meta.get('fingerprint')
    made = text.describe(source) if isinstance(source, dict) and 'train' in source else self.meta.get(
        'source', 'unknown source')
    return (f'tokens in {self.directory}: train {len(self.train):,} and validation '
            f'{len(self.validation):,} {self.meta["dtype"]} ids below {self.vocab_size:,}, from {made}')


def read(data: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
  """data[o : o + length] for each offset o: (len(offsets), length). Of a memory-mapped split the ids
  are read with pread, not through the map: pages touched through a map count in the process's
  resident memory, the kernel's fault-around mapping 16 of them at a time, so streaming windows of a
  1 GB file through its map left 1.1 GB of it resident after 200 steps (clean, reclaimable, and
  still the figure `top` shows); read, they stay in the kernel's cache alone."""
  if not isinstance(data, np.memmap):
    return data[offsets[:, None] + np.arange(length)]
  size, fd = data.dtype.itemsize, _descriptor(data.filename)
  out = np.empty((len(offsets), length), data.dtype)
  for row, start in enumerate(offsets.tolist()):
    out[row] = np.frombuffer(os.pread(fd, length * size, data.offset + start * size), data.dtype)
  return out


@functools.lru_cache(maxsize=None)
def _descriptor(path: str) -> int:
  """One read-only descriptor per token file, for the process's life."""
  return os.open(path, os.O_RDONLY)


def dataset(directory: str) -> text.TextDataset:
  """A token folder (config.dataset='tokens', config.data_dir) as a language model's corpus, both
  splits memory-mapped: a run reads only the windows it draws (config.input='host'), or copies a
  split of up to 1 GiB to the devices. Where the dtype can hold ids past the vocabulary, every id is
  checked first (`scan`), so that a bad file stops the run before it starts, not at the step that
  reads it."""
  if not directory:
    raise DataError("dataset='tokens' reads token files from config.data_dir; set it to the folder that "
                    '`python -m mlres.data tokens SOURCE --out=DIR` wrote')
  files = TokenFiles.open(directory)
  files.scan()
  return text.TextDataset('tokens', files.train, files.validation, fingerprint(files),
                          vocab_size=files.vocab_size)


def fingerprint(files: TokenFiles) -> dict:
  """What identifies token files without reading them whole: their folder, dtype, vocabulary and
  counts, and the SHA-256 of meta.json and of each file's first and last MiB."""
  digest = hashlib.sha256(json.dumps(files.meta, sort_keys=True).encode())
  for split in FILES:
    data = getattr(files, split)
    edge = max(1, (1 << 20) // data.itemsize)
    digest.update(np.asarray(data[:edge]).tobytes())
    digest.update(np.asarray(data[-edge:]).tobytes())
  return dict(dataset='tokens', directory=files.directory, dtype=files.meta['dtype'],
              vocab_size=files.vocab_size, train=dict(tokens=len(files.train)),
              validation=dict(tokens=len(files.validation)), sha256=digest.hexdigest())


def describe(fingerprint: dict) -> str:
  """A token folder's fingerprint in a line, as a run's first line shows it."""
  return (f'tokens in {fingerprint["directory"]}: train {fingerprint["train"]["tokens"]:,} and validation '
          f'{fingerprint["validation"]["tokens"]:,} {fingerprint["dtype"]} ids below '
          f'{fingerprint["vocab_size"]:,}, sha256 {fingerprint["sha256"][:12]}')


# ---------------------------------------------------------------------------------------------------
# Writing a byte corpus


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A byte corpus listed, not yet read: (name, path) of its candidate files in corpus order, the
  name being what the split hashes (text.py's rule)."""
  name: str
  files: list[tuple[str, str]]
  about: dict          # what the fingerprint adds (e.g. the Python version)
  empty: str           # the error when none of the files is text
  roots: list[str] = dataclasses.field(default_factory=list)


def pystdlib_corpus(root: str | None = None) -> Corpus:
  """Dataset `pystdlib`'s files (text.pystdlib): the same bytes, listed for streaming."""
  root = root or sysconfig.get_paths()['stdlib']
  names = sorted(text._names(root, text.STDLIB_EXCLUDED, '.py'))
  return Corpus('pystdlib', [(n, os.path.join(root, n)) for n in names],
                dict(python=platform.python_version()),
                f"dataset 'pystdlib': this Python ({platform.python_version()}) ships no standard "
                f'library sources in {root}', [root])


def text_corpus(path: str, source: str = '--data_dir') -> Corpus:
  """Dataset `text`'s files (text.text_folder): one UTF-8 file, or every one under a folder."""
  where = os.path.expanduser(path)
  if os.path.isfile(where):
    root, names = os.path.dirname(where), [os.path.basename(where)]
    empty = (f"dataset 'text': {where} ({source}) is not a UTF-8 text file: it is empty, has NUL "
             'bytes or does not decode')
  elif os.path.isdir(where):
    root, names = where, sorted(text._names(where))
    empty = (f"dataset 'text': the folder {where} ({source}) holds no UTF-8 text file (non-empty, "
             'without NUL bytes, not hidden)')
  else:
    raise DataError(f"dataset 'text': no file or folder at {where!r} ({source}); set it to a UTF-8 "
                    'text file or a folder of them')
  return Corpus('text', [(n, os.path.join(root, n)) for n in names], {}, empty, [os.path.abspath(root)])


def pysource_roots() -> list[str]:
  """The folders of this interpreter's sys.path (zip files and missing entries aside), without the
  current directory that `python -m` and `-c` put first: the corpus does not depend on where the
  command runs."""
  here = os.path.realpath(os.getcwd())
  return [p for p in sys.path if p and os.path.isdir(p) and os.path.realpath(p) != here]


def pysource_corpus(roots: list[str] | None = None) -> Corpus:
  """Every `.py` under `roots` (pysource_roots(): the standard library, site-packages, ...), hidden
  names aside, each real file once, named by its path relative to the innermost root that holds it
  (so `os.py` and `jax/_src/core.py` whatever the machine's prefix, and the standard library's
  files named as in pystdlib, which then splits them alike). A folder that is itself a root (the
  standard library holds site-packages) is left to that root. Same-named files of two roots stay
  both, next to each other, in the same split. Unlike pystdlib, no folder is excluded: tests and
  generated tables are code on this machine too."""
  roots = list(dict.fromkeys(os.path.realpath(r) for r in (pysource_roots() if roots is None else roots)))
  seen, files = set(), []
  for order, root in enumerate(roots):
    others = set(roots) - {root}
    for folder, folders, names in os.walk(root):
      folders[:] = sorted(f for f in folders if not f.startswith('.')
                          and os.path.realpath(os.path.join(folder, f)) not in others)
      for name in names:
        path = os.path.join(folder, name)
        if name.endswith('.py') and not name.startswith('.'):
          real = os.path.realpath(path)
          if real not in seen and os.path.isfile(real):
            seen.add(real)
            files.append((os.path.relpath(path, root).replace(os.sep, '/'), order, path))
  files.sort()
  return Corpus('pysource', [(n, p) for n, _, p in files], dict(python=platform.python_version()),
                f"dataset 'pysource': no UTF-8 .py file under {', '.join(roots) or 'sys.path'}", roots)


def corpus(source: str, data_dir: str = '') -> Corpus:
  """The corpus that `python -m mlres.data tokens SOURCE` reads."""
  if source == 'text':
    return text_corpus(data_dir)
  if data_dir:
    raise DataError(f'--data_dir is for `tokens text`; {source} is read from this Python')
  return pystdlib_corpus() if source == 'pystdlib' else pysource_corpus()


def write_corpus(corpus: Corpus, out: str, progress: bool = True) -> dict:
  """Writes the corpus as token files in `out` (uint8 bytes, vocabulary 256, each file followed by
  text.END, split by text.py's rule): the very bytes of text.py's TextDataset for pystdlib and text,
  and its fingerprint. Reads a file at a time (never the corpus in memory) and writes to hidden
  temporary names renamed at the end, meta.json last (an old one removed first): a crash leaves no
  meta.json beside new .bin files, so nothing that reads as whole. On failure nothing is left. Returns
  the metadata."""
  out = os.path.expanduser(out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise DataError(f'--out={out} is a file, not a folder')
  total = sum(_size(path) for _, path in corpus.files)
  with _staged(out) as staged:
    texts = _write_splits(corpus, staged, text.in_validation, total, progress)
    if not texts:
      raise DataError(corpus.empty)
    names = [name for name, _ in texts]
    if len(texts) == 1:  # one file is cut (text.py), not sent whole to a split
      _write_cut(texts[0], staged)
    else:
      to_test = text.validation_names(names)
      if any((name in to_test) != text.in_validation(name) for name in names):  # a fallback: rare
        _write_splits(corpus, staged, to_test.__contains__, total, progress=False)
    counts, digest = _counts(staged, names)
    fingerprint = dict(dataset=corpus.name, **corpus.about, files=len(texts),
                       bytes=counts['train']['bytes'] + counts['validation']['bytes'],
                       sha256=digest, **counts)
    meta = dict(dtype='uint8', vocab_size=text.VOCAB_SIZE, source=corpus.name, fingerprint=fingerprint,
                roots=corpus.roots, end=0,
                tokens={split: counts[split]['bytes'] for split in FILES},
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
    staged.commit(meta)
  return meta


def _size(path: str) -> int:
  try:
    return os.path.getsize(path)
  except OSError:
    return 0


class _Staged:
  """The hidden temporary files of a write, and their commit."""

  def __init__(self, out: str):
    self.out, self.tmp = out, {split: os.path.join(out, f'.{name}.{os.getpid()}.tmp')
                                for split, name in FILES.items()}
    self.tmp['meta'] = os.path.join(out, f'.{META}.{os.getpid()}.tmp')

  def open(self, split: str, mode: str = 'wb'):
    try:
      return open(self.tmp[split], mode)
    except OSError as e:
      raise DataError(f'cannot write {self.tmp[split]} ({report.error_line(e)})') from e

  def commit(self, meta: dict) -> None:
    with self.open('meta', 'w') as f:
      json.dump(meta, f, indent=1)
      f.write('\n')
    for name in self.tmp.values():
      _fsync(name)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(self.out, META))
    for split, name in FILES.items():
      os.replace(self.tmp[split], os.path.join(self.out, name))
    os.replace(self.tmp['meta'], os.path.join(self.out, META))
    _fsync(self.out)

  def discard(self) -> None:
    for name in self.tmp.values():
      with contextlib.suppress(FileNotFoundError):
        os.remove(name)


def _fsync(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def _staged(out: str) -> Iterator[_Staged]:
  """A _Staged in `out` (made if missing); on any failure its files are removed, and `out` too if
  this made it."""
  made = not os.path.isdir(out)
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    raise DataError(f'cannot make --out={out} ({report.error_line(e)})') from e
  staged = _Staged(out)
  try:
    yield staged
  except BaseException:
    staged.discard()
    if made:
      with contextlib.suppress(OSError):
        os.rmdir(out)
    raise


def _read_text(path: str) -> bytes | None:
  try:
    return text._text(path)
  except OSError as e:
    raise DataError(f'{path} cannot be read ({report.error_line(e)})') from e


def _write_splits(corpus: Corpus, staged: _Staged, to_validation: Callable[[str], bool], total: int,
                  progress: bool) -> list[tuple[str, str]]:
  """Every text file of the corpus, with its END, appended to the split `to_validation` gives its
  name; (name, path) of those that were text."""
  texts, done = [], 0
  with staged.open('train') as train, staged.open('validation') as validation, \
      _Progress(f'tokens {corpus.name}', max(total, 1), 0, progress) as shown:
    for name, path in corpus.files:
      content = _read_text(path)
      done += _size(path)
      if content is not None:
        texts.append((name, path))
        f = validation if to_validation(name) else train
        f.write(content)
        f.write(text.END)
      shown.to(done)
  return texts


def _write_cut(only: tuple[str, str], staged: _Staged) -> None:
  content = _read_text(only[1]) + text.END
  cut = text.single_file_cut(len(content))
  for split, part in (('train', content[:cut]), ('validation', content[cut:])):
    with staged.open(split) as f:
      f.write(part)


def _counts(staged: _Staged, names: list[str]) -> tuple[dict, str]:
  """Each split's file and byte counts, and the SHA-256 of the train bytes then the validation bytes
  (text.py's fingerprint), read back from the staged files a chunk at a time."""
  digest, counts = hashlib.sha256(), {}
  for split in FILES:
    size = 0
    with staged.open(split, 'rb') as f:
      while chunk := f.read(text.CHUNK):
        digest.update(chunk)
        size += len(chunk)
    counts[split] = dict(bytes=size)
  if len(names) == 1:
    counts['train']['files'] = counts['validation']['files'] = 1
  else:
    to_test = text.validation_names(names)
    counts['validation']['files'] = sum(name in to_test for name in names)
    counts['train']['files'] = len(names) - counts['validation']['files']
  if not counts['train']['bytes'] or not counts['validation']['bytes']:
    raise DataError(f'the {len(names)} text files are all named {names[0]!r} (under different roots): '
                    'the split by name cannot give both splits one; add another file')
  return {split: dict(files=c['files'], bytes=c['bytes']) for split, c in counts.items()}, digest.hexdigest()
