"""What the trainer learns. A task brings what differs between image classification and next-byte
language modelling: its arrays on the device, how a step draws its batch and prepares its inputs,
how the summed losses and correct predictions become metrics, and the summary's extra fields.
The loop, checkpoints, resume, signals, seeds, devices and growth (mlres.train) are shared.

A task's device-side methods (`epoch_batches`, `batch`, `train_inputs`, `test_inputs`) are traced
into the compiled programs; the task itself is closed over, never an argument of them.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlres import config as config_lib, gpt, report
from mlres.data import Augmentation, Dataset, baselines, describe, imagefolder, shards, text, tokens


class Task:
  """The shared part: metrics from the sums. `units` predictions per example (1 per image, one per
  byte of a window) and `loss_scale` (1 for nats, 1/ln 2 for bits) are the subclass's, and so is
  `steps_field`, the config field that sets the steps per epoch."""
  name: str
  units = 1
  loss_scale = 1.0
  num_classes: int
  steps: int  # per epoch
  steps_field: str
  num_test: int  # examples in the held-out set
  config: Any
  ds: Any
  batch_size: int

  @property
  def input(self) -> tuple[tuple[int, ...], Any]:
    """One example's shape and dtype for this run's network, for its initialization: what `example`
    gives for the checkpoint metadata this run would write."""
    return self.example(self.ds, {**self.network(), 'config': self.config})

  def metrics(self, sums, test) -> dict[str, Any]:
    """Per-seed metrics of an epoch from its sums and the held-out set's (loss, correct) sums; the
    grown network's before its first step where the epoch starts a grown cycle."""
    test_loss, test_accuracy = self.held_out(*test)
    out = {'train_loss': sums.loss / sums.steps * self.loss_scale,
           'train_accuracy': sums.correct / (sums.steps * self.batch_size * self.units),
           'test_loss': test_loss, 'test_accuracy': test_accuracy}
    if sums.growth:
      loss, accuracy = self.held_out(*sums.growth)
      out |= {'test_loss_at_growth': loss, 'test_accuracy_at_growth': accuracy}
    return out

  def held_out(self, loss, correct):
    """The held-out set's mean loss (in the task's unit) and accuracy from its (loss, correct) sums,
    as the trainer's evaluation returns them (mlres.analyze computes its metrics by this too)."""
    n = self.num_test * self.units
    return loss / n * self.loss_scale, correct / n

  def summary(self, final) -> dict[str, Any]:
    """What summary.json adds to the test error for this task."""
    return {}

  def cost(self, stage_sizes, widths, steps: int) -> dict[str, int]:
    """What `steps` train steps of the network of `stage_sizes` and `widths` (its width fields) cost,
    per seed, in the units its users count: nothing for an image classifier; a language model's tokens
    and model FLOPs."""
    return {}

  def description(self) -> str:
    """The dataset as the run's first line names it."""
    return self.ds.name


def _padded(arrays: tuple[np.ndarray, ...], batch: int) -> tuple[np.ndarray, ...]:
  """`arrays` (one leading axis) padded with zeros to whole batches, and their 0/1 mask."""
  n = len(arrays[0])
  pad = -n % batch
  grown = tuple(np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays)
  return (*grown, np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]))


class ImageClassification(Task):
  """The paper's task: classes of uint8 images, an epoch one pass over a fixed permutation of the
  training set, augmented on the device; the held-out split is the test set."""
  name = 'image_classification'
  steps_field = 'batch_size'  # an epoch is one pass over the training images

  def __init__(self, config, ds: Dataset):
    self.config, self.ds, self.batch_size = config, ds, config.batch_size
    self.steps = len(ds.train_labels) // config.batch_size
    if self.steps < 1:
      raise config_lib.ConfigError(
          f'config.batch_size={config.batch_size}: larger than the {len(ds.train_images)} '
          f'training images of {ds.name}')
    self.aug = Augmentation(config.augment.pad, config.augment.flip, ds.mean, ds.std)
    self.num_classes, self.num_test = ds.num_classes, len(ds.test_labels)

  def network(self) -> dict[str, Any]:
    return {'num_classes': self.num_classes, 'channels': int(self.ds.train_images.shape[-1])}

  @staticmethod
  def example(ds: Dataset, meta) -> tuple[tuple[int, ...], Any]:
    """The shape and dtype of one input of the network that checkpoint metadata `meta` names."""
    return (*ds.train_images.shape[1:3], meta['channels']), jnp.float32

  def train_arrays(self) -> tuple:
    return self.ds.train_images, self.ds.train_labels

  def arrays(self, eval_batch: int):
    """(the training arrays, the held-out arrays padded to whole batches with their mask)."""
    ds = self.ds
    return self.train_arrays(), _padded((ds.test_images, ds.test_labels), eval_batch)

  def epoch_batches(self, key, epoch: int, rows: int):
    """The epoch's shuffled index matrix, (rows, batch); a pure function of the seed and epoch.
    Rows past `steps` repeat the first ones: batches of steps that are computed and discarded."""
    return epoch_batches(key, epoch, len(self.ds.train_labels), self.steps, self.batch_size, rows)

  def batch(self, train, idx):
    images, labels = train
    return images[idx], labels[idx]

  def host_batch(self, train, seed: int, epoch: int, step: int, rows: slice):
    """Rows `rows` of global batch `step` of `epoch` for `seed`, read on the host (the host path's
    order: mlres.data.shards)."""
    images, labels = train
    idx = self._indices(len(labels), seed, epoch, step, rows)
    return np.asarray(images[idx]), np.asarray(labels[idx])

  def _indices(self, n: int, seed: int, epoch: int, step: int, rows: slice) -> np.ndarray:
    """Rows `rows` of global batch `step` of the host's order of `epoch` over n examples."""
    batch = self.batch_size
    return _permutation(n, epoch, seed)[step * batch:(step + 1) * batch][rows]

  def train_inputs(self, rng, x, dtype):
    return self.aug.train(rng, x, dtype)

  def test_inputs(self, x, dtype):
    return self.aug.test(x, dtype)


class FolderClassification(ImageClassification):
  """Classes of an image folder in ImageNet's layout (mlres.data.imagefolder), decoded on the host at
  config.image_size by a pool of threads: every batch read by the host (config.input='host'), its
  random-resized crop and flip made there, and the device standardizing by ImageNet's channel
  statistics. The held-out split is decoded once, centre-cropped, and kept on the devices like any
  image classifier's test set: for a validation split that fits them (ImageNet's 50,000 at 224 are
  7.5 GB as uint8); evaluation read by the host is not built yet."""
  streamed = True

  def __init__(self, config, folder):
    self.config, self.ds, self.batch_size = config, folder, config.batch_size
    self.size = config.image_size
    self.steps = len(folder.train) // config.batch_size
    if self.steps < 1:
      raise config_lib.ConfigError(f'config.batch_size={config.batch_size}: larger than the '
                                   f'{len(folder.train)} training images of {folder.root}')
    self.aug = Augmentation(0, False, IMAGENET_MEAN, IMAGENET_STD)
    self.num_classes, self.num_test = folder.num_classes, len(folder.validation)
    self.pool = imagefolder.pool()

  def network(self) -> dict[str, Any]:
    return {'num_classes': self.num_classes, 'channels': 3}

  @staticmethod
  def example(ds, meta) -> tuple[tuple[int, ...], Any]:
    size = meta['config']['image_size']
    return (size, size, meta['channels']), jnp.float32

  def train_arrays(self) -> tuple:
    return ()  # nothing in memory: the host decodes each batch

  def arrays(self, eval_batch: int):
    folder = self.ds
    images, labels = folder.batch('validation', range(len(folder.validation)), self.size, False,
                                  pool=self.pool)
    return (), _padded((images, labels), eval_batch)

  def host_batch(self, train, seed: int, epoch: int, step: int, rows: slice):
    """Rows `rows` of global batch `step` of `epoch` for `seed`: those images decoded, cropped and
    flipped as (seed, epoch, each image's index) say."""
    del train
    idx = self._indices(len(self.ds.train), seed, epoch, step, rows)
    return self.ds.batch('train', idx, self.size, True, seed, epoch, self.pool)

  def description(self) -> str:
    return self.ds.describe()


# ImageNet's per-channel mean and std of its training pixels (0-255), by which an image folder's
# batches are standardized: its own would take a pass over every image.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


@functools.lru_cache(maxsize=4)
def _permutation(n: int, epoch: int, seed: int) -> np.ndarray:
  """An epoch's order of n examples on the host, computed once for its steps."""
  return shards.permutation(n, epoch, seed)


def epoch_batches(key, epoch: int, n: int, steps: int, batch: int, rows: int):
  """A permutation of `n` examples as `steps` rows of `batch`, padded to `rows` with its first rows."""
  order = jax.random.permutation(jax.random.fold_in(key, epoch), n)[:steps * batch].reshape(steps, batch)
  return jnp.concatenate([order, order[:rows - steps]])


class LanguageModel(Task):
  """Next-byte prediction on a byte corpus (mlres.data.text). An epoch is a fixed number of steps,
  each of `batch` windows of context + 1 bytes at offsets drawn on the device from the epoch's key;
  the held-out split is read as fixed, non-overlapping windows. Losses are in bits per byte."""
  name = 'language_model'
  loss_scale = 1 / math.log(2)
  steps_field = 'text.steps_per_epoch'

  def __init__(self, config, ds: text.TextDataset):
    self.config, self.ds, self.batch_size = config, ds, config.batch_size
    self.num_classes = ds.vocab_size  # a byte's 256, or a tokenizer's
    self.context = config.model.context
    text.check_context(ds, self.context)
    self.units, self.steps = self.context, config.text.steps_per_epoch
    self.test_offsets = text.eval_offsets(len(ds.validation), self.context, config.text.eval_windows)
    self.num_test = len(self.test_offsets)

  def network(self) -> dict[str, Any]:
    return {'num_classes': self.num_classes}

  @staticmethod
  def example(ds, meta) -> tuple[tuple[int, ...], Any]:
    return (meta['config']['model']['context'],), jnp.int32

  def train_arrays(self) -> tuple:
    return (self.ds.train,)

  def arrays(self, eval_batch: int):
    # On the host: of a memory-mapped split, only the windows' bytes are read.
    windows = np.asarray(self.ds.validation[self.test_offsets[:, None] + np.arange(self.context + 1)])
    return self.train_arrays(), _padded((windows[:, :-1], windows[:, 1:]), eval_batch)

  def epoch_batches(self, key, epoch: int, rows: int):
    """The epoch's window offsets, (rows, batch); rows past `steps` repeat the first ones."""
    offsets = text.draw_offsets(jax.random.fold_in(key, epoch), len(self.ds.train), self.context,
                                (self.steps, self.batch_size))
    return jnp.concatenate([offsets, offsets[:rows - self.steps]])

  def batch(self, train, offsets):
    window = text.windows(train[0], offsets, self.context)
    return window[:, :-1], window[:, 1:]

  def host_batch(self, train, seed: int, epoch: int, step: int, rows: slice):
    """Rows `rows` of the windows of step `step` of `epoch` for `seed`, read on the host from the
    split (memory-mapped or not) at offsets drawn for the run's global step (mlres.data.shards):
    only those bytes are read."""
    data = train[0]
    offsets = shards.token_offsets(seed, epoch * self.steps + step, len(data), self.context,
                                   self.batch_size)[rows]
    window = tokens.read(data, offsets, self.context + 1)
    return window[:, :-1], window[:, 1:]

  def train_inputs(self, rng, x, dtype):
    del rng, dtype  # tokens: no augmentation, and the embedding sets the compute dtype
    return x.astype(jnp.int32)

  def test_inputs(self, x, dtype):
    return self.train_inputs(None, x, dtype)

  def description(self) -> str:
    return describe(self.ds.fingerprint)

  def cost(self, stage_sizes, widths, steps: int) -> dict[str, int]:
    """The bytes predicted in `steps` steps (steps x global batch x context, per seed), the model FLOPs
    per byte of the GPT of `stage_sizes` and `widths` (mlres.gpt.flops_per_token) and their product."""
    tokens = steps * self.batch_size * self.context
    per_token = gpt.flops_per_token(stage_sizes[0], widths['width'], widths['mlp_dim'], self.context,
                                    self.num_classes)
    return {'tokens': tokens, 'flops_per_token': per_token, 'flops': tokens * per_token}

  def summary(self, final) -> dict[str, Any]:
    """The held-out split is the corpus's validation split: its loss in bits per byte, the bytes of
    the split it predicted, and what the compressors and a unigram model get on the whole split
    (mlres.data.baselines), the references a language model is read against."""
    out = {'validation_bits_per_byte': final['test_loss'],
           'validation_bytes': [len(self.test_offsets) * self.context, len(self.ds.validation)]}
    if self.num_classes == text.VOCAB_SIZE:  # bytes: the compressors read the same ones
      out['baselines'] = {b.name: b.bits_per_byte for b in baselines.measure(self.ds)}
    if 'seeds' in final:
      bits = final['seeds']['test_loss']
      out |= {'validation_bits_per_byte_seeds': bits, 'validation_bits_per_byte_ci95': report.ci95(bits)}
    return out


def of(ds) -> type[Task]:
  """The task a dataset is for."""
  if isinstance(ds, imagefolder.ImageFolder):
    return FolderClassification
  return LanguageModel if isinstance(ds, text.TextDataset) else ImageClassification


def create(config, ds) -> Task:
  return of(ds)(config, ds)
