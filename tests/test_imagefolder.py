"""Image folders (mlres.data.imagefolder) on a Pillow-generated 4-class folder of 8x8 JPEGs: the
listing, the crops and flips, serial and threaded decoding alike, a corrupt JPEG and every bad folder
in one line; and each process's shard of an epoch and the position a run resumes from
(mlres.data.shards)."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from mlres import data
from mlres.data import imagefolder, shards
from mlres.data.dataset import DataError

CLASSES = ('ant', 'bee', 'cat', 'dog')  # made in another order: the labels are the sorted names
TRAIN, VAL = 3, 2


def image(seed: int, size: int = 8) -> Image.Image:
  """A gradient with a seeded tint: its crops and flips differ from each other."""
  y, x = np.mgrid[:size, :size]
  tint = np.random.default_rng(seed).integers(0, 128, 3)
  pixels = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), np.full_like(x, 128)], -1) // 2 + tint
  return Image.fromarray(pixels.astype(np.uint8))


def make_folder(root, classes=('dog', 'bee', 'cat', 'ant'), suffix='.JPEG') -> str:
  for split, count in (('train', TRAIN), ('val', VAL)):
    for c in classes:
      os.makedirs(root / split / c)
      for i in range(count):
        image(hash((split, c, i)) % 1000).save(root / split / c / f'{c}_{i}{suffix}', 'JPEG')
  (root / 'train' / classes[-1] / '.DS_Store').write_bytes(b'\0')  # hidden, and not an image: not read
  (root / 'train' / classes[-1] / 'notes.txt').write_text('not an image')
  (root / 'train' / 'README').write_text('a file beside the class folders')
  return str(root)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return imagefolder.ImageFolder.open(make_folder(tmp_path_factory.mktemp('images')))


def test_the_classes_are_train_s_sorted_folders_and_the_labels_follow(folder):
  assert folder.classes == CLASSES and folder.num_classes == 4
  assert len(folder.train) == 4 * TRAIN and len(folder.validation) == 4 * VAL
  assert folder.train.labels.dtype == np.int32
  assert folder.train.labels.tolist() == [c for c in range(4) for _ in range(TRAIN)]
  for split, name in (('train', 'train'), ('validation', 'val')):
    s = getattr(folder, split)
    assert [os.path.relpath(p, folder.root) for p in s.paths[:2]] == [f'{name}/ant/ant_0.JPEG',
                                                                       f'{name}/ant/ant_1.JPEG']
    assert all(CLASSES[label] in path for path, label in zip(s.paths, s.labels))
  fp = folder.fingerprint
  assert fp == imagefolder.ImageFolder.open(folder.root).fingerprint and json.loads(json.dumps(fp)) == fp
  assert (fp['classes'], fp['train']['images'], fp['validation']['images']) == (4, 12, 8)
  assert data.describe(fp) == ('imagefolder: 12 train and 8 validation images in 4 classes, listing sha256 '
                               f'{fp["sha256"][:12]}')
  assert folder.describe() == f'{data.describe(fp)} in {folder.root}'


def test_a_training_batch_is_uint8_and_a_function_of_seed_epoch_and_index(folder):
  indices = [5, 0, 11, 3]
  images, labels = folder.batch('train', indices, 6, train=True, seed=1, epoch=2)
  assert images.shape == (4, 6, 6, 3) and images.dtype == np.uint8
  assert labels.tolist() == folder.train.labels[indices].tolist()
  with imagefolder.pool(2) as workers:
    threaded, _ = folder.batch('train', indices, 6, train=True, seed=1, epoch=2, pool=workers)
  assert np.array_equal(threaded, images)
  # An image's crop does not depend on the batch it is in; it changes with the epoch and the seed.
  assert np.array_equal(folder.batch('train', [11], 6, train=True, seed=1, epoch=2)[0][0], images[2])
  others = [folder.batch('train', indices, 6, train=True, seed=s, epoch=e)[0] for s, e in ((1, 3), (2, 2))]
  assert all(not np.array_equal(other, images) for other in others)


def test_evaluation_is_the_centre_crop(folder):
  evaluated, labels = folder.batch('validation', range(8), 4, train=False)
  assert evaluated.shape == (8, 4, 4, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  assert np.array_equal(folder.batch('validation', range(8), 4, train=False, seed=9, epoch=9)[0], evaluated)
  assert imagefolder.centre_box(10, 20) == (0.625, 5.625, 9.375, 14.375)
  with Image.open(folder.validation.paths[3]) as im:
    expected = np.asarray(im.convert('RGB').resize((4, 4), Image.Resampling.BILINEAR,
                                                   box=(0.5, 0.5, 7.5, 7.5)))
  assert np.array_equal(evaluated[3], expected)


def test_the_random_crop_is_inception_s_and_the_flip_mirrors(folder):
  rng = np.random.default_rng(0)
  for width, height in ((8, 8), (500, 375), (40, 300)):
    for _ in range(200):
      left, top, right, bottom = imagefolder.crop_box(width, height, rng.random(4 * imagefolder.ATTEMPTS))
      assert 0 <= left < right <= width and 0 <= top < bottom <= height
      if (width, height) == (500, 375):  # large enough for the rounding not to matter
        assert 0.075 <= (right - left) * (bottom - top) / (width * height) <= 1
        assert 3 / 4 - 0.01 <= (right - left) / (bottom - top) <= 4 / 3 + 0.01
  # No try fits an image 100 times wider than high: its centre crop of ratio 4/3.
  assert imagefolder.crop_box(1000, 10, np.full(4 * imagefolder.ATTEMPTS, 0.99)) == (493, 0, 506, 10)
  # The whole image (area 1, ratio 1), then with a flip or without.
  whole = np.tile([0.9999999, 0.5, 0.0, 0.0], imagefolder.ATTEMPTS)
  plain, flipped = (imagefolder.decode(folder.train.paths[0], 8, np.append(whole, u)) for u in (0.9, 0.1))
  assert np.array_equal(flipped, plain[:, ::-1]) and not np.array_equal(flipped, plain)
  draws = [shards.uniforms(shards.key(0, shards.AUGMENT, 0, i), 4 * imagefolder.ATTEMPTS + 1)[-1]
           for i in range(100)]
  assert 30 < sum(u < 0.5 for u in draws) < 70  # each image flipped with probability 1/2


@pytest.mark.parametrize('damage', [b'not a jpeg at all', 'cut'])
def test_a_corrupt_jpeg_is_one_line_naming_it(tmp_path, damage):
  root = make_folder(tmp_path)
  bad = os.path.join(root, 'train', 'bee', 'bee_1.JPEG')
  with open(bad, 'rb') as f:
    whole = f.read()
  with open(bad, 'wb') as f:
    f.write(whole[:len(whole) // 2] if damage == 'cut' else damage)
  folder = imagefolder.ImageFolder.open(root)  # the listing decodes nothing
  index = folder.train.paths.index(bad)
  folder.batch('train', [0, 1, 2], 8, train=True)  # batches without it read
  with imagefolder.pool(2) as workers:
    for pool in (None, workers):
      with pytest.raises(DataError) as error:
        folder.batch('train', [0, index, 7], 8, train=True, pool=pool)
      assert str(error.value).startswith(f'{bad} is not a readable image (') and '\n' not in str(error.value)


def bad_folder(root, case: str) -> tuple[str, str]:
  """A folder with one flaw, and the path its error names."""
  make_folder(root, classes=('ant', 'bee'))
  if case == 'no folder':
    return str(root / 'nowhere'), str(root / 'nowhere')
  if case == 'no val':
    shutil.rmtree(root / 'val')
    return str(root), str(root / 'val')
  if case == 'no class folder':
    shutil.rmtree(root / 'train')
    os.makedirs(root / 'train')
    (root / 'train' / 'image.JPEG').write_bytes(b'x')  # not in a class folder
    return str(root), str(root / 'train')
  if case == 'empty class':
    os.makedirs(root / 'train' / 'cow')
    (root / 'train' / 'cow' / '.hidden').write_bytes(b'x')
    return str(root), str(root / 'train' / 'cow')
  if case == 'class without images':
    os.makedirs(root / 'val' / 'bee' / 'sub')
    for name in os.listdir(root / 'val' / 'bee'):
      if name != 'sub':
        os.rename(root / 'val' / 'bee' / name, root / 'val' / 'bee' / 'sub' / name)
    (root / 'val' / 'bee' / 'labels.csv').write_text('a,b\n')
    return str(root), str(root / 'val' / 'bee')
  if case == 'val class not in train':
    os.makedirs(root / 'val' / 'cow')
    image(0).save(root / 'val' / 'cow' / 'x.jpg')
    return str(root), str(root / 'val' / 'cow')
  raise ValueError(case)


@pytest.mark.parametrize('case, match', [
    ('no folder', 'imagefolder: no folder {path}'),
    ('no val', '{path} is missing: an image folder holds train/<class>/<image> and val/<class>/<image>'),
    ('no class folder', '{path} holds no class folder, so no image'),
    ('empty class', '{path} is an empty class folder'),
    ('class without images', '{path} holds no image: none of its 2 entries is a file ending in .jpeg'),
    ('val class not in train', "{path}: class 'cow' has no folder in"),
])
def test_bad_folders_are_one_line_naming_the_folder_and_write_nothing(tmp_path, case, match):
  root, path = bad_folder(tmp_path, case)
  before = sorted(os.walk(tmp_path))
  with pytest.raises(DataError) as error:
    imagefolder.ImageFolder.open(root)
  assert str(error.value).startswith(match.format(path=path)) and '\n' not in str(error.value)
  assert sorted(os.walk(tmp_path)) == before


# ---------------------------------------------------------------------------------------------------
# Shards of an epoch and the position (mlres.data.shards)


def test_the_streams_are_splitmix64_and_fixed():
  """Pinned: a checkpointed run's order must not change with numpy or with this code."""
  assert shards.key(0) == 0xE220A8397B1DCDAF  # SplitMix64's first output from state 0, as published
  assert shards.permutation(10, 0, 0).tolist() == [8, 5, 6, 3, 4, 7, 9, 0, 1, 2]
  assert shards.permutation(10, 1, 0).tolist() == [6, 0, 8, 2, 1, 9, 5, 7, 3, 4]
  assert shards.token_offsets(0, 0, 1000, 10, 4).tolist() == [449, 47, 259, 719]
  assert np.array_equal(shards.stream(123, 5, start=3), shards.stream(123, 8)[3:])
  u = shards.uniforms(7, 10_000)
  assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_an_epoch_is_a_permutation_of_the_seed_and_epoch():
  order = shards.permutation(1000, 3, 7)
  assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(1000))
  assert np.array_equal(order, shards.permutation(1000, 3, 7))
  assert not np.array_equal(order, shards.permutation(1000, 4, 7))
  assert not np.array_equal(order, shards.permutation(1000, 3, 8))


@pytest.mark.parametrize('n, batch_size, count', [(103, 10, 2), (64, 16, 4), (12, 12, 3), (7, 2, 1)])
def test_processes_get_disjoint_shards_that_together_are_the_epoch(n, batch_size, count):
  steps = n // batch_size
  parts = [shards.shard(n, batch_size, 5, 11, p, count) for p in range(count)]
  assert all(part.shape == (steps, batch_size // count) for part in parts)
  flat = np.concatenate([part.ravel() for part in parts])
  assert len(set(flat.tolist())) == len(flat) == steps * batch_size  # disjoint
  order = shards.permutation(n, 5, 11)
  assert set(flat.tolist()) == set(order[:steps * batch_size].tolist())  # together the epoch's batches
  assert n - len(flat) == n % batch_size  # the rest left out, as the device-resident path does
  # Side by side they are one process's global batches: the order does not depend on the count.
  assert np.array_equal(np.concatenate(parts, axis=1), shards.shard(n, batch_size, 5, 11))


def test_a_batch_that_does_not_divide_among_the_processes_is_refused():
  with pytest.raises(ValueError, match='a global batch of 10 does not divide among 3 processes'):
    shards.shard(100, 10, 0, 0, 1, 3)
  with pytest.raises(ValueError, match='process index 2 is not one of 0 .. 1'):
    shards.shard(100, 10, 0, 0, 2, 2)


@pytest.mark.parametrize('count', [1, 2])
def test_the_position_round_trips_and_a_resumed_run_reads_the_same_batches(count):
  n, batch_size, seed, steps = 50, 8, 3, 6
  for p in range(count):
    run = shards.batches(n, batch_size, seed, p, count)
    uninterrupted = [next(run) for _ in range(20)]  # 3 epochs and 2 batches
    assert [pos for pos, _ in uninterrupted[5:8]] == [shards.Position(0, 5), shards.Position(1, 0),
                                                      shards.Position(1, 1)]
    for stop in (0, 5, 6, 13):  # killed after `stop` batches: its checkpoint holds the next position
      at = uninterrupted[stop - 1][0].after(steps) if stop else shards.Position()
      assert at == shards.position(stop, steps)
      saved = json.loads(json.dumps(at.state(n, batch_size, seed)))
      restored = shards.Position.restore(saved, n, batch_size, seed)
      assert restored == at
      resumed = shards.batches(n, batch_size, seed, p, count, restored)
      for expected_position, expected in uninterrupted[stop:]:
        position, indices = next(resumed)
        assert position == expected_position and np.array_equal(indices, expected)


def test_a_position_from_another_order_is_refused():
  state = shards.Position(2, 3).state(50, 8, 3)
  for n, batch_size, seed in ((51, 8, 3), (50, 10, 3), (50, 8, 4)):
    with pytest.raises(DataError, match='cannot resume to the batch'):
      shards.Position.restore(state, n, batch_size, seed)
  with pytest.raises(DataError, match='outside epochs of 6 batches'):
    shards.Position.restore({**state, 'batch': 6}, 50, 8, 3)
