"""launch/table.py prints a finished table beside the paper's numbers without re-running rows."""
import json
import os
import re
import subprocess
import sys

import pytest

from mlres import cli, report
from mlres import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # every test runs a launcher's process


def summary(name, stage_sizes, error, seconds, row=None):
  config = cli.load_config(os.path.join(ROOT, 'configs', f'{row}.py')) if row else None
  return {'name': name, 'stage_sizes': stage_sizes, 'test_error': error, 'train_seconds': seconds,
          'config': json.loads(config.to_json_best_effort()) if config else {}}


def launch(script, *args, check=False):
  """`python launch/<script> args` from the project's root, with this checkout's mlres whatever
  `pip install -e` points at (check: raise if it fails)."""
  return subprocess.run([sys.executable, f'launch/{script}', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, check=check, env={**os.environ, 'PYTHONPATH': ROOT})


def plant(root, rows):
  for row, s in rows.items():
    os.makedirs(root / row)
    with open(root / row / 'summary.json', 'w') as f:
      json.dump({**s, 'config': summary('', [], 0, 0, row)['config']}, f)


def test_table_of_finished_runs(tmp_path):
  rows = {'cifar10_res14': summary('ResNet-14', [[2, 2, 2]] * 3, 0.1, 100.0),
          'cifar10_res50': summary('ResNet-50', [[8, 8, 8]] * 3, 0.08, 400.0),
          'cifar10_res50i': summary('ResNet-50-i', [[2, 2, 2], [4, 4, 4], [8, 8, 8]], 0.075, 232.0),
          'cifar10_res32': summary('ResNet-32', [[5, 5, 5]] * 3, 0.09, 200.0),
          'cifar10_res122': summary('ResNet-122', [[20, 20, 20]] * 3, 0.07, 800.0),
          'cifar10_res122i': summary('ResNet-122-i', [[5, 5, 5], [10, 10, 10], [20, 20, 20]], 0.07, 460.0)}
  plant(tmp_path, rows)
  out = launch('table.py', '--dataset=cifar10', f'--root={tmp_path}', check=True).stdout
  lines = out.strip().splitlines()
  assert lines[0].split() == ['Model', '#', 'Blocks', 'Error', 'Time', 'Paper', 'error', 'Paper', 'time']
  assert lines[4].split() == ['ResNet-50-i', '2-2-2', 'to', '8-8-8', '7.50%', '3.9m', '7.10%', '67m']
  assert 'ResNet-50-i / ResNet-50 stepping time: 0.580, theory 0.5625' in out
  assert 'ResNet-122-i / ResNet-122 stepping time: 0.575' in out


def test_unknown_arguments_are_refused(tmp_path):
  run = launch('table.py', '--dataset=digits', f'--root={tmp_path}', '--epochs=3')
  assert run.returncode == 2 and '--epochs=3' in run.stderr


def test_a_finished_row_of_another_config_is_refused(tmp_path):
  """Printing it as this config's row would be a silently wrong table."""
  plant(tmp_path, {'digits_first': summary('ResNet-14', [[2, 2, 2]] * 3, 0.01, 10.0)})
  run = launch('table.py', '--dataset=digits', f'--root={tmp_path}', '--config.optimizer.eta_max=0.2',
               '--config.data_dir=/elsewhere')
  assert run.returncode == 2 and run.stdout == ''
  assert run.stderr.strip() == (f'error: {tmp_path}/digits_first holds a finished run of another config '
                                '(optimizer.eta_max: 0.5 -> 0.2); use another --root')


def test_a_config_file_that_cannot_load_gets_one_line(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config(:\n')
  run = launch('seeds.py', '--experiment=reset', f'--config={bad}', f'--root={tmp_path}')
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == (f'seeds.py: error: --config={bad}: cannot load the config file: '
                                                 'SyntaxError: invalid syntax (bad.py, line 1)')


def test_an_unknown_operator_gets_one_line(tmp_path):
  run = launch('seeds.py', '--experiment=operators', '--operators=copy,twice', '--config=configs/digits.py',
               '--num_seeds=2', f'--root={tmp_path}')
  assert run.returncode == 2 and not os.listdir(tmp_path)
  assert run.stderr.strip() == ('seeds.py: error: --operators=copy,twice: name one or more of '
                                'copy, linear, stack, zero')


def test_the_vit_table_of_finished_runs(tmp_path):
  plant(tmp_path, {'digits_vit_first': summary('ViT-2', [[2]] * 3, 0.05, 10.0),
                   'digits_vit_last': summary('ViT-8', [[8]] * 3, 0.03, 40.0),
                   'digits_vit': summary('ViT-8-i', [[2], [4], [8]], 0.035, 23.0)})
  out = launch('table.py', '--dataset=digits', '--model=vit', f'--root={tmp_path}', check=True).stdout
  lines = out.strip().splitlines()
  assert lines[0].split() == ['Model', '#', 'Blocks', 'Error', 'Time']
  assert lines[4].split() == ['ViT-8-i', '2', 'to', '8', '3.50%', '23.0s']
  assert 'ViT-8-i / ViT-8 stepping time: 0.575, theory 0.5625' in out
  refused = launch('table.py', '--dataset=stl10', '--model=vit', f'--root={tmp_path}')
  assert refused.returncode == 2 and 'no ViT config for stl10' in refused.stderr


def test_the_gpt_table_of_finished_runs(tmp_path):
  """A language model's rows give its validation bits per byte and next-byte accuracy; the theory is
  the config's: (1 + 2 + 4) x 4 epochs over 4 blocks x 12 epochs."""
  lm = lambda name, blocks, bits, seconds: {**summary(name, blocks, 0.4, seconds), 'task': 'language_model',
                                            'validation_bits_per_byte': bits, 'test_accuracy': 0.6}
  plant(tmp_path, {'pystdlib_gpt_first': lm('GPT-1', [[1]] * 3, 2.5, 10.0),
                   'pystdlib_gpt_last': lm('GPT-4', [[4]] * 3, 2.2, 40.0),
                   'pystdlib_gpt': lm('GPT-4-i', [[1], [2], [4]], 2.25, 23.0)})
  out = launch('table.py', '--dataset=pystdlib', '--model=gpt', f'--root={tmp_path}', check=True).stdout
  lines = out.strip().splitlines()
  assert lines[0].split() == ['Model', '#', 'Blocks', 'Val', 'bpb', 'Next-byte', 'acc', 'Time']
  assert lines[4].split() == ['GPT-4-i', '1', 'to', '4', '2.2500', '60.00%', '23.0s']
  assert ('GPT-4-i / GPT-4 stepping time: 0.575, theory 0.5833; validation bits per byte 2.2500 vs '
          '2.2000') in out
  refused = launch('table.py', '--dataset=digits', '--model=gpt', f'--root={tmp_path}')
  assert refused.returncode == 2 and 'the GPT configs are for pystdlib' in refused.stderr


@pytest.mark.parametrize('args', [['--dataset=pystdlib', '--model=gpt', '--table=4'],
                                  ['--dataset=digits', '--model=vit', '--table=3'], ['--dataset=digits', '--table=4']],
                         ids=['gpt', 'vit', 'digits'])
def test_a_table_flag_that_would_be_ignored_is_refused(tmp_path, args):
  """Only the paper's ResNet rows come in two tables; elsewhere --table would change nothing."""
  run = launch('table.py', *args, f'--root={tmp_path}')
  assert run.returncode == 2 and not os.listdir(tmp_path)
  line, = run.stderr.strip().splitlines()
  assert line.startswith(f'table.py: error: {args[-1]}: Tables 3 and 4 are the paper\'s ResNets and Wide ResNets')


def test_seeds_refuses_num_seeds_as_a_config_override(tmp_path):
  """Each variant is given --num_seeds; an override coming after it would win in every one."""
  run = launch('seeds.py', '--experiment=reset', '--config=configs/digits.py', '--num_seeds=2',
               f'--root={tmp_path}', '--config.num_seeds=3')
  assert run.returncode == 2 and not os.listdir(tmp_path)
  assert run.stderr.strip().splitlines() == [
      'seeds.py: error: --config.num_seeds=3: the seeds of each variant are --num_seeds; give '
      '--num_seeds=3 instead']


def test_the_seeds_table_of_a_language_model_says_validation_bits_per_byte(tmp_path):
  """From finished variants of the GPT config: its headline and its jump at growth are both
  validation bits per byte (a jump of 3.2 - 3.0 bits at the first growth), and the speedup over
  last-cycle is the time to reach its final validation bits per byte (tests/test_speedup.py): its
  seed 0 ends at 2.4 after 16 s, which neither other run reaches; its seed 1 at 2.6 after 16 s,
  which first-cycle reaches at 4 s and multi-level at 7.2 s (3.0 at 4 s, 2.5 at 8 s)."""
  gpt, key = os.path.join(ROOT, 'configs', 'pystdlib_gpt.py'), report.HEADLINES['language_model'].key
  grown = [list(s) for s in cli.load_config(gpt, []).cycles.stage_sizes]
  chains = {'first-cycle': grown[:1] * 3, 'last-cycle': grown[-1:] * 3, 'multi-level': grown}
  for name, sizes in chains.items():
    chain = [f'--config.cycles.stage_sizes={tuple(tuple(s) for s in sizes)}'] if name != 'multi-level' else []
    config = cli.load_config(gpt, ['--config.num_seeds=2', *chain])
    os.makedirs(tmp_path / name)
    report.write_json(str(tmp_path / name / 'summary.json'), {
        'name': name, 'task': 'language_model', 'stage_sizes': sizes, 'test_error': 0.5, key: 2.5,
        f'{key}_seeds': [2.4, 2.6], f'{key}_ci95': 1.27, 'train_seconds': 10.0,
        'config': json.loads(config.to_json_best_effort())})
  curves = {'first-cycle': (2.0, [[3.0, 3.0], [2.6, 2.6]]), 'last-cycle': (8.0, [[2.8, 2.8], [2.4, 2.6]]),
            'multi-level': (4.0, [[3.0, 3.0], [2.9, 2.5]])}
  for name, (seconds, losses) in curves.items():
    records = [{'epoch': e, 'epoch_seconds': seconds, 'test_loss': sum(l) / 2, 'seeds': {'test_loss': l}}
               for e, l in enumerate(losses, 1)]
    if name == 'multi-level':
      records[1]['test_loss_at_growth'] = 3.2
    report.write_jsonl(str(tmp_path / name / 'metrics.jsonl'), records)
  out = launch('seeds.py', '--experiment=cycles', f'--config={gpt}', '--num_seeds=2', f'--root={tmp_path}',
               check=True).stdout
  header, _, *rows = out.strip().splitlines()
  assert 'Validation bits per byte (mean ± 95%)' in header and 'Test' not in header
  assert 'Validation bits per byte jump at growth' in header
  assert rows[2].split()[-2] == '+0.2000'
  cells = lambda line: re.split(r'\s{2,}', line)[5:7]  # the columns, two spaces or more apart
  assert cells(header) == ['Speedup (mean ± 95%)', 'Speedup per seed']
  assert cells(rows[0]) == ['4.00 (1 of 2 not reached)', '— 4.00']
  assert cells(rows[1]) == ['1.00 ± 0.00', '1.00 1.00']
  assert cells(rows[2]) == ['2.22 (1 of 2 not reached)', '— 2.22']
  assert rows[4].startswith('Speedup: the stepping seconds last-cycle needs to reach its own final '
                            'validation bits per byte')
  assert rows[5].startswith('Depth not shown: ')


def test_the_widths_comparison_names_each_variants_widths_and_its_speedup_over_wide_and_deep(tmp_path):
  """From finished variants of configs/digits_widen.py (half width for the first cycle): each row
  names its blocks and widths over the cycles; the speedup is over the wide and deep model trained
  alone, whose seeds end at test losses 0.5 and 0.6 after 16 s. Both-grown reaches them at 4 s and
  3.2 s (0.9 at 2 s, then 0.5 and 0.4 at 4 s), depth-grown seed 0 at 8 s and seed 1 never (0.7).
  Both and narrow (depth growth at half width) train alike in the first cycle; after the widening
  both's training losses are 0.1 above and 0.05 below narrow's."""
  path = os.path.join(ROOT, 'configs', 'digits_widen.py')
  deep, half, full = ((8, 8, 8),) * 3, [{'widths': [8, 16, 32]}], [{'widths': [16, 32, 64]}]
  variants = {  # name: (its overrides, its cycles' widths, epoch seconds, seed 0's and 1's test losses)
      'wide-and-deep': ([f'--config.cycles.stage_sizes={deep}', '--config.cycles.widths=()'],
                        full * 3, 8.0, [[1.0, 1.0], [0.5, 0.6]]),
      'depth': (['--config.cycles.widths=()'], full * 3, 4.0, [[0.9, 0.9], [0.5, 0.7]]),
      'width': ([f'--config.cycles.stage_sizes={deep}'], half + full * 2, 6.0, [[0.9, 0.9], [0.45, 0.6]]),
      'both': ([], half + full * 2, 2.0, [[0.9, 0.9], [0.5, 0.4]]),
      'narrow': ([f'--config.cycles.widths={(half[0],) * 3}'], half * 3, 1.0, [[0.9, 0.9], [0.7, 0.8]])}
  train = {'both': [[1.2, 1.3], [0.8, 0.7]], 'narrow': [[1.2, 1.3], [0.7, 0.75]]}  # [epoch][seed]
  for name, (overrides, widths, seconds, losses) in variants.items():
    config = cli.load_config(path, ['--config.num_seeds=2', *overrides])
    os.makedirs(tmp_path / name)
    report.write_json(str(tmp_path / name / 'summary.json'), {
        'name': name, 'task': 'image_classification', 'test_error': 0.05, 'test_error_seeds': [0.04, 0.06],
        'test_error_ci95': 0.127, 'train_seconds': 2 * seconds, 'cycle_widths': widths,
        'stage_sizes': [list(s) for s in config.cycles.stage_sizes],
        'config': json.loads(config.to_json_best_effort())})
    records = [{'epoch': e, 'cycle': e - 1, 'widths': widths[e - 1], 'epoch_seconds': seconds,
                'test_loss': sum(l) / 2, 'seeds': {'test_loss': l, 'train_loss': t}}
               for e, l, t in zip((1, 2), losses, train.get(name, [[1.0, 1.0]] * 2))]
    records[1]['test_loss_at_growth'] = 0.95
    report.write_jsonl(str(tmp_path / name / 'metrics.jsonl'), records)
  out = launch('seeds.py', '--experiment=widths', f'--config={path}', '--num_seeds=2', f'--root={tmp_path}',
               check=True).stdout
  # At config.model's widths, wide-and-deep and depth are the cycles comparison's last-cycle and
  # multi-level configs (the name aside), so a finished run of those is reused.
  for name, other in (('wide-and-deep', [f'--config.cycles.stage_sizes={deep}']), ('depth', [])):
    plain = cli.load_config(os.path.join(ROOT, 'configs', 'digits.py'), ['--config.num_seeds=2', *other])
    assert config_lib.stale(report.read_summary(str(tmp_path / name / 'summary.json')), plain) == []
  header, _, *rows = out.strip().splitlines()
  cells = lambda line: re.split(r'\s{2,}', line)  # the columns, two spaces or more apart
  assert cells(header) == ['Variant', 'Blocks', 'Widths', 'Seeds', 'Test error (mean ± 95%)', 'Per seed',
                           'Speedup (mean ± 95%)', 'Speedup per seed', 'Test loss jump at growth', 'Stepping s']
  assert [cells(r)[:4] for r in rows[:5]] == [
      ['wide-and-deep', '8-8-8', '16-32-64', '2'], ['depth', '2-2-2 to 8-8-8', '16-32-64', '2'],
      ['width', '8-8-8', '8-16-32 to 16-32-64', '2'], ['both', '2-2-2 to 8-8-8', '8-16-32 to 16-32-64', '2'],
      ['narrow', '2-2-2 to 8-8-8', '8-16-32', '2']]
  assert [cells(r)[7] for r in rows[:5]] == ['1.00 1.00', '2.00 —', '1.41 1.33', '4.00 5.00', '— —']
  assert cells(rows[1])[6] == '2.00 (1 of 2 not reached)' and cells(rows[3])[6].startswith('4.50 ± ')
  assert rows[6].startswith('Speedup: the stepping seconds wide-and-deep needs to reach its own final test loss')
  assert rows[7] == ('Widened at epoch 2 (cycle 2): training loss of both less narrow, mean (per seed): '
                     'epoch 2: +0.0250 (+0.1000 -0.0500). Before it they differ by at most 0.0e+00.')
  assert len(rows) == 8  # no depth verdict: there is no first-cycle model


def test_the_widths_comparison_refuses_a_plan_that_never_widens(tmp_path):
  run = launch('seeds.py', '--experiment=widths', '--config=configs/digits.py', '--num_seeds=2',
               f'--root={tmp_path}')
  assert run.returncode == 2 and run.stderr.strip() == (
      'seeds.py: error: --config=configs/digits.py: its plan never widens; --experiment=widths needs one '
      'whose config.cycles.widths grow, such as configs/digits_widen.py')


def test_the_multi_gpu_launcher_runs_the_python_it_is_given(tmp_path):
  """$PYTHON, where the first python on PATH is not the one mlres is installed in."""
  fake = tmp_path / 'python'
  fake.write_text('#!/bin/sh\necho "$0 $*"\n')
  fake.chmod(0o755)
  run = subprocess.run(['bash', 'launch/multi_gpu.sh', 'c.py', 'w', '--config.seed=1'], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env={**os.environ, 'PYTHON': str(fake)})
  assert run.stdout == f'{fake} -m mlres.main --config=c.py --workdir=w --config.seed=1\n', run.stderr
