"""Digits baseline: the last-cycle model (8-8-8) for the whole run, LR restarted at the same epochs."""
from mlres.config import default


def get_config():
  c = default()
  c.name = 'ResNet-50'
  c.cycles.stage_sizes = ((8, 8, 8),) * 3
  return c
