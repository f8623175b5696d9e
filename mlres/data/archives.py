"""CIFAR-10, CIFAR-100 and STL-10 from the files their authors publish (those torchvision
downloads), extracted or as the .tar.gz itself: no TensorFlow and no `tfds build`.

An archive is read as one gzip stream, member by member, and left as soon as the needed members
have passed: gzip cannot seek, so opening members by name would decompress it again for each.
Every file is read once, and the images reach uint8 NHWC in one copy.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import posixpath
import tarfile
import zlib
from typing import Any, Callable

import numpy as np

from mlres import report
from mlres.data.dataset import DataError

CIFAR_PIXELS = 3 * 32 * 32
STL_PIXELS = 3 * 96 * 96


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a dataset's files are and how a split is made of them."""
  folder: str               # the archive's top-level folder, and the extracted one
  archive: str
  url: str
  md5: str                  # the published archive's checksum and size in bytes
  size: int
  train: tuple[str, ...]    # the files of each split, in that folder
  test: tuple[str, ...]
  load: Callable[[str, Any], Any]                       # (label, open file) -> its contents
  split: Callable[[list], tuple[np.ndarray, np.ndarray]]  # [(label, contents)] -> images, labels


class _ArrayUnpickler(pickle.Unpickler):
  """Resolves only the globals a pickled uint8 array needs: unpickling calls whatever callable a
  file names, so a pickle from disk could otherwise run any code."""
  ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
             ('numpy', 'ndarray'), ('numpy', 'dtype')}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f'it refers to {module}.{name}, which a CIFAR batch never does')
    return super().find_class(module, name)


def _unpickle(label: str, f) -> Any:
  try:
    return _ArrayUnpickler(f, encoding='bytes').load()
  except Exception as e:  # pickle raises assorted types for a cut or foreign file
    raise DataError(f'{label} is not a readable CIFAR pickle ({report.error_line(e)})') from e


def _raw(label: str, f) -> np.ndarray:
  return np.frombuffer(f.read(), np.uint8)


def _labels(label: str, values, n: int, first: int, classes: int) -> np.ndarray:
  """Labels checked against their images and range, as int32 from 0."""
  labels = np.asarray(values)
  if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'{label} has {labels.size} labels ({labels.dtype}) for {n} images')
  if labels.min() < first or labels.max() >= first + classes:
    raise DataError(f'{label} has labels {labels.min()}..{labels.max()}, outside '
                    f'{first}..{first + classes - 1}')
  return (labels - first).astype(np.int32)


def _cifar(key: bytes, classes: int, batches: list) -> tuple[np.ndarray, np.ndarray]:
  """Pickled batches of rows (1024 red, 1024 green, 1024 blue values, each plane row-major)."""
  parts = []
  for label, batch in batches:
    rows = batch.get(b'data') if isinstance(batch, dict) else None
    shaped = isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2
    if not shaped or rows.shape[1] != CIFAR_PIXELS or not len(rows) or key not in batch:
      raise DataError(f'{label} is not a CIFAR batch: it needs uint8 rows of {CIFAR_PIXELS} pixels '
                      f"in b'data' and their labels in {key!r}")
    parts.append((rows, _labels(label, batch[key], len(rows), 0, classes)))
  images = np.empty((sum(len(rows) for rows, _ in parts), 32, 32, 3), np.uint8)
  start = 0
  for rows, _ in parts:
    images[start:start + len(rows)] = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    start += len(rows)
  return images, np.concatenate([labels for _, labels in parts])


def _stl(files: list) -> tuple[np.ndarray, np.ndarray]:
  """X: images of 3 planes of 96x96, each plane column-major; y: one byte per image, 1..10."""
  (x_label, pixels), (y_label, labels) = files
  if not pixels.size or pixels.size % STL_PIXELS:
    raise DataError(f'{x_label} has {pixels.size} bytes, not a whole number of 3x96x96 images')
  n = pixels.size // STL_PIXELS
  labels = _labels(y_label, labels, n, 1, 10)
  return np.ascontiguousarray(pixels.reshape(n, 3, 96, 96).transpose(0, 3, 2, 1)), labels


_TORONTO = 'https://www.cs.toronto.edu/~kriz'
# The MD5s are the ones the datasets' pages publish; the sizes are what their servers send (STL-10's
# as tensorflow-datasets' checksums file lists it). mlres.data.download checks both.
LAYOUTS = {
    'cifar10': Layout('cifar-10-batches-py', 'cifar-10-python.tar.gz',
                      f'{_TORONTO}/cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a',
                      170498071,
                      tuple(f'data_batch_{i}' for i in range(1, 6)), ('test_batch',),
                      _unpickle, lambda batches: _cifar(b'labels', 10, batches)),
    'cifar100': Layout('cifar-100-python', 'cifar-100-python.tar.gz',
                       f'{_TORONTO}/cifar-100-python.tar.gz', 'eb9058c3a382ffc7106e4002c42a8d85',
                       169001437, ('train',), ('test',),
                       _unpickle, lambda batches: _cifar(b'fine_labels', 100, batches)),
    'stl10': Layout('stl10_binary', 'stl10_binary.tar.gz',
                    'http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz',
                    '91f7769df0f17e558f3565bffb0c7dfb', 2640397119,
                    ('train_X.bin', 'train_y.bin'), ('test_X.bin', 'test_y.bin'), _raw, _stl),
}


def places(name: str, directory: str) -> tuple[str, str]:
  """The extracted folder and the archive that `read` looks for, in that order."""
  layout = LAYOUTS[name]
  return os.path.join(directory, layout.folder), os.path.join(directory, layout.archive)


def read(name: str, directory: str) -> tuple[np.ndarray, ...] | None:
  """(train images, train labels, test images, test labels) of dataset `name` from its extracted
  folder in `directory`, else from its archive there; None where neither is there."""
  layout = LAYOUTS[name]
  folder, archive = places(name, directory)
  names = layout.train + layout.test
  try:
    if os.path.isdir(folder):
      files = _from_folder(folder, names, layout.load)
    elif os.path.isfile(archive):
      files = _from_archive(archive, layout.folder, names, layout.load)
    else:
      return None
    return (*layout.split([files[f] for f in layout.train]),
            *layout.split([files[f] for f in layout.test]))
  except DataError as e:
    raise DataError(f'{e}; download {layout.url} again') from e


def _from_folder(folder: str, names: tuple[str, ...], load) -> dict[str, tuple[str, Any]]:
  files = {}
  for name in names:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise DataError(f'{path} is missing from the extracted folder {folder}, which is read before '
                      'any archive')
    try:
      with open(path, 'rb') as f:
        files[name] = path, load(path, f)
    except OSError as e:
      raise DataError(f'{path} cannot be read ({report.error_line(e)})') from e
  return files


def _from_archive(archive: str, top: str, names: tuple[str, ...],
                  load) -> dict[str, tuple[str, Any]]:
  wanted = {f'{top}/{name}': name for name in names}
  files, label = {}, archive
  try:
    with tarfile.open(archive, 'r|gz') as tar:
      for member in tar:
        name = wanted.get(posixpath.normpath(member.name))
        if name is None or name in files:
          continue
        label = f'{member.name} in {archive}'
        if not member.isfile():
          raise DataError(f'{label} is not a regular file')
        files[name] = label, load(label, tar.extractfile(member))
        if len(files) == len(wanted):
          break
  except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
    raise DataError(f'{label} cannot be read as a .tar.gz ({report.error_line(e)})') from e
  missing = [member for member, name in wanted.items() if name not in files]
  if missing:
    raise DataError(f'{archive} lacks {", ".join(missing)}')
  return files
