"""Datasets as host arrays (read once) and the augmentation that runs on the device in the step.

One file per way a dataset arrives: `embedded` (digits, synthetic: no download), `archives` (the
published CIFAR and STL-10 files), `prepared` (a `tfds build` folder), on top of `dataset` (the
type they all give) and `augment` (what the step does to a batch).
"""
from __future__ import annotations

import os

from mlres.data import archives, embedded, prepared
from mlres.data.augment import Augmentation, augment, standardize
from mlres.data.dataset import DataError, Dataset, check

PUBLISHED = {'cifar10': 10, 'cifar100': 100, 'stl10': 10}
# The digits split and the synthetic data do not depend on config.seed: like CIFAR's fixed split,
# every seed of an experiment trains and tests on the same images.
DATA_SEED = 0
DATASETS = ('digits', 'synthetic', *PUBLISHED)

__all__ = ['Augmentation', 'DATASETS', 'DataError', 'Dataset', 'PUBLISHED', 'augment', 'check', 'load',
           'standardize']


def load(config) -> Dataset:
  """The dataset named by config.dataset, checked for shape, dtype and labels."""
  name = config.dataset
  if name == 'digits':
    ds = embedded.digits(DATA_SEED)
  elif name == 'synthetic':
    ds = embedded.synthetic(config.synthetic, DATA_SEED)
  elif name in PUBLISHED:
    ds = _published(name, config.data_dir)
  else:
    raise DataError(f'dataset={name!r} is unknown; choose one of {", ".join(DATASETS)}')
  check(ds)
  return ds


def _published(name: str, data_dir: str) -> Dataset:
  """CIFAR or STL-10 from `data_dir` (TFDS_DATA_DIR or ~/tensorflow_datasets when empty): its
  extracted folder, else its archive, else a prepared tfds dataset."""
  where = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')
  arrays = archives.read(name, where)
  if arrays is None:
    folder, archive = archives.places(name, where)
    arrays = prepared.read(name, where, f'no folder {folder}, no archive {archive}',
                           f'download {archives.LAYOUTS[name].url} into {where} (extracting it is optional)')
  return Dataset(name, *arrays, PUBLISHED[name])
