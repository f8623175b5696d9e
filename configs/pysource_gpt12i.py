"""GPT-12-i of pystdlib_gpt12i.py (3, 6, then 12 blocks of width 384, context 256; for a GPU) on the
token files of `pysource`: every .py file under this Python's sys.path, its site-packages included
(284 MB on this project's machine). The chain's 524M predicted bytes are about two passes over that
train split, where the standard library's 9.6 MB would be 54: growth measured, not memorization.
Write the files first (once, a few minutes):

  python -m mlres.data tokens pysource --out=~/.cache/mlres/data/pysource
"""
import os

from mlres.config import gpt
from mlres.data import own_folder


def get_config():
  c = gpt('i', size='gpu')
  c.name = 'GPT-12-i pysource'
  c.dataset = 'tokens'
  c.data_dir = os.path.join(own_folder(), 'pysource')
  return c
