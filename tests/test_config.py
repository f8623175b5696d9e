"""Every shipped config is valid and says what the paper did; bad fields fail with one line."""
import pathlib

import pytest

from mlres import cli
from mlres import config as config_lib

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / 'configs').glob('*.py'))
DIGITS = str(CONFIGS[0].parent / 'digits.py')


def load(path):
  return cli.load_config(str(path))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_every_config_is_valid(path):
  config_lib.validate(load(path))


def test_the_papers_grid_is_complete():
  names = {p.stem for p in CONFIGS}
  for dataset in ('cifar10', 'cifar100', 'stl10'):
    for arch in ('res', 'wres'):
      for depth in ('14', '50', '50i', '32', '122', '122i'):
        assert f'{dataset}_{arch}{depth}' in names


def test_cifar100_res122i_is_the_papers_protocol():
  c = load(pathlib.Path(__file__).parent.parent / 'configs' / 'cifar100_res122i.py')
  assert c.name == 'ResNet-122-i' and c.dataset == 'cifar100'
  assert tuple(map(tuple, c.cycles.stage_sizes)) == ((5, 5, 5), (10, 10, 10), (20, 20, 20))
  assert tuple(c.cycles.epochs) == (60, 50, 50) and c.num_epochs == 160
  assert c.batch_size == 100 and c.augment.pad == 4 and c.augment.flip
  o = c.optimizer
  assert (o.eta_max, o.eta_min, o.momentum, o.weight_decay) == (0.5, 0.001, 0.9, 2e-4)
  assert (o.warmup_steps, o.clip_norm) == (0, 0.0)  # no warmup, no clipping: the paper's protocol
  assert tuple(c.model.widths) == (16, 32, 64) and c.model.h == 1.0


def test_stl10_and_wide_resnets():
  c = config_lib.paper('stl10', 'wres50')
  assert c.batch_size == 32 and c.augment.pad == 12
  assert tuple(c.model.widths) == (32, 64, 128)
  assert tuple(map(tuple, c.cycles.stage_sizes)) == ((8, 8, 8),) * 3


def bad(field, value):
  c = config_lib.default()
  c.update_from_flattened_dict({field: value})
  return c


@pytest.mark.parametrize('field, value, message', [
    ('cycles.stage_sizes', ((2, 0, 2), (4, 0, 4), (8, 0, 8)), r'stage_sizes\[0\]'),
    ('cycles.stage_sizes', ((2, 2, 2), (4, 4, 4), (12, 12, 12)), 'double it'),
    ('cycles.stage_sizes', ((2, 1, 1), (4, 2, 2), (8, 4, 4)), 'cannot be interpolated'),
    ('cycles.epochs', (12, 10), 'one entry per cycle'),
    ('cycles.epochs', (12, 10, 11), 'add up to num_epochs=32'),
    ('cycles.epochs', (32, 0, 0), r'epochs\[1\]'),
    ('cycles.stage_sizes', (2, 2, 2), r'^config.cycles.stage_sizes=\(2, 2, 2\): must hold one tuple'),
    ('model.widths', (16, 32), r'^config.model.widths=\(16, 32\): .*one width per stage'),
    ('model.h', 0.0, r'^config.model.h=0.0: the explicit step size'),
    ('synthetic.num_test', 0, r'^config.synthetic.num_test=0: must be a positive integer'),
    ('synthetic.channels', -1, r'^config.synthetic.channels=-1'),
    ('synthetic.num_classes', 1, r'^config.synthetic.num_classes=1: must be at least 2'),
    ('optimizer.eta_max', float('inf'), 'eta_max=inf: must be a positive finite number'),
    ('optimizer.weight_decay', float('inf'), 'weight_decay=inf'),
    ('model.dtype', 'float16', 'model.dtype'),
    ('dataset', 'imagenet', "dataset='imagenet'"),
    ('batch_size', 0, 'batch_size=0'),
    ('num_seeds', 0, 'num_seeds=0: must be a positive integer'),
    ('optimizer.eta_max', -0.1, 'eta_max'),
    ('optimizer.eta_min', 0.9, 'eta_min=0.9'),
    ('optimizer.momentum_at_interpolation', 'zero', 'momentum_at_interpolation'),
    ('augment.pad', -1, 'augment.pad=-1'),
    ('checkpoint_every_epochs', -2, 'checkpoint_every_epochs=-2'),
    ('compile_ahead', 'yes', "compile_ahead='yes': must be one of auto, on, off"),
    ('optimizer.clip_norm', -1.0, r'^config.optimizer.clip_norm=-1.0: must be a non-negative finite number$'),
    ('optimizer.clip_norm', float('nan'), r'^config.optimizer.clip_norm=nan: must be a non-negative finite'),
    ('optimizer.clip_norm', float('inf'), r'^config.optimizer.clip_norm=inf: must be a non-negative finite'),
    ('optimizer.warmup_steps', -1, r'^config.optimizer.warmup_steps=-1: must be a non-negative integer$'),
])
def test_bad_fields_name_the_field(field, value, message):
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.validate(bad(field, value))
  assert '\n' not in str(error.value)


def test_unknown_paper_rows_are_refused():
  with pytest.raises(config_lib.ConfigError, match='res99'):
    config_lib.paper('cifar10', 'res99')


def test_a_launcher_reads_a_config_file_and_overrides_as_the_trainer_does(tmp_path):
  config = cli.load_config(DIGITS, [
      '--config.name=1 2', '--config.optimizer.eta_max=.2', '--config.cycles.epochs=(10,10)',
      '--config.cycles.epochs=12'])  # config_flags joins a tuple field given twice
  assert (config.name, config.optimizer.eta_max, config.cycles.epochs) == ('1 2', 0.2, (10, 10, 12))
  for overrides, message in ((['--config.nope=1'], 'no such config field: nope;'),
                             (['--config.batch_size=abc'], 'batch_size=abc: ')):
    with pytest.raises(config_lib.ConfigError, match=message):
      cli.load_config(DIGITS, overrides)
  with pytest.raises(config_lib.ConfigError, match='cannot load the config file: .*Is a directory'):
    cli.load_config(str(tmp_path))
  (tmp_path / 'three.py').write_text('def get_config():\n  return 3\n')
  with pytest.raises(config_lib.ConfigError, match="returned 'int', not a ConfigDict"):
    cli.load_config(str(tmp_path / 'three.py'))


def test_the_compilation_cache_follows_jax_s_own_variable(monkeypatch):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/somewhere/jax')
  assert config_lib.default().compilation_cache == '/somewhere/jax'
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  assert config_lib.default().compilation_cache == '~/.cache/mlres/jax'
