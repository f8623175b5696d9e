"""Loading (digits, synthetic, tfds through mock data) and the on-device augmentation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlres import config as config_lib
from mlres import data


def test_digits_are_the_real_data_with_a_fixed_split():
  ds = data.load(config_lib.default())
  assert ds.train_images.shape == (1438, 8, 8, 1) and ds.test_images.shape == (359, 8, 8, 1)
  assert ds.train_images.dtype == np.uint8 and ds.train_images.max() == 255
  assert set(np.unique(ds.train_labels)) == set(range(10))
  again = data.load(config_lib.default())
  np.testing.assert_array_equal(ds.test_labels, again.test_labels)
  other = config_lib.default()
  other.seed = 1  # the split is fixed: every seed of an experiment sees the same test set
  np.testing.assert_array_equal(data.load(other).test_labels, ds.test_labels)


def test_synthetic_is_seeded_and_shaped(tiny_config):
  a, b = data.load(tiny_config()), data.load(tiny_config())
  assert a.train_images.shape == (64, 8, 8, 3) and a.test_images.shape == (40, 8, 8, 3)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert a.num_classes == 4 and a.train_labels.max() < 4


@pytest.mark.parametrize('name, shape, classes', [('cifar10', (32, 32, 3), 10),
                                                  ('cifar100', (32, 32, 3), 100),
                                                  ('stl10', (96, 96, 3), 10)])
def test_tfds_datasets_through_data_source(name, shape, classes, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  config = config_lib.paper(name, 'res14')
  config.data_dir = str(tmp_path)
  (tmp_path / name).mkdir()  # tfds is asked only where its folder is; its mock reads nothing there
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load(config)
  assert ds.train_images.shape == (6, *shape) and ds.train_images.dtype == np.uint8
  assert ds.test_labels.dtype == np.int32 and ds.num_classes == classes


def test_a_missing_dataset_says_how_to_prepare_it(tmp_path):
  config = config_lib.paper('cifar10', 'res14')
  config.data_dir = str(tmp_path / 'nowhere')
  config.download = False
  with pytest.raises(data.DataError) as error:
    data.load(config)
  message = str(error.value)
  assert "'cifar10'" in message and str(tmp_path / 'nowhere') in message and 'tfds build cifar10' in message


def test_a_dataset_that_cannot_be_read_is_named_as_such(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')

  class Damaged:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      raise ValueError(f'record {i}: bad checksum')
  monkeypatch.setattr(tfds, 'data_source', lambda *args, **kwargs: Damaged())
  config = config_lib.paper('cifar10', 'res14')
  config.data_dir = str(tmp_path)
  (tmp_path / 'cifar10').mkdir()
  with pytest.raises(data.DataError, match=rf"dataset 'cifar10' \(train split\) in {tmp_path} cannot be "
                                           r"read; .*tfds build cifar10.*\(ValueError: record 0: bad checksum\)"):
    data.load(config)


def dataset(**changes):
  images = np.zeros((4, 8, 8, 3), np.uint8)
  fields = dict(name='toy', train_images=images, train_labels=np.zeros(4, np.int32), test_images=images,
                test_labels=np.zeros(4, np.int32), num_classes=3)
  return data.Dataset(**{**fields, **changes})


@pytest.mark.parametrize('changes, message', [
    (dict(train_labels=np.array([0, 1, 2, 3], np.int32)), 'outside 0..2'),
    (dict(test_images=np.zeros((4, 8, 8, 3), np.float32)), 'uint8'),
    (dict(test_images=np.zeros((4, 9, 9, 3), np.uint8)), r'\(9, 9, 3\)'),
    (dict(test_labels=np.zeros(3, np.int32)), '3 labels for 4 images'),
])
def test_bad_data_is_named(changes, message):
  with pytest.raises(data.DataError, match=message):
    data.check(dataset(**changes))


def test_the_training_moments_are_numpys_over_several_chunks():
  images = np.random.default_rng(0).integers(0, 256, (1100, 32, 32, 3)).astype(np.uint8)  # 1.1M pixels
  images[..., 2] //= 4  # channels that differ
  ds = dataset(train_images=images, train_labels=np.zeros(1100, np.int32))
  np.testing.assert_allclose(ds.mean, images.mean(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6)
  np.testing.assert_allclose(ds.std, images.std(axis=(0, 1, 2), dtype=np.float64), rtol=1e-6)


def test_augment_crops_and_flips_per_image():
  images = jnp.asarray(np.random.default_rng(0).integers(1, 255, (16, 8, 8, 3)), jnp.uint8)
  same = data.augment(jax.random.key(0), images, pad=0, flip=False)
  np.testing.assert_array_equal(same, images)
  flipped = data.augment(jax.random.key(0), images, pad=0, flip=True)
  mirrored = [bool(jnp.array_equal(f, im[:, ::-1])) for f, im in zip(flipped, images)]
  kept = [bool(jnp.array_equal(f, im)) for f, im in zip(flipped, images)]
  assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
  cropped = data.augment(jax.random.key(1), images, pad=2, flip=False)
  assert cropped.shape == images.shape and cropped.dtype == jnp.uint8
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = []
  for c, p in zip(np.asarray(cropped), padded):  # each crop is a window of its zero-padded image
    hits = [(i, j) for i in range(5) for j in range(5) if np.array_equal(p[i:i + 8, j:j + 8], c)]
    assert hits
    offsets.append(hits[0])
  assert len(set(offsets)) > 1


def test_standardize_uses_the_given_statistics():
  images = jnp.full((2, 4, 4, 3), 100, jnp.uint8)
  out = data.standardize(images, mean=[100, 50, 0], std=[1, 10, 50])
  np.testing.assert_allclose(out[0, 0, 0], [0, 5, 2])
  ds = data.load(config_lib.default())
  x = data.standardize(jnp.asarray(ds.train_images), ds.mean, ds.std)
  assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
