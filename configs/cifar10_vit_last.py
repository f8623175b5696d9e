"""CIFAR-10: its last-cycle baseline (mlres.config.vit)."""
from mlres.config import vit


def get_config():
  return vit('cifar10', 'last')
