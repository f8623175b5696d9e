"""GPT-4 for the same epochs: the multi-level GPT's last-cycle baseline."""
from mlres.config import gpt


def get_config():
  return gpt('last')
