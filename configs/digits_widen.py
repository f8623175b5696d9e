"""ResNet-50-i grown in width too: 2-2-2 blocks of widths 8-16-32 (half), then 4-4-4 and 8-8-8 of
16-32-64, each widening by clone (launch/seeds.py --experiment=widths compares it)."""
from mlres.config import default


def get_config():
  c = default()
  c.name = 'ResNet-50-iw'
  c.cycles.widths = ({'widths': (8, 16, 32)}, {}, {})
  return c
