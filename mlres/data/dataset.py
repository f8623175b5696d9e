"""The in-memory dataset that every source gives: uint8 NHWC images and int32 labels on the host,
checked once, with the training set's per-channel moments for the standardization and its
fingerprint."""
from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np


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
  def fingerprint(self) -> dict:
    """What identifies the data a run reads, JSON-ready, as checkpoints and summary.json record it:
    the name, the sizes and the SHA-256 of the arrays (train images and labels, then test), which any
    change of a file that the run reads changes, whichever way it arrived (archive, folder, tfds).
    About a second for CIFAR, once."""
    digest = hashlib.sha256()
    for array in (self.train_images, self.train_labels, self.test_images, self.test_labels):
      digest.update(np.ascontiguousarray(array).data)
    return dict(dataset=self.name, classes=self.num_classes, shape=list(self.train_images.shape[1:]),
                train=dict(images=len(self.train_labels)), test=dict(images=len(self.test_labels)),
                sha256=digest.hexdigest())

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


def describe(fingerprint: dict) -> str:
  """An image dataset's fingerprint in a line: which data, how big, which bytes."""
  h, w, c = fingerprint['shape']
  return (f'{fingerprint["dataset"]}: {fingerprint["train"]["images"]:,} train and '
          f'{fingerprint["test"]["images"]:,} test images of {h}x{w}x{c} in {fingerprint["classes"]} '
          f'classes, sha256 {fingerprint["sha256"][:12]}')


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
