"""GPT-12-i (3, 6, then 12 blocks of width 384, context 256) on the standard library: for a GPU."""
from mlres.config import gpt


def get_config():
  return gpt('i', size='gpu')
