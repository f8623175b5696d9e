"""CIFAR-10: its first-cycle baseline (mlres.config.vit)."""
from mlres.config import vit


def get_config():
  return vit('cifar10', 'first')
