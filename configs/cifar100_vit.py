"""CIFAR-100: the multi-level ViT (mlres.config.vit)."""
from mlres.config import vit


def get_config():
  return vit('cifar100', 'i')
