"""CIFAR-100: its first-cycle baseline (mlres.config.vit)."""
from mlres.config import vit


def get_config():
  return vit('cifar100', 'first')
