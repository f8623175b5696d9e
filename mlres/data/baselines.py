"""What a language model's validation bits per byte should beat: the standard library's compressors
and a unigram byte model, on the very bytes the trainer evaluates.

    python -m mlres.data baselines pystdlib
    python -m mlres.data baselines text --data_dir=DIR

The validation split is `TextDataset.validation` as `mlres.data.text` makes it for a run (the same
split by file, each file followed by its NUL), so the figures stand beside a run's `val` bits per
byte. They are of the whole split; a run's evaluation reads `text.eval_windows` windows of it, and
with eval_windows=0 (all of them) it predicts every byte of the split but the first and a tail
shorter than model.context: that is the setting to compare with.

Bits per byte = 8 * compressed length / the split's length for gzip -9 (`gzip.compress(v, 9)`),
bzip2 -9 (`bz2.compress(v, 9)`) and xz -9e (`lzma.compress(v, preset=9 | lzma.PRESET_EXTREME)`),
headers and all. The unigram is the cross-entropy in bits of the validation bytes under the train
split's byte frequencies, add-one smoothed: p(b) = (count of b in train + 1) / (train bytes + 256),
so that a byte train never holds costs a finite number of bits.
"""
from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma

import numpy as np

from mlres.data import text


@dataclasses.dataclass(frozen=True)
class Baseline:
  name: str             # as a table's row shows it: 'gzip -9'
  call: str             # how it is computed, v being the validation bytes
  size: float           # bytes: the compressed length, or the unigram's code length (bits / 8)
  bits_per_byte: float  # 8 * size / len(v)


COMPRESSORS = (
    ('gzip -9', 'gzip.compress(v, 9)', lambda v: gzip.compress(v, 9)),
    ('bzip2 -9', 'bz2.compress(v, 9)', lambda v: bz2.compress(v, 9)),
    ('xz -9e', 'lzma.compress(v, preset=9 | lzma.PRESET_EXTREME)',
     lambda v: lzma.compress(v, preset=9 | lzma.PRESET_EXTREME)),
)
UNIGRAM = 'unigram'


def compressed(validation: bytes) -> list[Baseline]:
  """gzip -9, bzip2 -9 and xz -9e on `validation`, whole."""
  rows = []
  for name, call, compress in COMPRESSORS:
    size = len(compress(validation))
    rows.append(Baseline(name, call, size, 8 * size / len(validation)))
  return rows


def unigram(train: bytes | np.ndarray, validation: bytes | np.ndarray) -> Baseline:
  """The validation bytes' cross-entropy under the train split's byte frequencies, add-one smoothed
  over the 256 byte values."""
  train = np.frombuffer(train, np.uint8) if isinstance(train, bytes) else np.asarray(train, np.uint8)
  validation = (np.frombuffer(validation, np.uint8) if isinstance(validation, bytes)
                else np.asarray(validation, np.uint8))
  counts = np.bincount(train, minlength=text.VOCAB_SIZE).astype(np.float64)
  bits_of = -np.log2((counts + 1) / (len(train) + text.VOCAB_SIZE))
  bits = float(np.bincount(validation, minlength=text.VOCAB_SIZE) @ bits_of)
  return Baseline(UNIGRAM, 'p(b) = (count of b in train + 1) / (train bytes + 256); bytes: bits / 8',
                  bits / 8, bits / len(validation))


def measure(ds: text.TextDataset) -> list[Baseline]:
  """Every baseline on `ds.validation`, the split a run's validation bits per byte are of."""
  validation = ds.validation.tobytes()
  return [*compressed(validation), unigram(ds.train, ds.validation)]


def load(dataset: str, data_dir: str = '') -> text.TextDataset:
  """The corpus as a run with config.dataset=`dataset` (and config.data_dir=`data_dir`) reads it;
  errors name --data_dir, the command's flag."""
  if dataset == 'pystdlib':
    return text.pystdlib()
  if dataset == 'text':
    return text.text_folder(data_dir, source='--data_dir')
  raise ValueError(f'dataset={dataset!r}: the baselines are for pystdlib or text')


def lines(ds: text.TextDataset, rows: list[Baseline]) -> list[str]:
  """The command's output: the corpus, what the split is and what a run's figure compares with, and
  one row per baseline."""
  split = ds.fingerprint['validation']
  out = [text.describe(ds.fingerprint),
         f'validation split: {split["bytes"]:,} bytes in {split["files"]:,} '
         f'file{"s" if split["files"] != 1 else ""}, each followed by a NUL (TextDataset.validation): '
         "the bytes a run's validation bits per byte are computed on",
         "baselines of the whole split; a run's evaluation reads text.eval_windows windows of it: compare "
         'with eval_windows=0 (all windows: every byte but the first and a tail shorter than model.context)',
         f'{"baseline":<10} {"bytes":>12} {"bits/byte":>9}  computed as']
  for row in rows:
    out.append(f'{row.name:<10} {round(row.size):>12,} {row.bits_per_byte:>9.4f}  {row.call}')
  return out
