"""GPT-4-i on the standard library's sources for twice the default's steps: below bzip2 and xz."""
from mlres.config import gpt


def get_config():
  return gpt('i', size='long')
