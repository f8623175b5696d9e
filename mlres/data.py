"""Datasets as host arrays (read once), and the augmentation that runs on the device in the step.

Images stay uint8 NHWC until the jitted step: four times less memory on the device, and the
standardization by the training set's per-channel mean and std is a fused multiply-add there.
CIFAR-10, CIFAR-100 and STL-10 come from their published files (mlres.archives) or else from a
prepared tfds dataset; tensorflow_datasets is imported lazily, so digits and synthetic data and
the published files never need it.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from mlres import report

TFDS_DATASETS = {'cifar10': 10, 'cifar100': 100, 'stl10': 10}
# The digits split and the synthetic data do not depend on config.seed: like CIFAR's fixed split,
# every seed of an experiment trains and tests on the same images.
DATA_SEED = 0
DATASETS = ('digits', 'synthetic', *TFDS_DATASETS)


class DataError(RuntimeError):
  """A dataset that is missing or not what the configuration says."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train_images: np.ndarray  # uint8, (N, H, W, C)
  train_labels: np.ndarray  # int32, (N,)
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int

  @property
  def mean(self) -> np.ndarray:
    return self._moments[0]

  @property
  def std(self) -> np.ndarray:
    return self._moments[1]

  @functools.cached_property
  def _moments(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training pixels from exact integer sums, a chunk at a time:
    numpy's float64 std would hold a float64 copy of them all (1.2 GB for CIFAR)."""
    pixels = self.train_images.reshape(-1, self.train_images.shape[-1])
    total = np.zeros((2, pixels.shape[-1]), np.int64)
    for start in range(0, len(pixels), 1 << 20):
      part = pixels[start:start + (1 << 20)].astype(np.int64)
      total += part.sum(0), (part * part).sum(0)
    mean = total[0] / len(pixels)
    std = np.sqrt(np.maximum(total[1] / len(pixels) - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def load(config) -> Dataset:
  """The dataset named by config.dataset, checked for shape, dtype and labels."""
  name = config.dataset
  if name == 'digits':
    ds = _digits(DATA_SEED)
  elif name == 'synthetic':
    ds = _synthetic(config.synthetic, DATA_SEED)
  elif name in TFDS_DATASETS:
    ds = _published(name, config.data_dir)
  else:
    raise DataError(f'dataset={name!r} is unknown; choose one of {", ".join(DATASETS)}')
  check(ds)
  return ds


def check(ds: Dataset) -> None:
  for split in ('train', 'test'):
    images, labels = getattr(ds, f'{split}_images'), getattr(ds, f'{split}_labels')
    if images.dtype != np.uint8 or images.ndim != 4:
      raise DataError(f'{ds.name} {split} images must be uint8 of shape (N, H, W, C); '
                      f'got {images.dtype} {images.shape}')
    if images.shape[1:] != ds.train_images.shape[1:]:
      raise DataError(f'{ds.name} {split} images have shape {images.shape[1:]}, '
                      f'the train images {ds.train_images.shape[1:]}')
    if labels.shape != images.shape[:1]:
      raise DataError(f'{ds.name} {split}: {len(labels)} labels for {len(images)} images')
    if len(labels) and (labels.min() < 0 or labels.max() >= ds.num_classes):
      raise DataError(f'{ds.name} {split} labels span {labels.min()}..{labels.max()}, '
                      f'outside 0..{ds.num_classes - 1}')


def _digits(seed: int, test_fraction: float = 0.2) -> Dataset:
  """scikit-learn's 1,797 real 8x8 handwritten digits (16 grey levels), a fixed seeded split."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(images))
  n_test = int(round(len(images) * test_fraction))
  test, train = order[:n_test], order[n_test:]
  return Dataset('digits', images[train], labels[train], images[test], labels[test], 10)


def _synthetic(cfg, seed: int) -> Dataset:
  """Random images whose class shifts the mean colour: learnable, seeded, CIFAR-shaped by default."""
  rng = np.random.default_rng(seed)
  shape = (cfg.image_size, cfg.image_size, cfg.channels)

  def split(n):
    labels = rng.integers(0, cfg.num_classes, n).astype(np.int32)
    centres = np.linspace(40, 215, cfg.num_classes, dtype=np.float32)[labels]
    images = centres[:, None, None, None] + 40 * rng.standard_normal((n, *shape), np.float32)
    return np.clip(images, 0, 255).astype(np.uint8), labels
  return Dataset('synthetic', *split(cfg.num_train), *split(cfg.num_test), cfg.num_classes)


def _published(name: str, data_dir: str) -> Dataset:
  """CIFAR or STL-10 from `data_dir` (TFDS_DATA_DIR or ~/tensorflow_datasets when empty): its
  extracted folder, else its archive, else a prepared tfds dataset."""
  from mlres import archives  # imported here: it imports DataError from this module
  where = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')
  arrays = archives.read(name, where)
  if arrays is None:
    folder, archive = archives.places(name, where)
    arrays = _tfds(name, where, f'no folder {folder}, no archive {archive}',
                   f'download {archives.LAYOUTS[name].url} into {where} (extracting it is optional)')
  return Dataset(name, *arrays, TFDS_DATASETS[name])


def _tfds(name: str, where: str, looked: str, download: str) -> list[np.ndarray]:
  """Reads a prepared tfds dataset through tfds.data_source (array_record; no TensorFlow). Not
  there, it names every place looked in and both ways to fill one; tfds's reason only where its
  folder exists, since for one that does not it blames a file format."""
  import tensorflow_datasets as tfds
  build = f'`tfds build {name} --file_format=array_record --data_dir={where}`'
  prepared = os.path.join(where, name)
  arrays = []
  for split in ('train', 'test'):
    try:
      source = tfds.data_source(name, split=split, data_dir=where, download=False)
    except Exception as e:  # tfds raises assorted types for a dataset that is not there
      tfds_part = (f'a tfds folder {prepared} that tfds cannot open ({report.error_line(e)})'
                   if os.path.exists(prepared) else f'no tfds-prepared {prepared}')
      raise DataError(f'dataset {name!r} is not in {where}: {looked}, {tfds_part}; {download}, or '
                      f'run `pip install tensorflow` then {build}; or set config.data_dir to the '
                      'folder that holds it') from e
    try:
      # One by one: random access by index is all a data source promises (__getitems__ is not).
      items = [source[i] for i in range(len(source))]
    except Exception as e:
      raise DataError(f'dataset {name!r} ({split} split) in {where} cannot be read; its files may be '
                      f'damaged: prepare it again with {build} ({report.error_line(e)})') from e
    if not items:
      raise DataError(f'dataset {name!r} ({split} split) in {where} is empty')
    arrays += [np.stack([np.asarray(x['image'], np.uint8) for x in items]),
               np.asarray([x['label'] for x in items], np.int32)]
  return arrays


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """What the step does to a batch of uint8 images: random crop and flip, then standardization by
  the training set's per-channel mean and std."""
  pad: int
  flip: bool
  mean: np.ndarray
  std: np.ndarray

  def train(self, rng, images, dtype):
    return self.test(augment(rng, images, self.pad, self.flip), dtype)

  def test(self, images, dtype):
    return standardize(images, self.mean, self.std, dtype)


def augment(rng: jax.Array, images: jax.Array, pad: int, flip: bool) -> jax.Array:
  """Zero-pad by `pad`, crop back at a random offset, flip left-right at random; per image."""
  n, height, width, _ = images.shape
  crop_key, flip_key = jax.random.split(rng)
  if pad:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (height, width, im.shape[-1]))
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    mirror = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    images = jnp.where(mirror, images[:, :, ::-1], images)
  return images


def standardize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
  """uint8 pixels to (x - mean) / std per channel, in `dtype`."""
  scale = 1.0 / jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) * scale).astype(dtype)
