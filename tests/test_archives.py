"""CIFAR-10, CIFAR-100 and STL-10 from their published files, written here in their published
formats (pickles as Python 2's cPickle writes them; STL planes column-major, labels from 1),
extracted or as the .tar.gz; these writers also make benchmarks/read_archives.py's files."""
import dataclasses
import os
import re
import shutil
import struct
import tarfile

import jax
import numpy as np
import pytest

from mlres import config as config_lib, data, tasks
from mlres.data import archives

FOLDERS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python', 'stl10': 'stl10_binary'}
SHAPES = {'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3), 'stl10': (96, 96, 3)}
CLASSES = {'cifar10': 10, 'cifar100': 100, 'stl10': 10}
ARCHIVES = {'cifar10': 'cifar-10-python.tar.gz', 'cifar100': 'cifar-100-python.tar.gz',
            'stl10': 'stl10_binary.tar.gz'}


def py2_pickle(obj) -> bytes:
  """`obj` (a dict of bytes keys, bytes, ints, lists, a 2-D uint8 array) as Python 2's cPickle
  wrote it at protocol 2: str as BINSTRING (read back as bytes), arrays through numpy.core."""
  def string(b):
    return b'U' + bytes([len(b)]) + b if len(b) < 256 else b'T' + struct.pack('<i', len(b)) + b

  def integer(n):
    return b'K' + bytes([n]) if 0 <= n < 256 else b'J' + struct.pack('<i', n)

  def save(x):
    if isinstance(x, bytes):
      return string(x)
    if isinstance(x, int):
      return integer(x)
    if isinstance(x, list):
      return b'](' + b''.join(map(save, x)) + b'e'
    if isinstance(x, dict):
      return b'}(' + b''.join(save(k) + save(v) for k, v in x.items()) + b'u'
    assert x.dtype == np.uint8 and x.ndim == 2
    dtype = (b'cnumpy\ndtype\n' + string(b'u1') + b'\x89\x88\x87R(' + integer(3) + string(b'|') +
             b'NNN' + integer(-1) + integer(-1) + integer(0) + b'tb')
    return (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n' + integer(0) + b'\x85' +
            string(b'b') + b'\x87R(' + integer(1) + integer(x.shape[0]) + integer(x.shape[1]) +
            b'\x86' + dtype + b'\x89' + string(x.tobytes()) + b'tb')
  return b'\x80\x02' + save(obj) + b'.'


def file_order(images, offset):
  """Images (N, H, W, C) as rows of bytes in which pixel (y, x, c) sits at offset(y, x, c)."""
  y, x, c = np.meshgrid(*map(np.arange, images.shape[1:]), indexing='ij')
  rows = np.zeros((len(images), images[0].size), np.uint8)
  rows[:, offset(y, x, c)] = images
  return rows


def cifar_rows(images):
  return file_order(images, lambda y, x, c: c * 1024 + y * 32 + x)  # planes, each row-major


def stl_rows(images):
  return file_order(images, lambda y, x, c: c * 9216 + x * 96 + y)  # planes, each column-major


def write(directory, name, train_split, test_split):
  """The extracted folder of dataset `name` holding these (HWC images, 0-based labels) splits."""
  folder = os.path.join(directory, FOLDERS[name])
  os.makedirs(folder)

  def put(file, content):
    with open(os.path.join(folder, file), 'wb') as f:
      f.write(content)

  def batch(images, labels, title):
    labels = [int(k) for k in labels]
    names = [b'image_%d.png' % i for i in range(len(images))]
    if name == 'cifar10':
      return {b'batch_label': title, b'labels': labels, b'data': cifar_rows(images), b'filenames': names}
    return {b'filenames': names, b'batch_label': title, b'fine_labels': labels,
            b'coarse_labels': [k // 5 for k in labels], b'data': cifar_rows(images)}

  (train_images, train_labels), (test_images, test_labels) = train_split, test_split
  if name == 'stl10':
    for split, images, labels in (('train', *train_split), ('test', *test_split)):
      put(f'{split}_X.bin', stl_rows(images).tobytes())
      put(f'{split}_y.bin', (np.asarray(labels) + 1).astype(np.uint8).tobytes())
  elif name == 'cifar10':
    for i, part in enumerate(np.array_split(np.arange(len(train_images)), 5)):
      put(f'data_batch_{i + 1}', py2_pickle(batch(train_images[part], train_labels[part],
                                                  b'training batch %d of 5' % (i + 1))))
    put('test_batch', py2_pickle(batch(test_images, test_labels, b'testing batch 1 of 1')))
  else:
    put('train', py2_pickle(batch(train_images, train_labels, b'training batch 1 of 1')))
    put('test', py2_pickle(batch(test_images, test_labels, b'testing batch 1 of 1')))


def pack(directory, name, leave_out=()):
  """The extracted folder as the published .tar.gz in its place, less the files `leave_out`."""
  folder = os.path.join(directory, FOLDERS[name])
  archive = os.path.join(directory, ARCHIVES[name])
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(folder, arcname=FOLDERS[name],
            filter=lambda member: None if os.path.basename(member.name) in leave_out else member)
  shutil.rmtree(folder)
  return archive


def splits(name, n_train=10, n_test=7, seed=0):
  """Random images and labels, different in every pixel position, so a transposition shows."""
  rng = np.random.default_rng(seed)
  make = lambda n: (rng.integers(0, 256, (n, *SHAPES[name]), dtype=np.uint8),
                    rng.integers(0, CLASSES[name], n).astype(np.int32))
  return make(n_train), make(n_test)


def load(name, directory):
  config = config_lib.paper(name, 'res14')
  config.data_dir = str(directory)
  config.download = False  # local files only: tests/test_download.py has the network's tests
  return data.load(config)


@pytest.mark.parametrize('packed', [False, True], ids=['folder', 'archive'])
@pytest.mark.parametrize('name', ['cifar10', 'cifar100', 'stl10'])
def test_published_files_are_read_pixel_by_pixel(name, packed, tmp_path):
  (train_images, train_labels), (test_images, test_labels) = splits(name)
  write(tmp_path, name, (train_images, train_labels), (test_images, test_labels))
  if packed:
    pack(tmp_path, name)
  ds = load(name, tmp_path)
  assert ds.name == name and ds.num_classes == CLASSES[name]
  for got, want in ((ds.train_images, train_images), (ds.train_labels, train_labels),
                    (ds.test_images, test_images), (ds.test_labels, test_labels)):
    assert got.dtype == want.dtype and got.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(got, want)


def test_the_byte_orders_are_the_published_ones(tmp_path):
  """One bright byte at a known offset of each format lands on the pixel its definition names."""
  cifar, stl = np.zeros((1, 3 * 32 * 32), np.uint8), np.zeros((1, 3 * 96 * 96), np.uint8)
  cifar[0, 1024 + 32 * 5 + 2] = 255   # green, row 5, column 2
  stl[0, 2 * 9216 + 96 * 5 + 2] = 255  # blue, column 5, row 2
  for name, rows in (('cifar100', cifar), ('stl10', stl)):
    folder = tmp_path / FOLDERS[name]
    folder.mkdir()
    if name == 'stl10':
      for split in ('train', 'test'):
        (folder / f'{split}_X.bin').write_bytes(rows.tobytes())
        (folder / f'{split}_y.bin').write_bytes(bytes([10]))
    else:
      for split in ('train', 'test'):
        (folder / split).write_bytes(py2_pickle({b'data': rows, b'fine_labels': [99]}))
  cifar_image, stl_image = load('cifar100', tmp_path).train_images[0], load('stl10', tmp_path).test_images[0]
  assert list(zip(*np.nonzero(cifar_image))) == [(5, 2, 1)]
  assert list(zip(*np.nonzero(stl_image))) == [(2, 5, 2)]
  assert load('stl10', tmp_path).test_labels.tolist() == [9]


@pytest.mark.parametrize('name', ['cifar10', 'cifar100', 'stl10'])
def test_an_archive_gives_the_dataset_that_tfds_gives(name, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  (tmp_path / name).mkdir()  # tfds is asked only where its folder is; its mock reads nothing there
  with tfds.testing.mock_data(num_examples=10):
    via_tfds = load(name, tmp_path)
  write(tmp_path, name, (via_tfds.train_images, via_tfds.train_labels),
        (via_tfds.test_images, via_tfds.test_labels))
  pack(tmp_path, name)
  via_archive = load(name, tmp_path)
  for field in dataclasses.fields(data.Dataset):
    a, b = getattr(via_tfds, field.name), getattr(via_archive, field.name)
    if isinstance(a, np.ndarray):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
    else:
      assert a == b
  np.testing.assert_array_equal(via_tfds.mean, via_archive.mean)
  np.testing.assert_array_equal(via_tfds.std, via_archive.std)
  first = tasks.epoch_batches(jax.random.key(0), 0, len(via_tfds.train_images), 2, 4, 2)[0]
  np.testing.assert_array_equal(via_tfds.train_images[first], via_archive.train_images[first])
  np.testing.assert_array_equal(via_tfds.train_labels[first], via_archive.train_labels[first])


@pytest.mark.parametrize('name', ['cifar10', 'cifar100', 'stl10'])
def test_nothing_found_names_every_place_and_both_ways(name, tmp_path):
  with pytest.raises(data.DataError) as error:
    load(name, tmp_path)
  message = str(error.value)
  assert '\n' not in message and f'dataset {name!r}' in message
  for place in (tmp_path / FOLDERS[name], tmp_path / ARCHIVES[name], tmp_path / name):
    assert str(place) in message
  assert f'/{ARCHIVES[name]} into {tmp_path}' in message
  assert f'`pip install tensorflow` then `tfds build {name} ' in message


def test_an_empty_data_dir_means_the_tfds_default(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))
  write(tmp_path, 'stl10', *splits('stl10', 3, 2))
  pack(tmp_path, 'stl10')
  assert load('stl10', '').train_images.shape == (3, 96, 96, 3)


def rewrite(path, change):
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(change(content))


def cut(path, keep=0.5):
  rewrite(path, lambda content: content[:int(len(content) * keep)])


def forbidden(marker):
  """A pickle that would run os.system when loaded: only numpy's array globals may load."""
  return b'cos\nsystem\n(U' + bytes([len(f'touch {marker}')]) + f'touch {marker}'.encode() + b'tR.'


DAMAGES = {  # name: (dataset, change the extracted folder, pack it?, the file named, what is said)
    'a cut pickle': ('cifar10', lambda f: cut(f / 'data_batch_3'), False, 'data_batch_3',
                     r'is not a readable CIFAR pickle \((EOFError|UnpicklingError)'),
    'a cut pickle in the archive': (
        'cifar100', lambda f: cut(f / 'test'), True,
        'cifar-100-python/test in {dir}/cifar-100-python.tar.gz', 'is not a readable CIFAR pickle'),
    'a foreign global': ('cifar10', lambda f: (f / 'test_batch').write_bytes(forbidden(f / 'ran')),
                         False, 'test_batch', r'refers to os\.system'),
    'a batch without its rows': (
        'cifar100', lambda f: (f / 'train').write_bytes(py2_pickle({b'fine_labels': []})), False,
        'train', "is not a CIFAR batch: it needs uint8 rows of 3072 pixels in b'data'"),
    'labels out of range': ('cifar100', lambda f: (f / 'test').write_bytes(py2_pickle(
        {b'data': np.zeros((2, 3072), np.uint8), b'fine_labels': [3, 100]})), True,
        'cifar-100-python/test in', r'has labels 3\.\.100, outside 0\.\.99'),
    'labels for other images': ('cifar10', lambda f: (f / 'test_batch').write_bytes(py2_pickle(
        {b'data': np.zeros((2, 3072), np.uint8), b'labels': [3]})), False, 'test_batch',
        r'has 1 labels \(int64\) for 2 images'),
    'a missing batch': ('cifar10', lambda f: os.remove(f / 'data_batch_5'), False, 'data_batch_5',
                        'is missing from the extracted folder .*, which is read before any archive'),
    'a member missing': ('cifar10', None, True, '{dir}/cifar-10-python.tar.gz',
                         'lacks cifar-10-batches-py/data_batch_4'),
    'a binary of the wrong size': ('stl10', lambda f: cut(f / 'train_X.bin', 0.99), False,
                                   'train_X.bin', 'not a whole number of 3x96x96 images'),
    'labels for other STL images': ('stl10', lambda f: cut(f / 'test_y.bin', 0.9), True,
                                    'stl10_binary/test_y.bin in', r'has 6 labels \(uint8\) for 7 images'),
    'labels from 0': ('stl10', lambda f: rewrite(f / 'train_y.bin', lambda b: bytes(len(b))), False,
                      'train_y.bin', r'has labels 0\.\.0, outside 1\.\.10'),
}


@pytest.mark.parametrize('damage', DAMAGES)
def test_a_damaged_file_is_named_in_one_line(damage, tmp_path):
  name, change, packed, file, said = DAMAGES[damage]
  write(tmp_path, name, *splits(name))
  folder = tmp_path / FOLDERS[name]
  if change:
    change(folder)
  if packed:
    pack(tmp_path, name, leave_out=() if change else ('data_batch_4',))
  with pytest.raises(data.DataError, match=said) as error:
    load(name, tmp_path)
  message = str(error.value)
  assert '\n' not in message and file.format(dir=tmp_path) in message
  assert not (folder / 'ran').exists()


def test_a_cut_or_foreign_archive_is_named(tmp_path):
  write(tmp_path, 'stl10', *splits('stl10', 3, 2))
  archive = pack(tmp_path, 'stl10')
  cut(archive, 0.6)
  with pytest.raises(data.DataError, match=rf'in {re.escape(archive)} cannot be read as a \.tar\.gz \('):
    load('stl10', tmp_path)
  rewrite(archive, lambda b: b'not gzip' + b)
  with pytest.raises(data.DataError, match=rf'^{re.escape(archive)} cannot be read as a \.tar\.gz \(Read'):
    load('stl10', tmp_path)


@pytest.mark.parametrize('packed', [False, True], ids=['folder', 'archive'])
def test_every_file_is_read_once(packed, tmp_path, monkeypatch):
  write(tmp_path, 'cifar10', *splits('cifar10'))
  if packed:
    pack(tmp_path, 'cifar10')
  opened = []

  def recording(original, file_of):
    def wrapper(*args, **kwargs):
      opened.append(os.path.basename(file_of(*args)))
      return original(*args, **kwargs)
    return wrapper
  monkeypatch.setattr(archives, 'open', recording(open, lambda path, mode: path), raising=False)
  monkeypatch.setattr(tarfile, 'open', recording(tarfile.open, lambda path, mode: path))
  monkeypatch.setattr(tarfile.TarFile, 'extractfile',
                      recording(tarfile.TarFile.extractfile, lambda tar, member: member.name))
  load('cifar10', tmp_path)
  files = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
  expected = ['cifar-10-python.tar.gz', *files] if packed else files
  assert opened == expected
