"""Shared fixtures: a tiny config and JAX's persistent compilation cache for quick re-runs."""
import os
import tempfile

import jax
import pytest

from mlres import config as config_lib

jax.config.update('jax_compilation_cache_dir', os.path.join(tempfile.gettempdir(), 'mlres-tests-jax-cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def tiny(**overrides):
  """Two stages of width 4 and 8 on 8x8 synthetic images: compiles in seconds on a CPU."""
  c = config_lib.default()
  c.name = 'tiny'
  c.dataset = 'synthetic'
  c.synthetic.update(dict(num_train=64, num_test=40, image_size=8, channels=3, num_classes=4))
  c.model.widths = (4, 8)
  c.cycles.stage_sizes, c.cycles.epochs = ((2, 2), (4, 4)), (2, 1)
  c.num_epochs = 3
  c.batch_size = 16
  c.eval_batch_size = 32
  c.augment.update(dict(pad=2, flip=True))
  c.checkpoint_every_epochs = 1
  c.compilation_cache = ''
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture
def tiny_config():
  return tiny
