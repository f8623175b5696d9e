"""GPT-1 for the same epochs: the multi-level GPT's first-cycle baseline."""
from mlres.config import gpt


def get_config():
  return gpt('first')
