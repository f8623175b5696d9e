"""Fetches the published archives ahead of a run, for compute nodes without internet, and checks
what a data folder holds:

    python -m mlres.data fetch cifar10 cifar100 stl10 --data_dir=DIR [--data_url=URL]
    python -m mlres.data verify --data_dir=DIR [--mark]
    python -m mlres.data baselines pystdlib
    python -m mlres.data baselines text --data_dir=DIR
    python -m mlres.data tokens pystdlib|pysource --out=DIR
    python -m mlres.data tokens text --data_dir=PATH --out=DIR

For fetch and verify, --data_dir defaults to mlres's own folder ($MLRES_DATA_DIR, else
~/.cache/mlres/data), where a run without config.data_dir looks. `verify` only reads, unless --mark:
then an archive found whole gets the marker that spares a run its hashing, and one that is not loses
it (mlres.data.download).
`baselines` prints what a language model's validation bits per byte should beat on that corpus: gzip,
bzip2 and xz, and a unigram byte model, on the validation split a run evaluates (mlres.data.baselines).
`tokens` writes a byte corpus as token files (train.bin, val.bin, meta.json: mlres.data.tokens), a
file at a time, with its progress on stderr; `pysource` is every .py under this Python's sys.path.
"""
from __future__ import annotations

import argparse
import os
import sys

from mlres import data
from mlres.data import archives, baselines, download, tokens


class _Parser(argparse.ArgumentParser):
  """Errors in one line and status 2, as the other commands give them."""

  def error(self, message):
    self.exit(2, f'error: {message}; see `python -m mlres.data --help`\n')


def fetch(names: list[str], directory: str, base_url: str) -> None:
  """Each archive downloaded and verified, or verified where it is already there."""
  for name in names:
    layout = archives.LAYOUTS[name]
    download.recheck(name, directory)
    path = download.fetch(name, directory, base_url)
    if not download.marked(path, layout.md5):  # a copy made by hand: hashed once, marked if right
      found = download.verify(path, layout.md5)
      if found != layout.md5:
        raise data.DataError(f'{path} is not the published {layout.archive}: its MD5 is {found}, not '
                             f'{layout.md5}; remove it and fetch again')
    print(f'{name}: {path}, {layout.size:,} bytes, MD5 {layout.md5} as published', flush=True)


def verify(directory: str, mark: bool = False) -> bool:
  """Every archive in `directory` hashed, every extracted folder checked for its files, every
  partial download named; whether all that is there is whole and something is. Writes nothing unless
  `mark` (each archive then marked or unmarked by what its hash shows)."""
  whole, found = True, False
  for name, layout in archives.LAYOUTS.items():
    folder, archive = archives.places(name, directory)
    if os.path.isfile(archive):
      md5 = download.verify(archive, layout.md5) if mark else download.md5_of(archive)
      size = os.path.getsize(archive)
      if md5 == layout.md5:
        print(f'{name}: {archive}: {size:,} bytes, MD5 {md5} as published')
      else:
        print(f'{name}: {archive}: NOT the published archive: {size:,} bytes (published '
              f'{layout.size:,}), MD5 {md5} (published {layout.md5}); remove it and fetch it again')
      whole, found = whole and md5 == layout.md5, True
    if os.path.isdir(folder):
      missing = [f for f in layout.train + layout.test if not os.path.isfile(os.path.join(folder, f))]
      print(f'{name}: {folder}: extracted, ' +
            (f'lacks {", ".join(missing)}' if missing else 'holds every file a run reads'))
      whole, found = whole and not missing, True
    part = archive + '.part'
    if os.path.isfile(part):
      print(f'{name}: {part}: {os.path.getsize(part):,} of {layout.size:,} bytes, which the next fetch '
            'continues')
  if not found:
    print(f'no dataset in {directory}: fetch one with `python -m mlres.data fetch NAME '
          f'--data_dir={directory}`')
  return whole and found


def write_tokens(parser: _Parser, source: str, data_dir: str, out: str) -> int:
  if (source == 'text') != bool(data_dir):
    parser.error('`tokens text` needs --data_dir=DIR, a UTF-8 text file or a folder of them'
                 if source == 'text' else
                 f'--data_dir is for `tokens text`; {source} is read from this Python')
  try:
    meta = tokens.write_corpus(tokens.corpus(source, data_dir), out)
  except data.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  out = os.path.expanduser(out)
  print(data.text.describe(meta['fingerprint']), flush=True)
  for split, name in tokens.FILES.items():
    print(f'{os.path.join(out, name)}: {meta["tokens"][split]:,} {meta["dtype"]} tokens ({split})')
  print(f'{os.path.join(out, tokens.META)}: dtype {meta["dtype"]}, vocab_size {meta["vocab_size"]}',
        flush=True)
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog='python -m mlres.data', description='Fetch the published archives ahead of a '
                   'run, check what a data folder holds, print the baselines of a byte corpus\'s '
                   'validation split, or write a byte corpus as token files (docs/data.md).')
  commands = parser.add_subparsers(dest='command', required=True)
  fetching = commands.add_parser('fetch', help='download and verify archives')
  fetching.add_argument('datasets', nargs='+', choices=list(archives.LAYOUTS))
  fetching.add_argument('--data_url', default='', help="a mirror's base URL; '' for the published URLs")
  checking = commands.add_parser('verify', help='check the archives and folders in --data_dir')
  checking.add_argument('--mark', action='store_true', help='write (or remove) the marker beside each '
                        'archive by what its hash shows, so that runs do not hash it again')
  for command in (fetching, checking):
    command.add_argument('--data_dir', default='', help='default: $MLRES_DATA_DIR or ~/.cache/mlres/data')
  baseline = commands.add_parser('baselines', help="gzip, bzip2, xz and a unigram model on a byte corpus's "
                                 'validation split, in bits per byte')
  baseline.add_argument('dataset', choices=['pystdlib', 'text'])
  baseline.add_argument('--data_dir', default='', help='text: the UTF-8 file or folder of them, as '
                        'config.data_dir')
  writing = commands.add_parser('tokens', help='write a byte corpus as token files (train.bin, val.bin, '
                                'meta.json) in --out, a file at a time')
  writing.add_argument('source', choices=list(tokens.SOURCES), help="pystdlib: this Python's standard "
                       'library, as dataset pystdlib; text: --data_dir; pysource: every .py under sys.path')
  writing.add_argument('--out', required=True, help='the folder to write them in (made if missing)')
  writing.add_argument('--data_dir', default='', help='text: the UTF-8 file or folder of them')
  args = parser.parse_args(argv)
  if args.command == 'tokens':
    return write_tokens(parser, args.source, args.data_dir, args.out)
  if args.command == 'baselines':
    if (args.dataset == 'text') != bool(args.data_dir):
      parser.error('`baselines text` needs --data_dir=DIR, a UTF-8 text file or a folder of them'
                   if args.dataset == 'text'
                   else "--data_dir is for `baselines text`; pystdlib is this Python's standard library")
    try:
      ds = baselines.load(args.dataset, args.data_dir)
    except data.DataError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print('\n'.join(baselines.lines(ds, baselines.measure(ds))), flush=True)
    return 0
  if args.command == 'fetch' and args.data_url and not args.data_url.startswith(('http://', 'https://')):
    parser.error(f'--data_url={args.data_url}: a base URL that starts with http:// or https://')
  directory = os.path.expanduser(args.data_dir) if args.data_dir else data.own_folder()
  try:
    if args.command == 'fetch':
      fetch(args.datasets, directory, args.data_url)
      return 0
    return 0 if verify(directory, args.mark) else 1
  except data.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
