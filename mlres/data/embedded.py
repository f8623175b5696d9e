"""The datasets that need no download: scikit-learn's digits and seeded synthetic images."""
from __future__ import annotations

import numpy as np

from mlres.data.dataset import Dataset


def digits(seed: int, test_fraction: float = 0.2) -> Dataset:
  """scikit-learn's 1,797 real 8x8 handwritten digits (16 grey levels), a fixed seeded split."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(images))
  n_test = int(round(len(images) * test_fraction))
  test, train = order[:n_test], order[n_test:]
  return Dataset('digits', images[train], labels[train], images[test], labels[test], 10)


def synthetic(cfg, seed: int) -> Dataset:
  """Random images whose class shifts the mean colour: learnable, seeded, CIFAR-shaped by default."""
  rng = np.random.default_rng(seed)
  shape = (cfg.image_size, cfg.image_size, cfg.channels)

  def split(n):
    labels = rng.integers(0, cfg.num_classes, n).astype(np.int32)
    centres = np.linspace(40, 215, cfg.num_classes, dtype=np.float32)[labels]
    images = centres[:, None, None, None] + 40 * rng.standard_normal((n, *shape), np.float32)
    return np.clip(images, 0, 255).astype(np.uint8), labels
  return Dataset('synthetic', *split(cfg.num_train), *split(cfg.num_test), cfg.num_classes)
