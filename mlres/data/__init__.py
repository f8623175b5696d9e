"""Datasets as host arrays (read once) and the augmentation that runs on the device in the step.

One file per way a dataset arrives: `embedded` (digits, synthetic: no download), `archives` (the
published CIFAR and STL-10 files), `prepared` (a `tfds build` folder), on top of `dataset` (the
type they all give) and `augment` (what the step does to a batch). `text` gives a language model's
byte corpora (the standard library's sources, or a user's text files) and their windows.
`download` fetches and verifies the published archives, also ahead of a run: `python -m mlres.data`.

Larger than memory: `tokens` (token files in nanoGPT's convention, memory-mapped and read by the
host a window at a time, mlres.input_pipeline; `python -m mlres.data tokens SOURCE --out=DIR` writes
them), `imagefolder` (ImageNet's folder layout, decoded by Pillow on the host's threads a batch at a
time) and `shards` (the host's order of an epoch and of a language model's windows, and each
process's rows of it).
"""
from __future__ import annotations

import os

import jax

from mlres.data import archives, download, embedded, imagefolder, prepared, shards, text, tokens
from mlres.data.augment import Augmentation, augment, standardize
from mlres.data import dataset as _dataset
from mlres.data.dataset import DataError, Dataset, check

PUBLISHED = {'cifar10': 10, 'cifar100': 100, 'stl10': 10}
# The digits split and the synthetic data do not depend on config.seed: like CIFAR's fixed split,
# every seed of an experiment trains and tests on the same images.
DATA_SEED = 0
TEXT = ('pystdlib', 'text', 'tokens')  # corpora for a language model: bytes, or token files
DATASETS = ('digits', 'synthetic', *PUBLISHED, *TEXT, 'imagefolder')
# Read from disk by the host a batch at a time (config.input='host'), never whole in memory.
STREAMED = ('tokens', 'imagefolder')

__all__ = ['Augmentation', 'DATASETS', 'DataError', 'Dataset', 'PUBLISHED', 'STREAMED', 'TEXT', 'augment',
           'check', 'describe', 'folders', 'load', 'own_folder', 'standardize']


def describe(fingerprint: dict) -> str:
  """A dataset's fingerprint (`Dataset.fingerprint`, `TextDataset.fingerprint`, an image folder's, or
a byte corpus's of token files) in a line."""
  if fingerprint['dataset'] == 'imagefolder':
    return imagefolder.describe(fingerprint)
  if fingerprint['dataset'] == 'tokens':
    return tokens.describe(fingerprint)
  return (text.describe if 'bytes' in fingerprint else _dataset.describe)(fingerprint)


def load(config) -> Dataset | text.TextDataset:
  """The dataset named by config.dataset: images checked for shape, dtype and labels, or bytes."""
  name = config.dataset
  if name == 'pystdlib':
    return text.pystdlib()
  if name == 'text':
    return text.text_folder(config.data_dir)
  if name == 'tokens':
    return tokens.dataset(config.data_dir)
  if name == 'imagefolder':
    if not config.data_dir:
      raise DataError("dataset='imagefolder' reads config.data_dir: set it to the folder that holds "
                      'train/<class>/<image> and val/<class>/<image>')
    return imagefolder.ImageFolder.open(config.data_dir)
  if name == 'digits':
    ds = embedded.digits(DATA_SEED)
  elif name == 'synthetic':
    ds = embedded.synthetic(config.synthetic, DATA_SEED)
  elif name in PUBLISHED:
    ds = _published(name, config)
  else:
    raise DataError(f'dataset={name!r} is unknown; choose one of {", ".join(DATASETS)}')
  check(ds)
  return ds


def own_folder() -> str:
  """mlres's own data folder, where a run without config.data_dir downloads: $MLRES_DATA_DIR, else
  ~/.cache/mlres/data."""
  return os.path.expanduser(os.environ.get('MLRES_DATA_DIR') or '~/.cache/mlres/data')


def folders(data_dir: str) -> list[str]:
  """The folders searched for a published dataset, in order; it is downloaded into the last.
  `data_dir` alone where set, else tfds's ($TFDS_DATA_DIR or ~/tensorflow_datasets) and mlres's own."""
  if data_dir:
    return [os.path.expanduser(data_dir)]
  tfds = os.path.expanduser(os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')
  return list(dict.fromkeys([tfds, own_folder()]))


def _published(name: str, config) -> Dataset:
  """CIFAR or STL-10: its extracted folder or archive in a folder searched, else a dataset that
  `tfds build` prepared in the first, else (config.download) its archive fetched into the last."""
  searched = folders(config.data_dir)
  for where in searched:
    download.recheck(name, where)
    arrays = archives.read(name, where)
    if arrays is not None:
      return Dataset(name, *arrays, PUBLISHED[name])
  arrays, not_prepared = prepared.read(name, searched[0])
  if arrays is None:
    if not config.download:
      raise DataError(_missing(name, searched, not_prepared))
    download.fetch(name, searched[-1], config.data_url, main=jax.process_index() == 0)
    arrays = archives.read(name, searched[-1])
  return Dataset(name, *arrays, PUBLISHED[name])


def _missing(name: str, searched: list[str], not_prepared: str) -> str:
  """Every place looked in, and both ways to fill one."""
  looked = [f'no folder {folder}, no archive {archive}'
            for folder, archive in (archives.places(name, where) for where in searched)]
  return (f'dataset {name!r} is not in {" or ".join(searched)}: {", ".join(looked)}, {not_prepared}; '
          f'download {archives.LAYOUTS[name].url} into {searched[-1]} (extracting it is optional), or '
          f'run `pip install tensorflow` then {prepared.build_command(name, searched[0])}; or set '
          'config.data_dir to the folder that holds it, or config.download=True to fetch it')
