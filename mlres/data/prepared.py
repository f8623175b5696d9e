"""A dataset prepared by `tfds build`, read through tfds.data_source (array_record; no TensorFlow).
tensorflow_datasets is imported only here, and only where its folder for the dataset exists."""
from __future__ import annotations

import os

import numpy as np

from mlres import report
from mlres.data.dataset import DataError


def build_command(name: str, where: str) -> str:
  return f'`tfds build {name} --file_format=array_record --data_dir={where}`'


def read(name: str, where: str) -> tuple[list[np.ndarray] | None, str]:
  """The train and test arrays of a prepared tfds dataset in `where`, or None and why not, for the
  message that names every place looked in. tfds is not asked where its folder is missing: it
  would only warn of a file format."""
  prepared = os.path.join(where, name)
  if not os.path.isdir(prepared):
    return None, f'no tfds-prepared {prepared}'
  import tensorflow_datasets as tfds
  arrays = []
  for split in ('train', 'test'):
    try:
      source = tfds.data_source(name, split=split, data_dir=where, download=False)
    except Exception as e:  # tfds raises assorted types for a dataset that is not there
      return None, f'a tfds folder {prepared} that tfds cannot open ({report.error_line(e)})'
    try:
      # One by one: random access by index is all a data source promises (__getitems__ is not).
      items = [source[i] for i in range(len(source))]
    except Exception as e:
      raise DataError(f'dataset {name!r} ({split} split) in {where} cannot be read; its files may be '
                      f'damaged: prepare it again with {build_command(name, where)} '
                      f'({report.error_line(e)})') from e
    if not items:
      raise DataError(f'dataset {name!r} ({split} split) in {where} is empty')
    arrays += [np.stack([np.asarray(x['image'], np.uint8) for x in items]),
               np.asarray([x['label'] for x in items], np.int32)]
  return arrays, ''
