"""GPT-8-i on the standard library's sources (2, 4, then 8 blocks): no download, minutes on a CPU."""
from mlres.config import gpt


def get_config():
  return gpt('i')
