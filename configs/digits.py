"""The embedded default: a multi-level ResNet on scikit-learn's 8x8 digits (no download)."""
from mlres.config import default


def get_config():
  return default()
