"""A dataset prepared by `tfds build`, read through tfds.data_source (array_record; no TensorFlow).
tensorflow_datasets is imported only here, and only when no published archive is found."""
from __future__ import annotations

import os

import numpy as np

from mlres import report
from mlres.data.dataset import DataError


def read(name: str, where: str, looked: str, download: str) -> list[np.ndarray]:
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
