"""Digits: the multi-level ViT (mlres.config.vit)."""
from mlres.config import vit


def get_config():
  return vit('digits', 'i')
