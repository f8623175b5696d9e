"""GPT-4-i grown in width too: 1 block of width 64, 2 heads, MLP 256 (half), then 2 and 4 blocks of
the config's 128, 4 heads, MLP 512, the heads cloned with their dimension (32) kept (launch/seeds.py
--experiment=widths compares it)."""
from mlres.config import gpt


def get_config():
  c = gpt('i')
  c.name = 'GPT-4-iw'
  c.cycles.widths = ({'width': 64, 'num_heads': 2, 'mlp_dim': 256}, {}, {})
  return c
