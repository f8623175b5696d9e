"""A `--config.*` override of a field that is not there: one line naming it as typed, with
ml_collections' suggestion for a near miss (its own message holds escapes and a line break)."""
import os

import pytest

from mlres import cli
from mlres.config import ConfigError

from conftest import ROOT

DIGITS, DIGITS_VIT = (os.path.join(ROOT, 'configs', f) for f in ('digits.py', 'digits_vit.py'))
EVERY = 'every field is in mlres/config.py'


@pytest.mark.parametrize('config, override, message', [
    (DIGITS, '--config.cycles.operater=zero', 'cycles.operater (did you mean cycles.operator?)'),
    (DIGITS, '--config.model.widthz=(4,8)', 'model.widthz (did you mean model.widths?)'),
    (DIGITS, '--config.optimizer.eta_maxx=0.1', 'optimizer.eta_maxx (did you mean optimizer.eta_max?)'),
    (DIGITS, '--config.texts.steps_per_epoch=3', 'texts (did you mean text?)'),
    (DIGITS_VIT, '--config.model.widths=(4,8)', 'model.widths (did you mean model.width?)'),
    (DIGITS, '--config.no_such_field=1', 'no_such_field'),
], ids=['operater', 'widthz', 'eta_maxx', 'texts', 'widths-of-a-vit', 'no-near-match'])
def test_a_field_that_is_not_there_is_one_clean_line(config, override, message):
  with pytest.raises(ConfigError) as e:
    cli.load_config(config, ['--config.seed=1', override])
  assert str(e.value) == f'no such config field: {message}; {EVERY}'
