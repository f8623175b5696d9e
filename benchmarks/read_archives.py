"""Times reading CIFAR-10, CIFAR-100 and STL-10 from their published files, extracted and as the
.tar.gz, at their real sizes: random pixels and labels written in the exact formats by the
writers of tests/test_archives.py, in a temporary folder (just written, so in the page cache).

    python benchmarks/read_archives.py [--repeats=3]

Prints one line per dataset and form: images, bytes on disk, the fastest of the repeats of
`mlres.data.load` (reading, the layout to NHWC, the checks), and the peak memory of a load as a
multiple of the arrays it returns (2x: the file's bytes and one copy).
"""
import argparse
import os
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]
import test_archives  # noqa: E402  (the tests' writers of the published formats)

SIZES = {'cifar10': (50_000, 10_000), 'cifar100': (50_000, 10_000), 'stl10': (5_000, 8_000)}


def disk_bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(folder, f))
             for folder, _, files in os.walk(directory) for f in files)


def timed(name: str, directory: str, repeats: int) -> tuple[float, float]:
  """The fastest load of `repeats`, and the peak of memory allocated during one more (traced,
  so not timed) over the bytes of the images and labels it returns."""
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    test_archives.load(name, directory)
    best = min(best, time.perf_counter() - start)
  tracemalloc.start()
  ds = test_archives.load(name, directory)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert len(ds.train_images) + len(ds.test_images) == sum(SIZES[name])
  returned = sum(a.nbytes for a in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels))
  return best, peak / returned


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  for name, (n_train, n_test) in SIZES.items():
    with tempfile.TemporaryDirectory() as directory:
      test_archives.write(directory, name, *test_archives.splits(name, n_train, n_test))
      for form in ('folder', 'tar.gz'):
        if form == 'tar.gz':
          test_archives.pack(directory, name)
        seconds, peak = timed(name, directory, args.repeats)
        print(f'{name:8s} {form:6s} {n_train + n_test:6,d} images  {disk_bytes(directory) / 1e6:5.1f} MB'
              f'  {seconds:5.2f} s  peak memory {peak:.2f}x the arrays returned', flush=True)


if __name__ == '__main__':
  main()
