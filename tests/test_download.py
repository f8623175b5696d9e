"""Fetching the published archives from a local HTTP server (127.0.0.1 only): archives written by
tests/test_archives.py's writers, served with Range support, cut, stalled or refused on purpose, and
checksums set to those of the served files. benchmarks/download.py serves through `Server` too."""
import dataclasses
import hashlib
import http.server
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from mlres import config as config_lib, data
from mlres.data import __main__ as command, archives, download

from conftest import CACHE, ROOT, TESTS, run_main
from test_archives import pack, splits, write


class Server:
  """http.server in a thread, on 127.0.0.1, serving the files of `folder` by name, with Range
  (`ranges`), at most `rate` bytes/s where given. `faults` are taken one per request: 'cut' sends
  half the file and closes the connection, 'stall' sends half and then nothing, 'busy' answers 503,
  'hold' waits for `release` before answering. It stops by itself after `max_requests` requests or
  `lifetime_s` seconds. `log`: (path, Range header, status, bytes sent) of every request."""

  def __init__(self, folder, ranges=True, faults=(), rate=None, max_requests=20, lifetime_s=120):
    self.folder, self.ranges, self.faults, self.rate = str(folder), ranges, list(faults), rate
    self.log, self.requested, self.release = [], threading.Event(), threading.Event()
    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
    self.httpd.daemon_threads, self.httpd.timeout = True, 0.1
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
    self.stopped = threading.Event()
    deadline = time.monotonic() + lifetime_s

    def serve():
      while not self.stopped.is_set() and len(self.log) < max_requests and time.monotonic() < deadline:
        self.httpd.handle_request()
    self.thread = threading.Thread(target=serve, daemon=True)
    self.thread.start()

  def close(self):
    self.stopped.set()
    self.release.set()
    self.thread.join(10)
    self.httpd.server_close()

  def served(self):
    return sum(sent for _, _, _, sent in self.log)

  def _handler(self):
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def do_GET(self):
        fault = server.faults.pop(0) if server.faults else None
        path = os.path.join(server.folder, self.path.lstrip('/'))
        asked = self.headers.get('Range')
        server.requested.set()
        if fault == 'hold':
          server.release.wait(60)
        if fault == 'busy' or not os.path.isfile(path):
          status = 503 if fault == 'busy' else 404
          server.log.append((self.path, asked, status, 0))
          self.send_error(status)
          return
        size = os.path.getsize(path)
        start = int(re.fullmatch(r'bytes=(\d+)-', asked).group(1)) if asked and server.ranges else 0
        self.send_response(206 if start else 200)
        self.send_header('Content-Length', str(size - start))
        if start:
          self.send_header('Content-Range', f'bytes {start}-{size - 1}/{size}')
        self.end_headers()
        end = size // 2 if fault in ('cut', 'stall') else size
        sent = self._send(path, start, end)
        server.log.append((self.path, asked, 206 if start else 200, sent))
        if fault == 'stall':
          server.release.wait(30)

      def _send(self, path, start, end):
        began, sent = time.monotonic(), 0
        with open(path, 'rb') as f:
          f.seek(start)
          while start + sent < end:
            chunk = f.read(min(1 << 16, end - start - sent))
            self.wfile.write(chunk)
            sent += len(chunk)
            if server.rate:
              time.sleep(max(0.0, began + sent / server.rate - time.monotonic()))
        return sent
    return Handler


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
  """No proxy between the tests and their server; mlres's own folder in tmp_path; quick retries."""
  for variable in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY'):
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setenv('no_proxy', '127.0.0.1')
  monkeypatch.setenv('MLRES_DATA_DIR', str(tmp_path / 'own'))
  monkeypatch.setattr(download, 'BACKOFF_S', 0.01)


@pytest.fixture
def served(tmp_path, monkeypatch):
  """make(*names, n_train, n_test, **server options): the archives of `names` written (random images,
  the test_archives writers), their published size and MD5 set to their own, and served."""
  servers = []

  def make(*names, n_train=20, n_test=6, **options):
    folder = tmp_path / 'served'
    for name in names:
      write(folder, name, *splits(name, n_train, n_test))
      monkeypatch.setitem(archives.LAYOUTS, name, published(name, pack(folder, name)))
    servers.append(Server(folder, **options))
    return servers[-1]
  yield make
  for server in servers:
    server.close()


def published(name, path):
  """LAYOUTS[name] with the size and MD5 of the file at `path`."""
  with open(path, 'rb') as f:
    md5 = hashlib.md5(f.read()).hexdigest()
  return dataclasses.replace(archives.LAYOUTS[name], md5=md5, size=os.path.getsize(path))


def load(name, data_dir, url='', download=True):
  config = config_lib.paper(name, 'res14')
  config.data_dir, config.data_url, config.download = str(data_dir), url, download
  return data.load(config)


def files(folder):
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_a_fresh_download_is_verified_marked_and_not_hashed_again(served, tmp_path, monkeypatch, capfd):
  server = served('cifar100')
  monkeypatch.setattr(download, 'CHUNK', 1024)
  dest = tmp_path / 'data'
  ds = load('cifar100', dest, server.url)
  (want, _), _ = splits('cifar100', 20, 6)
  np.testing.assert_array_equal(ds.train_images, want)
  size = archives.LAYOUTS['cifar100'].size
  assert server.log == [('/cifar-100-python.tar.gz', None, 200, size)]
  assert files(dest) == ['cifar-100-python.tar.gz', 'cifar-100-python.tar.gz.verified']
  marker = json.loads((dest / 'cifar-100-python.tar.gz.verified').read_text())
  assert marker['md5'] == archives.LAYOUTS['cifar100'].md5 and marker['size'] == size
  err = capfd.readouterr().err
  percents = [int(p) for p in re.findall(r'cifar-100-python.tar.gz: (\d+)% \(', err)]
  assert percents == sorted(percents) and percents[-1] == 100 and len(percents) >= 10
  assert f'verified {dest}/cifar-100-python.tar.gz: {size:,} bytes' in err

  hashed = []
  monkeypatch.setattr(download, 'verify', lambda *args: hashed.append(args))
  load('cifar100', dest, server.url)
  assert hashed == [] and len(server.log) == 1


def test_a_downloaded_archive_that_changed_is_hashed_again_and_removed(served, tmp_path):
  server = served('cifar10')
  dest = tmp_path / 'data'
  load('cifar10', dest, server.url)
  archive = dest / 'cifar-10-python.tar.gz'
  content = archive.read_bytes()
  archive.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
  with pytest.raises(data.DataError, match=rf'^{archive} changed since it was downloaded and verified: '
                     r'its MD5 is \w+, not the published \w+ .*; it was removed') as error:
    load('cifar10', dest, server.url, download=False)
  assert '\n' not in str(error.value) and files(dest) == []


def test_an_archive_copied_by_hand_is_read_without_hashing(served, tmp_path, monkeypatch):
  served('stl10')
  dest = tmp_path / 'data'
  dest.mkdir()
  shutil.copy(tmp_path / 'served' / 'stl10_binary.tar.gz', dest)
  monkeypatch.setitem(archives.LAYOUTS, 'stl10', dataclasses.replace(archives.LAYOUTS['stl10'], md5='0' * 32))
  assert load('stl10', dest, download=False).train_images.shape == (20, 96, 96, 3)


@pytest.mark.parametrize('fault', ['cut', 'stall', 'busy'])
def test_a_failed_transfer_is_resumed_with_range(fault, served, tmp_path, monkeypatch):
  server = served('cifar10', faults=[fault])
  monkeypatch.setattr(download, 'TIMEOUT_S', 0.5)
  dest = tmp_path / 'data'
  load('cifar10', dest, server.url)
  size = archives.LAYOUTS['cifar10'].size
  (first, _, first_status, cut), (_, asked, status, rest) = server.log
  if fault == 'busy':
    assert first_status == 503 and asked is None and status == 200 and rest == size
  else:
    assert cut == size // 2 and asked == f'bytes={size // 2}-' and status == 206
    assert cut + rest == server.served() == size
  assert files(dest) == ['cifar-10-python.tar.gz', 'cifar-10-python.tar.gz.verified']


def test_a_part_left_by_a_killed_process_is_continued(served, tmp_path):
  server = served('cifar10')
  dest = tmp_path / 'data'
  dest.mkdir()
  content = (tmp_path / 'served' / 'cifar-10-python.tar.gz').read_bytes()
  (dest / 'cifar-10-python.tar.gz.part').write_bytes(content[:len(content) * 2 // 5])
  load('cifar10', dest, server.url)
  assert server.log == [('/cifar-10-python.tar.gz', f'bytes={len(content) * 2 // 5}-', 206,
                         len(content) - len(content) * 2 // 5)]
  assert (dest / 'cifar-10-python.tar.gz').read_bytes() == content


def test_a_server_without_range_sends_it_again_from_zero(served, tmp_path):
  server = served('cifar10', ranges=False, faults=['cut'])
  dest = tmp_path / 'data'
  load('cifar10', dest, server.url)
  size = archives.LAYOUTS['cifar10'].size
  assert [(asked, status, sent) for _, asked, status, sent in server.log] == [
      (None, 200, size // 2), (f'bytes={size // 2}-', 200, size)]
  assert files(dest) == ['cifar-10-python.tar.gz', 'cifar-10-python.tar.gz.verified']


def test_a_wrong_checksum_keeps_nothing(served, tmp_path, monkeypatch):
  server = served('cifar10')
  monkeypatch.setitem(archives.LAYOUTS, 'cifar10',
                      dataclasses.replace(archives.LAYOUTS['cifar10'], md5='0' * 32))
  dest = tmp_path / 'data'
  (dest / 'cifar-10-batches-py.old').mkdir(parents=True)
  (dest / 'notes.txt').write_text('mine')
  with pytest.raises(data.DataError) as error:
    load('cifar10', dest, server.url)
  message = str(error.value)
  found = hashlib.md5((tmp_path / 'served' / 'cifar-10-python.tar.gz').read_bytes()).hexdigest()
  assert '\n' not in message and f'{server.url}cifar-10-python.tar.gz sent ' in message
  assert f'MD5 is {found}, not the published {"0" * 32}; nothing was kept in {dest}' in message
  assert files(dest) == ['cifar-10-batches-py.old', 'notes.txt']
  assert (dest / 'notes.txt').read_text() == 'mine' and files(dest / 'cifar-10-batches-py.old') == []


def refused_url():
  with socket.socket() as s:  # a port that was just free: nothing listens there
    s.bind(('127.0.0.1', 0))
    return f'http://127.0.0.1:{s.getsockname()[1]}/'


@pytest.mark.parametrize('why', ['404', 'refused'])
def test_404_or_refused_says_the_url_the_folder_and_both_ways(why, served, tmp_path):
  server = served('cifar10')
  url = server.url + 'missing/' if why == '404' else refused_url()
  dest = tmp_path / 'data'
  with pytest.raises(data.DataError) as error:
    load('cifar10', dest, url)
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'cannot download {url}cifar-10-python.tar.gz (' +
                            ('HTTP 404 ' if why == '404' else 'ConnectionRefusedError'))
  assert f'on a machine with internet, run `python -m mlres.data fetch cifar10 --data_dir={dest}`' in message
  assert f'copy cifar-10-python.tar.gz into {dest} by hand' in message
  assert files(dest) == [] and len(server.log) == (why == '404')


def test_download_false_makes_no_request_and_asks_tfds_nothing(served, tmp_path, caplog, capfd):
  server = served('cifar10')
  with pytest.raises(data.DataError, match=r"^dataset 'cifar10' is not in .*tfds build cifar10") as error:
    load('cifar10', tmp_path / 'data', server.url, download=False)
  assert 'config.download=True' in str(error.value)
  assert server.log == [] and not server.requested.is_set()
  assert 'Variant folder' not in caplog.text + capfd.readouterr().err


def test_without_data_dir_it_searches_tfds_and_mlres_folders_and_downloads_into_mlres(served, tmp_path,
                                                                                       monkeypatch):
  server = served('cifar10')
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  own = tmp_path / 'own'
  assert data.folders('') == [str(tmp_path / 'tfds'), str(own)]
  with pytest.raises(data.DataError, match=rf'is not in {tmp_path}/tfds or {own}: .*'
                     rf'no archive {own}/cifar-10-python.tar.gz, no tfds-prepared {tmp_path}/tfds/cifar10; '
                     rf'download \S+ into {own} '):
    load('cifar10', '', server.url, download=False)
  load('cifar10', '', server.url)
  assert files(own) == ['cifar-10-python.tar.gz', 'cifar-10-python.tar.gz.verified']
  assert not (tmp_path / 'tfds').exists()


def test_not_enough_disk_space_is_refused_before_any_request(served, tmp_path, monkeypatch):
  server = served('cifar10')
  size = archives.LAYOUTS['cifar10'].size
  monkeypatch.setattr(shutil, 'disk_usage', lambda path: types.SimpleNamespace(free=size - 1))
  dest = tmp_path / 'data'
  with pytest.raises(data.DataError, match=rf'^{dest} has [\d.]+ MB free, but cifar-10-python.tar.gz needs '
                     r'[\d.]+ MB more: free some space there, or set config.data_dir'):
    load('cifar10', dest, server.url)
  assert server.log == [] and files(dest) == []


def test_progress_is_shown_by_the_first_process_only(served, tmp_path, capfd):
  server = served('cifar10')
  download.fetch('cifar10', str(tmp_path / 'data'), server.url, main=False)
  assert capfd.readouterr() == ('', '')


@pytest.mark.slow
def test_two_processes_at_once_download_once(served, tmp_path, monkeypatch):
  """The first holds the lock while the server holds its answer; the second, in this process, waits
  for the lock; only then does the server answer. Without the lock the second would ask too."""
  server = served('cifar10', faults=['hold'])
  dest = tmp_path / 'data'
  layout = archives.LAYOUTS['cifar10']
  script = (f'import dataclasses, sys; sys.path.insert(0, {TESTS!r})\n'
            'from mlres.data import archives, download\n'
            f'archives.LAYOUTS["cifar10"] = dataclasses.replace(archives.LAYOUTS["cifar10"], '
            f'md5={layout.md5!r}, size={layout.size})\n'
            f'print(download.fetch("cifar10", {str(dest)!r}, {server.url!r}))\n')
  first = subprocess.Popen([sys.executable, '-c', script], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONPATH': ROOT})
  try:
    assert server.requested.wait(60), first.stderr.read() if first.poll() is not None else 'no request'
    waiting = threading.Event()
    flock = download.fcntl.flock

    def recording(fd, operation):
      if operation == download.fcntl.LOCK_EX:  # the blocking call, after the lock was found held
        waiting.set()
      return flock(fd, operation)
    monkeypatch.setattr(download.fcntl, 'flock', recording)
    second = queue.Queue()

    def load_second():
      try:
        second.put(load('cifar10', dest, server.url))
      except Exception as e:
        second.put(e)
    threading.Thread(target=load_second, daemon=True).start()
    assert waiting.wait(30)
    assert len(server.log) == 0
    server.release.set()
    ds = second.get(timeout=60)
    assert isinstance(ds, data.Dataset), ds
    out, err = first.communicate(timeout=60)
  finally:
    server.release.set()
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, err
  assert out.strip() == str(dest / 'cifar-10-python.tar.gz') and len(ds.train_images) == 20
  assert [status for _, _, status, _ in server.log] == [200]
  assert files(dest) == ['cifar-10-python.tar.gz', 'cifar-10-python.tar.gz.verified']


def test_the_fetch_and_verify_commands(served, tmp_path, monkeypatch, capsys):
  server = served('cifar10', 'cifar100')
  dest = tmp_path / 'data'
  assert command.main(['fetch', 'cifar10', 'cifar100', f'--data_dir={dest}', f'--data_url={server.url}']) == 0
  out = capsys.readouterr().out
  for name in ('cifar10', 'cifar100'):
    layout = archives.LAYOUTS[name]
    assert f'{name}: {dest}/{layout.archive}, {layout.size:,} bytes, MD5 {layout.md5} as published' in out
  assert command.main(['fetch', 'cifar10', f'--data_dir={dest}', f'--data_url={server.url}']) == 0
  assert len(server.log) == 2  # the second fetch found it there

  (dest / 'stl10_binary').mkdir()
  (dest / 'stl10_binary' / 'train_X.bin').write_bytes(b'')
  assert command.main(['verify', f'--data_dir={dest}']) == 1
  out = capsys.readouterr().out
  assert f'cifar10: {dest}/cifar-10-python.tar.gz: ' in out and 'as published' in out
  assert f'stl10: {dest}/stl10_binary: extracted, lacks train_y.bin, test_X.bin, test_y.bin' in out
  shutil.rmtree(dest / 'stl10_binary')
  assert command.main(['verify', f'--data_dir={dest}']) == 0
  archive = dest / 'cifar-100-python.tar.gz'
  archive.write_bytes(archive.read_bytes()[:-1])
  (dest / 'cifar-10-python.tar.gz.verified').unlink()  # as if copied by hand
  before = {f: (dest / f).read_bytes() for f in files(dest)}
  assert command.main(['verify', f'--data_dir={dest}']) == 1
  assert f'cifar100: {archive}: NOT the published archive' in capsys.readouterr().out
  assert {f: (dest / f).read_bytes() for f in files(dest)} == before  # it only reads
  assert command.main(['verify', '--mark', f'--data_dir={dest}']) == 1
  assert files(dest) == ['cifar-10-python.tar.gz', 'cifar-10-python.tar.gz.verified', 'cifar-100-python.tar.gz']
  assert command.main(['verify', f'--data_dir={tmp_path / "empty"}']) == 1
  assert 'no dataset in' in capsys.readouterr().out
  assert command.main(['fetch', 'cifar10', f'--data_dir={tmp_path / "other"}', f'--data_url={refused_url()}']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: cannot download http://127.0.0.1:') and err.count('\n') == 1
  with pytest.raises(SystemExit) as exit:
    command.main(['fetch', 'mnist'])
  assert exit.value.code == 2 and "invalid choice: 'mnist'" in capsys.readouterr().err


@pytest.mark.parametrize('field, value, said', [
    ('download', 'yes', 'must be True or False'),
    ('data_url', 'ftp://mirror/', 'must be .* a base URL that starts with http:// or https://')])
def test_the_download_fields_are_validated(field, value, said):
  config = config_lib.default()
  with config.ignore_type():
    config[field] = value
  with pytest.raises(config_lib.ConfigError, match=rf'^config\.{field}={value!r}: {said}'):
    config_lib.validate(config)


@pytest.mark.slow
def test_a_short_training_run_downloads_cifar10_on_first_use(served, tmp_path):
  server = served('cifar10', n_train=40, n_test=16)
  layout = archives.LAYOUTS['cifar10']
  config_file = tmp_path / 'tiny_cifar10.py'
  config_file.write_text(
      f'import dataclasses, sys\nsys.path.insert(0, {TESTS!r})\nfrom conftest import tiny\n'
      'from mlres.data import archives\n\n'
      'archives.LAYOUTS["cifar10"] = dataclasses.replace(archives.LAYOUTS["cifar10"], '
      f'md5={layout.md5!r}, size={layout.size})\n\n'
      f'def get_config():\n  return tiny(compilation_cache={CACHE!r})\n')
  dest, workdir = tmp_path / 'data', tmp_path / 'run'
  result = run_main(['--config.dataset=cifar10', f'--config.data_dir={dest}', f'--config.data_url={server.url}',
                     '--config.cycles.stage_sizes=((1, 1),)', '--config.cycles.epochs=(1,)',
                     '--config.num_epochs=1', '--config.compile_ahead=off'], str(config_file), str(workdir))
  assert result.returncode == 0, result.stderr
  assert 'tiny on cifar10' in result.stdout
  assert f'downloading {server.url}cifar-10-python.tar.gz' in result.stderr
  assert [status for _, _, status, _ in server.log] == [200]
  assert files(dest) == ['cifar-10-python.tar.gz', 'cifar-10-python.tar.gz.verified']
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['dataset'] == 'cifar10' and summary['epochs'] == 1
