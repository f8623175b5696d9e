"""Fetches a published archive once, resumably, and never leaves one in place that does not match
its published size and MD5.

The bytes stream into `<archive>.part`. An attempt after an interruption (Ctrl-C, a dropped
connection, a killed process) continues that file with an HTTP Range request; a server that
ignores Range (200, not 206) sends it again from zero. Only a file of the published size and MD5 is
renamed to the archive, atomically, with a marker beside it (`<archive>.verified`: size, time,
MD5) so that later runs trust it without hashing it again. A lock file beside the archive makes the
processes of one machine, of a multi-host run, or of hosts that share the folder download it once:
the others wait, then read it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request

from mlres import report
from mlres.data import archives
from mlres.data.dataset import DataError

CHUNK = 1 << 20      # bytes read and written at a time: an archive never sits in memory
TIMEOUT_S = 30.0     # a connection that sends nothing for this long is dropped, then resumed
RETRIES = 4          # transient failures in a row, nothing received in between, before giving up
BACKOFF_S = 1.0      # the wait after the first of them, doubled after each: 15 s in all at most
PROGRESS_PERCENT = 5  # between two progress lines where stderr is not a terminal
# Answers that a later request may not get: a timeout, too many requests, a server's own failure.
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
MARKER = '.verified'


def url_of(name: str, base_url: str = '') -> str:
  """Where dataset `name`'s archive comes from: its published URL, or a mirror's `base_url` with the
  archive's file name appended."""
  layout = archives.LAYOUTS[name]
  return f'{base_url.rstrip("/")}/{layout.archive}' if base_url else layout.url


def fetch(name: str, directory: str, base_url: str = '', main: bool = True) -> str:
  """The path of dataset `name`'s archive in `directory`: the one there, or one downloaded and
  verified under the lock (progress shown where `main`). Whatever stops it is one DataError line."""
  archive = os.path.join(directory, archives.LAYOUTS[name].archive)
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise DataError(f'cannot make the data folder {directory} ({report.error_line(e)}); set '
                    'config.data_dir to a folder this process can write') from e
  say = _say if main else (lambda message: None)
  with _locked(archive + '.lock', say):
    if not os.path.isfile(archive):  # else another process fetched it while this one waited
      _Download(name, url_of(name, base_url), archive, main).run()
  return archive


def recheck(name: str, directory: str) -> None:
  """Before an archive that this module fetched is read: hashed again only if it changed since (its
  size or time differ from its marker's), and removed if it no longer matches. An archive without a
  marker, a user's own copy, is read as it is."""
  layout = archives.LAYOUTS[name]
  archive = os.path.join(directory, layout.archive)
  if not os.path.isfile(archive) or not os.path.isfile(archive + MARKER) or marked(archive, layout.md5):
    return
  found = verify(archive, layout.md5)
  if found != layout.md5:
    os.remove(archive)
    raise DataError(f'{archive} changed since it was downloaded and verified: its MD5 is {found}, not '
                    f'the published {layout.md5} of {layout.url}; it was removed, and the next run '
                    'downloads it again')


def marked(archive: str, md5: str) -> bool:
  """Whether `archive` is as it was when verified to have the MD5 `md5`: its marker's size and time."""
  try:
    with open(archive + MARKER) as f:
      mark = json.load(f)
    stat = os.stat(archive)
  except (OSError, ValueError):
    return False
  return mark == dict(md5=md5, size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def md5_of(archive: str) -> str:
  """The MD5 of `archive`, hashed now; nothing is written."""
  with open(archive, 'rb') as f:
    return hashlib.file_digest(f, 'md5').hexdigest()


def verify(archive: str, md5: str) -> str:
  """The MD5 of `archive`, hashed now; marked as verified where it is `md5`, unmarked where not."""
  found = md5_of(archive)
  if found == md5:
    _mark(archive, md5)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(archive + MARKER)
  return found


def _mark(archive: str, md5: str) -> None:
  stat = os.stat(archive)
  report.write_text(archive + MARKER, json.dumps(dict(md5=md5, size=stat.st_size,
                                                      mtime_ns=stat.st_mtime_ns)))


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _megabytes(n: int) -> str:
  return f'{n / 1e6:,.1f} MB'


@contextlib.contextmanager
def _locked(path: str, say):
  """Holds an exclusive lock on the file `path`: flock, which the kernel lets go of when its process
  dies however it dies, and which NFS carries between hosts. The holder removes the file as it lets
  go, so a waiter makes sure that the file it locked is still the one at `path`."""
  try:
    while (fd := _acquire(path, say)) is None:
      pass
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{socket.gethostname()} process {os.getpid()}'.encode(), 0)
  except OSError as e:
    raise DataError(f'cannot lock {path} ({report.error_line(e)}), which keeps two processes from '
                    'downloading at once; fetch the dataset ahead with `python -m mlres.data fetch` '
                    '(docs/data.md)') from e
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    os.close(fd)


def _acquire(path: str, say) -> int | None:
  """A descriptor that holds the lock on `path`; None where the file was removed meanwhile."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors='replace') or 'another process'
      say(f'waiting for {holder}, which is downloading into {os.path.dirname(path)} (it holds {path})')
      fcntl.flock(fd, fcntl.LOCK_EX)
    with contextlib.suppress(FileNotFoundError):
      if os.path.samestat(os.fstat(fd), os.stat(path)):
        return fd
  except BaseException:
    os.close(fd)
    raise
  os.close(fd)
  return None


class _Download:
  """One archive from one URL into `<archive>.part`, checked, then renamed to the archive."""

  def __init__(self, name: str, url: str, archive: str, main: bool):
    self.name, self.url, self.archive, self.main = name, url, archive, main
    self.layout = archives.LAYOUTS[name]
    self.part, self.directory = archive + '.part', os.path.dirname(archive)
    self.say = _say if main else (lambda message: None)

  def run(self) -> None:
    size = self.layout.size
    have = os.path.getsize(self.part) if os.path.isfile(self.part) else 0
    free = shutil.disk_usage(self.directory).free
    if free < size - have:
      raise DataError(f'{self.directory} has {_megabytes(free)} free, but {self.layout.archive} needs '
                      f'{_megabytes(size - have)} more: free some space there, or set config.data_dir '
                      '(or --data_dir) to a folder with room')
    start = time.monotonic()
    try:
      with _Progress(self.layout.archive, size, have, self.main) as progress:
        found = self._transfer(progress).hexdigest()
      with open(self.part, 'rb') as f:
        os.fsync(f.fileno())
    except OSError as e:  # the network's errors are handled in _transfer: this is the disk
      raise DataError(f'cannot write {self.part} ({report.error_line(e)})') from e
    if found != self.layout.md5:
      os.remove(self.part)
      raise DataError(f'{self.url} sent {size:,} bytes whose MD5 is {found}, not the published '
                      f'{self.layout.md5}; nothing was kept in {self.directory}: run again, and if it '
                      'happens again, fetch the archive from another mirror (config.data_url) or copy '
                      'the published one there by hand')
    os.replace(self.part, self.archive)
    _mark(self.archive, self.layout.md5)
    seconds = time.monotonic() - start
    self.say(f'verified {self.archive}: {size:,} bytes, MD5 {found} as published; fetched in '
             f'{seconds:.1f} s ({_megabytes(round(size / max(seconds, 1e-9)))}/s)')

  def _transfer(self, progress: _Progress):
    """Streams the URL into the .part file until it holds the published size, continuing what is
    there; the MD5 of the whole. Transient failures are retried with backoff."""
    size = self.layout.size
    have = os.path.getsize(self.part) if os.path.isfile(self.part) else 0
    if have > size:
      have = 0
    digest = self._hashed() if have else hashlib.md5()
    opener = urllib.request.build_opener()  # honours http_proxy, https_proxy, no_proxy as set now
    failures, received = 0, False
    while have < size:
      headers = {'Range': f'bytes={have}-'} if have else {}
      try:
        response = opener.open(urllib.request.Request(self.url, headers=headers), timeout=TIMEOUT_S)
      except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:  # the server's file is shorter than the part: start again
          have, digest = 0, hashlib.md5()
        elif e.code not in TRANSIENT_STATUS:
          raise self._unreachable(e) from e
        error = e
      except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
        if not received:  # no connection at all, not a dropped one: trying again would not help
          raise self._unreachable(e) from e
        error = e
      else:
        if not received:
          resuming = f', resuming at {_megabytes(have)}' if have else ''
          self.say(f'downloading {self.url} ({_megabytes(size)}) into {self.directory}{resuming}')
        with response:
          if response.status == 206 and _range_start(response) != have:
            error = ConnectionError(f'it answered a request for bytes {have}- with '
                                    f'{response.headers.get("Content-Range")}')
          else:
            if have and response.status != 206:
              self.say(f'{self.url} does not continue a download (HTTP {response.status}): starting '
                       'it again from zero')
              have, digest = 0, hashlib.md5()
            self._check_length(response, have)
            before = have
            have, error = self._stream(response, have, digest, progress)
            if have > before:
              failures, received = 0, True
      if have < size:
        failures += 1
        if failures > RETRIES:
          raise DataError(f'downloading {self.url} failed {failures} times in a row '
                          f'({_why(error)}); {have:,} of {size:,} bytes are kept in {self.part}: run '
                          'again to resume')
        time.sleep(BACKOFF_S * 2 ** (failures - 1))
    return digest

  def _stream(self, response, have: int, digest, progress: _Progress):
    """Appends the response's body to the .part file (from `have`); the bytes it then holds, and
    what cut the body short (None where it was whole)."""
    with open(self.part, 'ab' if have else 'wb') as f:
      while True:
        try:
          chunk = response.read1(CHUNK)  # what has arrived: a stall loses none of it
        except (OSError, http.client.HTTPException) as e:  # a reset, a read timeout, a cut chunk
          return have, e
        if not chunk:
          return have, ConnectionError(f'the connection closed after {have:,} bytes')
        if have + len(chunk) > self.layout.size:
          raise self._not_published(f'sends more than the {self.layout.size:,} bytes')
        f.write(chunk)
        digest.update(chunk)
        have += len(chunk)
        progress.to(have)
        if have == self.layout.size:
          return have, None

  def _check_length(self, response, start: int) -> None:
    length = response.headers.get('Content-Length', '')
    if length.isdigit() and start + int(length) != self.layout.size:
      raise self._not_published(f'has {start + int(length):,} bytes, not the {self.layout.size:,}')

  def _hashed(self):
    with open(self.part, 'rb') as f:
      return hashlib.file_digest(f, 'md5')

  def _not_published(self, what: str) -> DataError:
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.part)
    return DataError(f'{self.url} {what} of the published {self.layout.archive}; nothing was kept in '
                     f'{self.directory}: set config.data_url to a mirror of the published file, or copy '
                     'it there by hand')

  def _unreachable(self, e: BaseException) -> DataError:
    archive = self.layout.archive
    return DataError(f'cannot download {self.url} ({_why(e)}) into {self.directory}: on a machine with '
                     f'internet, run `python -m mlres.data fetch {self.name} --data_dir={self.directory}` '
                     '(and copy the archive into that folder here if the machine does not share it), or '
                     f'copy {archive} into {self.directory} by hand')


def _range_start(response) -> int | None:
  """Where a 206 answer's body starts: `Content-Range: bytes START-END/TOTAL`."""
  value = response.headers.get('Content-Range', '')
  first = value.removeprefix('bytes ').partition('-')[0]
  return int(first) if first.isdigit() else None


def _why(e: BaseException) -> str:
  if isinstance(e, urllib.error.HTTPError):
    return f'HTTP {e.code} {e.reason}'
  if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
    return report.error_line(e.reason)
  return report.error_line(e)


class _Progress:
  """Bytes, rate and time left: a tqdm bar on a terminal, else a line every few percent (a log file
  shows the download is alive); nothing where not `shown` (every process but the first)."""

  def __init__(self, label: str, total: int, have: int, shown: bool):
    self.label, self.total, self.shown, self.bar = label, total, shown, None
    self.terminal = shown and sys.stderr.isatty()
    self._restart(have)

  def _restart(self, have: int) -> None:
    self.since, self.start = have, time.monotonic()
    self.next_percent = (100 * have // self.total // PROGRESS_PERCENT + 1) * PROGRESS_PERCENT

  def to(self, have: int) -> None:
    if self.terminal:
      if self.bar is None:  # made at the first bytes, below the line that says what is downloading
        from tqdm import tqdm
        self.bar = tqdm(total=self.total, initial=self.since, desc=self.label, unit='B',
                        unit_scale=True, leave=False)
      self.bar.update(have - self.bar.n)
    elif self.shown:
      if have < self.since:
        self._restart(have)
      percent = 100 * have // self.total
      if percent >= self.next_percent:
        self.next_percent = (percent // PROGRESS_PERCENT + 1) * PROGRESS_PERCENT
        rate = (have - self.since) / max(time.monotonic() - self.start, 1e-9)
        _say(f'{self.label}: {percent}% ({_megabytes(have)} of {_megabytes(self.total)}) at '
             f'{_megabytes(round(rate))}/s, {(self.total - have) / max(rate, 1):.0f} s left')

  def __enter__(self) -> _Progress:
    return self

  def __exit__(self, *exc) -> None:
    if self.bar is not None:
      self.bar.close()
