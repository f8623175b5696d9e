"""What a run tells its user: metrics.jsonl, a line or a progress bar per epoch, Table-3 rows."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from mlres import events


class WorkdirError(RuntimeError):
  """A workdir, or a file in it, that a run cannot use."""


def error_line(e: BaseException) -> str:
  """An exception as it goes into a one-line error message: its type and its first line."""
  return f'{type(e).__name__}: {(str(e).strip().splitlines() or [""])[0][:200]}'


def prepare_workdir(workdir: str) -> None:
  """Makes `workdir/checkpoints` and proves it writable before any data is read or anything is
  compiled: orbax, failing to save in its background thread, would leave the run hanging."""
  if not workdir:
    raise WorkdirError('--workdir is empty: name a folder for the run')
  folder = os.path.join(workdir, 'checkpoints')
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix='.mlres-write-test-'):
      pass
  except OSError as e:
    raise WorkdirError(f'--workdir={workdir}: cannot write checkpoints there '
                       f'({e.strerror or e}: {e.filename or folder})') from e
  for name in ('metrics.jsonl', 'summary.json'):
    path = os.path.join(workdir, name)
    if os.path.exists(path) and not os.path.isfile(path):
      raise WorkdirError(f'--workdir={workdir}: {path} is not a file')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file; a last line cut short by a crash is dropped with a warning,
  a bad line before it is an error."""
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      lines = [line for line in f if line.strip()]
  except OSError as e:
    raise WorkdirError(f'{path} cannot be read: {e.strerror or e}') from e
  records = []
  for number, line in enumerate(lines, 1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number < len(lines):
        raise WorkdirError(f'{path}, line {number}, is not JSON ({e.msg}); repair or remove it') from e
      print(f'warning: the last line of {path} was cut short (a crash while writing it); dropped',
            file=sys.stderr, flush=True)
  return records


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
  """Replaces the file atomically, so a crash leaves the old or the new one, never half."""
  write_text(path, ''.join(json.dumps(r) + '\n' for r in records))


def read_summary(path: str) -> dict[str, Any] | None:
  """A finished run's summary.json; None if there is none or it is not one, so it is made again."""
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  return summary if isinstance(summary, dict) and {'test_error', 'config'} <= set(summary) else None


def write_json(path: str, value: Any) -> None:
  """As write_jsonl, one indented JSON value."""
  write_text(path, json.dumps(value, indent=2))


def write_text(path: str, text: str) -> None:
  """Writes beside the file, then renames over it: readers see the old text or the new, whole."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def append_jsonl(path: str, record: dict[str, Any]) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


class Output:
  """Where a run speaks: process 0 prints and writes the run's files, the others stay silent."""

  def __init__(self, main: bool):
    self.main = main

  def say(self, message: str, warning: bool = False) -> None:
    if self.main:
      print(message, file=sys.stderr if warning else sys.stdout, flush=True)

  def write_json(self, path: str, value: Any) -> None:
    if self.main:
      write_json(path, value)


class MetricWriter:
  """A run's metrics.jsonl, one record per epoch. On open it keeps only the epochs the run's
  checkpoint has trained (a crash may have left later ones), warning of any that are missing."""

  def __init__(self, workdir: str, done: int, output: Output, tensorboard: bool = False):
    self.path, self.output = os.path.join(workdir, 'metrics.jsonl'), output
    self.history = [m for m in read_jsonl(self.path) if m['epoch'] <= done]
    lost = sorted(set(range(1, done + 1)) - {m['epoch'] for m in self.history})
    if lost:
      output.say(f'warning: {self.path} lacks {len(lost)} of the {done} epochs the checkpoint has '
                 f'trained ({lost[0]} to {lost[-1]}); their lines are lost', warning=True)
    self.events = None
    if output.main:
      write_jsonl(self.path, self.history)
      self.events = events.writer(workdir, done) if tensorboard else None

  def write(self, record: dict[str, Any], num_epochs: int) -> None:
    """Appends an epoch's record (and its TensorBoard scalars) and prints its line."""
    self.history.append(record)
    if self.output.main:
      append_jsonl(self.path, record)
      if self.events:
        events.write(self.events, record)
      epoch_line(record, num_epochs)

  def close(self) -> None:
    if self.events:
      self.events.close()

  def last(self, epoch: int) -> dict[str, Any]:
    """The record of `epoch`, the run's last, which its summary reports."""
    if not self.history or self.history[-1]['epoch'] != epoch:
      raise WorkdirError(f'{self.path} lacks the last epoch, {epoch}, whose test accuracy the '
                         'summary reports; restore the file from a copy')
    return self.history[-1]


@contextlib.contextmanager
def progress(total: int, description: str):
  """A tqdm bar on a terminal; elsewhere nothing (the epoch's line is printed after it)."""
  if sys.stderr.isatty():
    from tqdm import tqdm
    with tqdm(total=total, desc=description, unit='step', leave=False) as bar:
      yield bar
  else:
    yield _NoBar()


class _NoBar:
  def update(self, n: int) -> None:
    del n


# What a task calls its loss and its held-out split in the epoch's line: a language model's loss
# is in bits per byte, on its validation split.
_LINE_NAMES = {'image_classification': ('loss', 'test'), 'language_model': ('bpb', 'val')}


def epoch_line(r: dict[str, Any], num_epochs: int) -> None:
  """The epoch's record in a line; a language model's with its speed in tokens and the tokens seen."""
  loss, held_out = _LINE_NAMES[r['task']]
  tokens = (f', {r["tokens_per_second"]:,.0f} tokens/s)  {r["tokens"]:,} tokens' if 'tokens' in r
            else ')')
  print(f'epoch {r["epoch"]:>3}/{num_epochs}  cycle {r["cycle"]}  '
        f'{blocks(r["stage_sizes"])} h={r["h"]:g}  lr {r["lr"]:.4f}  '
        f'train {loss} {r["train_loss"]:.4f} acc {100 * r["train_accuracy"]:.2f}%  '
        f'{held_out} {loss} {r["test_loss"]:.4f} acc {100 * r["test_accuracy"]:.2f}%  '
        f'{r["epoch_seconds"]:.2f} s ({r["steps_per_second"]:.1f} steps/s{tokens}', flush=True)


def cycle_line(cycle, num_params: int, num_seeds: int, note: str, cost: dict[str, int],
               widths: dict[str, Any] | None = None) -> str:
  """The cycle's first line: its network (its `widths` where given: a run whose plan widens) and, for a
  language model, what the whole cycle costs (mlres.tasks.Task.cost); with several seeds, per seed."""
  seeds = f' x {num_seeds} seeds' if num_seeds > 1 else ''
  flops = (f'{cost["flops_per_token"]:,} FLOPs per token x {cost["tokens"]:,} tokens = '
           f'{cost["flops"]:.3g} FLOPs, ' if cost else '')
  wide = f'{describe_widths(widths)}, ' if widths else ''
  return (f'cycle {cycle.index}: {blocks(cycle.stage_sizes)} blocks, {wide}h={cycle.h:g}, '
          f'{num_params:,} parameters{seeds}, {flops}{note}')


def blocks(stage_sizes) -> str:
  return '-'.join(str(n) for n in stage_sizes)


def describe_widths(fields: dict[str, Any]) -> str:
  """A network's width fields in words: 'widths 16-32-64' (a ResNet's stages), 'width 128, 4 heads,
  MLP 512' (a ViT's or GPT's)."""
  if 'widths' in fields:
    return f'widths {blocks(fields["widths"])}'
  return f'width {fields["width"]}, {fields["num_heads"]} heads, MLP {fields["mlp_dim"]}'


def short_widths(fields: dict[str, Any]) -> str:
  """As a table's cell: '16-32-64' (a ResNet's stages), '128/4/512' (width/heads/MLP)."""
  if 'widths' in fields:
    return blocks(fields['widths'])
  return f'{fields["width"]}/{fields["num_heads"]}/{fields["mlp_dim"]}'


def cycle_widths(summary: dict[str, Any]) -> list[dict[str, Any]]:
  """Each cycle's width fields of a finished run: its summary's cycle_widths (a plan that widens),
  else its config's model fields in every cycle."""
  if 'cycle_widths' in summary:
    return summary['cycle_widths']
  model = summary['config']['model']
  fields = ('widths',) if 'widths' in model else ('width', 'num_heads', 'mlp_dim')
  return [{f: model[f] for f in fields}] * len(summary['stage_sizes'])


def chain(cycle_stage_sizes) -> str:
  """'2-2-2 to 8-8-8' for a multi-level plan, '8-8-8' for a single architecture."""
  return _span(blocks(cycle_stage_sizes[0]), blocks(cycle_stage_sizes[-1]))


def width_chain(summary: dict[str, Any]) -> str:
  """'8-16 to 16-32' or '64/2/256 to 128/4/512' for a run that widens, one cell for one that does not."""
  widths = cycle_widths(summary)
  return _span(short_widths(widths[0]), short_widths(widths[-1]))


def _span(first: str, last: str) -> str:
  return first if first == last else f'{first} to {last}'


class Headline(NamedTuple):
  """A task's headline metric: its field in summary.json, its name in a table's column and in a
  sentence, and how a value is shown; and what its records' test_loss is, in words (a language
  model's is in bits per byte, on its validation split)."""
  key: str
  column: str
  name: str
  show: Callable[[float], str]
  loss: str


HEADLINES = {
    'image_classification': Headline('test_error', 'Error', 'test error', lambda v: f'{100 * v:.2f}%',
                                     'test loss'),
    'language_model': Headline('validation_bits_per_byte', 'Val bpb', 'validation bits per byte',
                               lambda v: f'{v:.4f}', 'validation bits per byte')}


def headline(summary: dict[str, Any]) -> Headline:
  """Test error for an image classifier, validation bits per byte for a language model."""
  return HEADLINES[summary.get('task', 'image_classification')]


def table(summaries: list[dict[str, Any]], paper: dict[str, tuple[float, float]] | None = None) -> str:
  """Rows in the style of Table 3: model, blocks, the headline metric (a language model's next-byte
  accuracy beside it, and the compressors' bits per byte as reference rows), stepping time (and the
  paper's)."""
  metric = headline(summaries[0])
  lm = metric.key == 'validation_bits_per_byte'
  wide = [width_column(summaries[0])] if any('cycle_widths' in s for s in summaries) else []
  head = ['Model', '# Blocks', *wide, metric.column, *(['Next-byte acc'] if lm else []), 'Time']
  if paper:
    head += ['Paper error', 'Paper time']
  rows = [head]
  for s in summaries:
    row = [s['name'], chain(s['stage_sizes']), *([width_chain(s)] if wide else []),
           metric.show(s[metric.key]), *([f'{100 * s["test_accuracy"]:.2f}%'] if lm else []),
           _duration(s['train_seconds'])]
    if paper:
      error, minutes = paper.get(s['name'], (None, None))
      row += [f'{error:.2f}%' if error is not None else '-', f'{minutes}m' if minutes else '-']
    rows.append(row)
  if lm and 'baselines' in summaries[0]:
    shape = ['-'] * (1 + len(wide))  # the blocks' and widths' cells
    return columns(rows + [[name, *shape, metric.show(bits), *['-'] * (len(head) - 2 - len(shape))]
                           for name, bits in summaries[0]['baselines'].items()]) + _reference_note(summaries[0])
  return columns(rows)


def width_column(summary: dict[str, Any]) -> str:
  """The header of a table's widths: 'Widths' of a ResNet's stages, 'Width/heads/MLP' otherwise."""
  return 'Widths' if 'widths' in cycle_widths(summary)[0] else 'Width/heads/MLP'


def _reference_note(summary: dict[str, Any]) -> str:
  """Under a language model's table: what its reference rows are, and whether the run's validation
  read the same bytes."""
  read, split = summary['validation_bytes']
  coverage = ('as the run\'s validation does' if split - read <= summary['config']['model']['context']
              else f'of which the run\'s validation read {read:,} (text.eval_windows)')
  return (f'\n\nReferences (python -m mlres.data baselines): the compressors and a unigram byte model on '
          f'the whole validation split, {split:,} bytes, {coverage}.')


def columns(rows: list[list[str]]) -> str:
  """Left-aligned text columns, the first row a header underlined with dashes."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _duration(seconds: float) -> str:
  return f'{seconds:.1f}s' if seconds < 120 else f'{seconds / 60:.1f}m'


def ci95(values) -> float:
  """Half-width of the 95% Student-t confidence interval of the mean of `values`."""
  from scipy import stats
  values = np.asarray(values, np.float64)
  return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
