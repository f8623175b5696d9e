"""Every ```python block of README.md and docs/*.md runs as it stands, so none falls out of date: a
page's blocks in order, in one namespace, as a reader pastes them into one session. A block that is
only a fragment, never meant to run alone, has FRAGMENT on the line before its fence and is skipped;
there should be few."""
import glob
import os
import re

import pytest

from conftest import ROOT

# Each page's examples train small models end to end, as a reader runs them: a slow test.
pytestmark = pytest.mark.slow
FRAGMENT = '<!-- fragment -->'
BLOCK = re.compile(r'^```python\n(.*?)^```$', re.M | re.S)


def python_blocks(page: str) -> list[tuple[int, str, bool]]:
  """(the line its code starts on, its code, whether it is marked a fragment) of each block."""
  text = open(os.path.join(ROOT, page)).read()
  blocks = []
  for m in BLOCK.finditer(text):
    before = text[:m.start()].rstrip('\n').rpartition('\n')[2]
    blocks.append((text.count('\n', 0, m.start(1)), m.group(1), before.strip() == FRAGMENT))
  return blocks


PAGES = [page for page in ['README.md', *sorted(os.path.relpath(p, ROOT) for p in
                                                 glob.glob(os.path.join(ROOT, 'docs', '*.md')))]
         if python_blocks(page)]


@pytest.mark.parametrize('page', PAGES)
def test_the_python_blocks_of_a_page_run(page):
  namespace = {'__name__': f'docs:{page}'}
  for line, code, fragment in python_blocks(page):
    if not fragment:  # the blank lines before it: a traceback names the page's own line numbers
      exec(compile('\n' * line + code, os.path.join(ROOT, page), 'exec'), namespace)
