"""Image folders in ImageNet's layout, decoded on the host a batch at a time:

  ROOT/train/<class>/<image>   the training images, a folder per class
  ROOT/val/<class>/<image>     the held-out images, in folders of the same names

The classes are train's folder names, sorted (label i is the i-th); val may lack some of them, but
not hold others. An image is a file directly in a class folder whose name ends in one of SUFFIXES
(any case); hidden names and subfolders are not read. The listing is made once, at `open`, with
each file's size (`fingerprint`); no image is decoded before it is asked for.

Decoding is Pillow's, to RGB uint8 (size, size, 3): for training the random-resized crop of the
Inception networks (torchvision's RandomResizedCrop: an area of SCALE of the image's, an aspect
ratio in RATIO log-uniformly, ATTEMPTS tries, else the centre crop of the nearest ratio) and a flip
with probability 1/2; for evaluation the centre crop of CENTRE of the shorter side (ImageNet's 224 of
256). Both resize bilinearly, antialiased, straight from the crop box (`Image.resize(box=)`). An
image's crop and flip are a function of (seed, epoch, its index in the split) alone: not of the
batch it is in, of the process that reads it, or of which worker decodes it.

Workers are threads (`pool`): Pillow releases the GIL while it decodes and resizes, which is nearly
all of an image's time, so threads decode in parallel without pickling images between processes,
starting processes, or memory maps shared across a fork; processes (grain's mp_prefetch) would
win only if the Python around each image dominated. Nothing is measured yet (issue 34, point 6):
that measurement decides.

An unreadable image (cut, corrupt, not an image) stops the read with a DataError that names the
file, rather than being skipped and counted: a skipped row would change the batch's shape (a
recompile, and on several hosts one process out of step with the others: a hang) or, replaced by
another image, silently change what the run reads and what a resumed run would read. A broken file
in a dataset is fixed once (replace it, keeping the listing, and the run resumes to the batch).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import math
import os
from typing import Sequence

import numpy as np
from PIL import Image

from mlres import report
from mlres.data import shards
from mlres.data.dataset import DataError

SPLITS = {'train': 'train', 'validation': 'val'}
SUFFIXES = ('.jpeg', '.jpg', '.png', '.bmp', '.gif', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10
CENTRE = 0.875
WORKERS = min(8, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  paths: tuple[str, ...]
  labels: np.ndarray  # int32, (len(paths),)
  sizes: tuple[int, ...]  # bytes of each file, for the fingerprint

  def __len__(self) -> int:
    return len(self.paths)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolder:
  root: str
  classes: tuple[str, ...]
  train: Split
  validation: Split

  @classmethod
  def open(cls, root: str) -> ImageFolder:
    """The listing of both splits, checked: a missing split folder, a split without class folders,
    an empty class folder, one without images and a val class that train lacks are each a one-line
    DataError naming the folder."""
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise DataError(f'imagefolder: no folder {root}; it must hold train/<class>/<image> and '
                      'val/<class>/<image>')
    folders = {split: os.path.join(root, name) for split, name in SPLITS.items()}
    classes = _class_names(folders['train'])
    val_classes = _class_names(folders['validation'])
    stray = sorted(set(val_classes) - set(classes))
    if stray:
      raise DataError(f'{os.path.join(folders["validation"], stray[0])}: class {stray[0]!r} has no '
                      f'folder in {folders["train"]}, whose folders are the classes')
    label = {name: i for i, name in enumerate(classes)}
    splits = {split: _listing(folders[split], names, label)
              for split, names in (('train', classes), ('validation', val_classes))}
    return cls(root, tuple(classes), **splits)

  name = 'imagefolder'

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @functools.cached_property
  def fingerprint(self) -> dict:
    """JSON-ready: the classes and counts, and the SHA-256 of the listing (each file's split, path
    relative to the root, and size; the pixels are not hashed: 140 GB for ImageNet)."""
    digest = hashlib.sha256()
    for split in SPLITS:
      s = getattr(self, split)
      for path, size in zip(s.paths, s.sizes):
        digest.update(f'{os.path.relpath(path, self.root)}\t{size}\n'.encode())
    return dict(dataset='imagefolder', classes=self.num_classes, train=dict(images=len(self.train)),
                validation=dict(images=len(self.validation)), sha256=digest.hexdigest())

  def describe(self) -> str:
    return f'{describe(self.fingerprint)} in {self.root}'

  def image(self, split: str, index: int, size: int, train: bool, seed: int = 0,
            epoch: int = 0) -> np.ndarray:
    """Image `index` of `split` decoded: uint8 (size, size, 3), randomly cropped and flipped where
    `train` (from seed, epoch and index), else centre-cropped."""
    path = getattr(self, split).paths[index]
    rng = shards.uniforms(shards.key(seed, shards.AUGMENT, epoch, index), 4 * ATTEMPTS + 1) if train else None
    return decode(path, size, rng)

  def batch(self, split: str, indices: Sequence[int], size: int, train: bool, seed: int = 0,
            epoch: int = 0, pool: concurrent.futures.Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (len(indices), size, size, 3), labels int32) of those images of `split`,
    decoded by `pool`'s workers where given, else in this thread; the same arrays either way."""
    indices = np.asarray(indices, np.int64)
    images = np.empty((len(indices), size, size, 3), np.uint8)
    one = functools.partial(self.image, split, size=size, train=train, seed=seed, epoch=epoch)
    decoded = pool.map(one, indices.tolist()) if pool is not None else map(one, indices.tolist())
    for row, image in enumerate(decoded):
      images[row] = image
    return images, getattr(self, split).labels[indices]


def describe(fingerprint: dict) -> str:
  """An image folder's fingerprint in a line."""
  f = fingerprint
  return (f'imagefolder: {f["train"]["images"]:,} train and {f["validation"]["images"]:,} validation '
          f'images in {f["classes"]} classes, listing sha256 {f["sha256"][:12]}')


def pool(workers: int = WORKERS) -> concurrent.futures.ThreadPoolExecutor:
  """The decoding workers: threads (module docstring)."""
  return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='mlres-decode')


def decode(path: str, size: int, rng: np.ndarray | None = None) -> np.ndarray:
  """The image at `path` as RGB uint8 (size, size, 3): the random-resized crop and flip that the
  4 * ATTEMPTS + 1 uniforms `rng` give, or the centre crop where `rng` is None. A file that Pillow
  cannot read is a one-line DataError naming it."""
  try:
    with Image.open(path) as im:
      im = im.convert('RGB')  # decodes; palettes, greyscale and CMYK (a few in ImageNet) to RGB
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f'{path} is not a readable image ({report.error_line(e)}); replace or remove '
                    'it') from None
  width, height = im.size
  if rng is None:
    box, flip = centre_box(width, height), False
  else:
    box, flip = crop_box(width, height, rng[:-1]), rng[-1] < 0.5
  im = im.resize((size, size), Image.Resampling.BILINEAR, box=box)
  if flip:
    im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(im, np.uint8)


def crop_box(width: int, height: int, u: np.ndarray) -> tuple[int, int, int, int]:
  """The random-resized crop (left, top, right, bottom) of a width x height image from 4 * ATTEMPTS
  uniforms in [0, 1): torchvision's RandomResizedCrop rule, its draws made from `u`."""
  area = width * height
  low, high = math.log(RATIO[0]), math.log(RATIO[1])
  for attempt in range(ATTEMPTS):
    a, r, x, y = u[4 * attempt:4 * attempt + 4]
    target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * a)
    ratio = math.exp(low + (high - low) * r)
    w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
    if 0 < w <= width and 0 < h <= height:
      left, top = int(x * (width - w + 1)), int(y * (height - h + 1))
      return left, top, left + w, top + h
  ratio = width / height  # the fallback: the centre crop of the nearest allowed ratio
  if ratio < RATIO[0]:
    w, h = width, round(width / RATIO[0])
  elif ratio > RATIO[1]:
    w, h = round(height * RATIO[1]), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def centre_box(width: int, height: int) -> tuple[float, float, float, float]:
  """The centred square of CENTRE times the shorter side."""
  side = CENTRE * min(width, height)
  left, top = (width - side) / 2, (height - side) / 2
  return left, top, left + side, top + side


def _class_names(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise DataError(f'{folder} is missing: an image folder holds train/<class>/<image> and '
                    'val/<class>/<image>')
  names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith('.'))
  if not names:
    raise DataError(f'{folder} holds no class folder, so no image: it must hold <class>/<image>')
  return names


def _listing(folder: str, classes: list[str], label: dict[str, int]) -> Split:
  paths, labels, sizes = [], [], []
  for name in classes:
    where = os.path.join(folder, name)
    entries = [e for e in os.scandir(where) if not e.name.startswith('.')]
    images = sorted((e for e in entries if e.is_file() and e.name.lower().endswith(SUFFIXES)),
                    key=lambda e: e.name)
    if not images:
      raise DataError(f'{where} is an empty class folder' if not entries else
                      f'{where} holds no image: none of its {len(entries)} entries is a file ending in '
                      f'{", ".join(SUFFIXES)}')
    paths += [e.path for e in images]
    sizes += [e.stat().st_size for e in images]
    labels += [label[name]] * len(images)
  return Split(tuple(paths), np.asarray(labels, np.int32), tuple(sizes))
