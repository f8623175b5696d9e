"""Digits baseline: the first-cycle model (2-2-2) for the whole run, LR restarted at the same epochs."""
from mlres.config import default


def get_config():
  c = default()
  c.name = 'ResNet-14'
  c.cycles.stage_sizes = ((2, 2, 2),) * 3
  return c
