"""Times mlres.data.download on a file the size of cifar-10-python.tar.gz, served from this machine:
random bytes in a temporary folder, served on 127.0.0.1 by the tests' HTTP server (with Range),
optionally throttled to a stated rate, fetched and verified as a run fetches an archive.

    python benchmarks/download.py [--size_mb=170] [--rate_mb=20]

Prints the downloader's own lines (its progress: a bar on a terminal, a line every 5% elsewhere),
then the time from the request to the verified archive and the rate. --rate_mb=0: unthrottled.
"""
import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]
from mlres.data import archives, download  # noqa: E402
from test_download import Server  # noqa: E402  (the tests' server: 127.0.0.1, Range, a rate)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size_mb', type=float, default=170.0)
  parser.add_argument('--rate_mb', type=float, default=0.0, help='MB/s; 0: as fast as it goes')
  args = parser.parse_args()
  for variable in ('http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
    os.environ.pop(variable, None)
  with tempfile.TemporaryDirectory() as folder:
    layout = archives.LAYOUTS['cifar10']
    served = os.path.join(folder, 'served')
    os.makedirs(served)
    content = np.random.default_rng(0).integers(0, 256, int(args.size_mb * 1e6), np.uint8).tobytes()
    with open(os.path.join(served, layout.archive), 'wb') as f:
      f.write(content)
    archives.LAYOUTS['cifar10'] = dataclasses.replace(
        layout, md5=hashlib.md5(content).hexdigest(), size=len(content))
    del content
    server = Server(served, rate=args.rate_mb * 1e6 or None, lifetime_s=3600)
    try:
      start = time.perf_counter()
      path = download.fetch('cifar10', os.path.join(folder, 'data'), server.url)
      seconds = time.perf_counter() - start
    finally:
      server.close()
    size = os.path.getsize(path)
    throttle = f'served at most {args.rate_mb:g} MB/s' if args.rate_mb else 'served unthrottled'
    print(f'{size / 1e6:.1f} MB ({throttle}) downloaded and verified in {seconds:.2f} s: '
          f'{size / 1e6 / seconds:.1f} MB/s; {len(server.log)} request(s)')


if __name__ == '__main__':
  main()
