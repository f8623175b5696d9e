"""python -m mlres.bench on a CPU: the trainer's steps timed, ratios beside the theory, bad flags."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlres import bench, data, schedules, train
from mlres import config as config_lib

from conftest import ROOT


STEPS = 4  # timed per row


def tiny_gpt(num_seeds=1):
  """The GPT config's last-cycle baseline at width 32, 4 heads, MLP 128, 2 blocks, context 16, batch 4."""
  c = config_lib.gpt('last')
  c.cycles.stage_sizes = ((2,),) * len(c.cycles.epochs)
  c.model.update(dict(width=32, num_heads=4, mlp_dim=128, context=16))
  c.batch_size, c.num_seeds = 4, num_seeds
  return c


@pytest.fixture(scope='module')
def result():
  """res14 shrinks to res50i's first model under --quick: its row must not be timed twice."""
  return bench.run(chains=('res50i', 'res14'), quick=True, full=True, steps=STEPS, full_epochs=4)


@pytest.mark.slow
def test_one_row_per_architecture_with_consistent_numbers(result):
  assert [r['stage_sizes'] for r in result['rows']] == [[2, 2], [4, 4], [8, 8]]
  assert [r['model'] for r in result['rows']] == ['ResNet-10', 'ResNet-18', 'ResNet-34']
  for r in result['rows']:
    assert r['compile_seconds'] > 0 and r['step_ms'] > 0 and r['timed_steps'] >= STEPS
    assert r['images_per_second'] == pytest.approx(16 / r['step_ms'] * 1e3)
    assert r['steps_per_dispatch'] == train.steps_per_dispatch(8, 1)  # the trainer's rule on a CPU
    assert r['dtype'] == 'bfloat16' and r['batch'] == 16 and r['widths'] == [4, 8]
  assert result['rows'][2]['num_params'] == 11_768  # 8-8 blocks of widths 4-8, 4 classes


@pytest.mark.slow
def test_the_multi_level_chain_gets_its_ratio_beside_the_theory(result):
  ratio, = result['ratios']  # res14 keeps one architecture: no ratio
  assert ratio['chain'] == 'res50i' and ratio['epochs'] == [6, 5, 5]
  assert ratio['theory'] == schedules.relative_cost(ratio['stage_sizes'], ratio['epochs']) == 0.5625
  ms = [r['step_ms'] for r in result['rows']]
  assert ratio['measured'] == pytest.approx((6 * ms[0] + 5 * ms[1] + 5 * ms[2]) / (16 * ms[2]))
  assert 0 < ratio['measured'] < 1
  assert ratio['full_epochs'] == list(bench.scale_epochs((6, 5, 5), 4)) == [2, 1, 1]
  for what in ('wall', 'train'):  # --full trained both protocols end to end, 4 epochs each
    multi, last = ratio[f'multi_{what}_seconds'], ratio[f'last_{what}_seconds']
    assert multi > 0 and last > 0 and ratio[f'{what}_ratio'] == pytest.approx(multi / last)
  for run in ('multi', 'last'):
    assert 0 <= ratio[f'{run}_compile_wait_seconds'] <= ratio[f'{run}_compile_seconds']


@pytest.mark.slow
def test_the_vit_chain_is_timed_with_its_ratio():
  result = bench.run(chains=('vit12i',), dataset='cifar100', quick=True, steps=4, warmup=1)
  assert [(r['model'], r['stage_sizes'], r['widths']) for r in result['rows']] == [
      ('ViT-1', [1], [8, 2, 16, 2]), ('ViT-2', [2], [8, 2, 16, 2]), ('ViT-4', [4], [8, 2, 16, 2])]
  ratio, = result['ratios']
  assert ratio['theory'] == schedules.relative_cost([[1], [2], [4]], [6, 5, 5]) == 0.5625
  assert 0 < ratio['measured'] < 1
  assert 'ViT-4' in bench.table(result)


@pytest.mark.slow
def test_the_gpt_chain_is_timed_in_tokens_with_its_ratio():
  """On pystdlib's bytes whatever --dataset says: 16 windows of 8 tokens per step."""
  result = bench.run(chains=('gpt12i',), dataset='stl10', quick=True, steps=4, warmup=1)
  assert [(r['model'], r['stage_sizes'], r['widths']) for r in result['rows']] == [
      ('GPT-1', [1], [8, 2, 16, 8]), ('GPT-2', [2], [8, 2, 16, 8]), ('GPT-4', [4], [8, 2, 16, 8])]
  for r in result['rows']:
    assert 'images_per_second' not in r
    assert r['tokens_per_second'] == pytest.approx(16 * 8 / r['step_ms'] * 1e3)
  ratio, = result['ratios']
  assert ratio['theory'] == schedules.relative_cost([[1], [2], [4]], [6, 5, 5]) == 0.5625
  ms = [r['step_ms'] for r in result['rows']]
  assert ratio['measured'] == pytest.approx((6 * ms[0] + 5 * ms[1] + 5 * ms[2]) / (16 * ms[2]))
  text = bench.table(result)
  assert 'GPT-4' in text and 'Tokens/s' in text and 'Images/s' not in text


@pytest.mark.parametrize('chains, names', [
    (('res122i', 'res50i', 'wres50i'), ['ResNet-34-i (shrunk from ResNet-122-i, ResNet-50-i, WResNet-50-i)']),
    (('res14', 'res50i'), ['ResNet-10 (shrunk from ResNet-14)', 'ResNet-34-i (shrunk from ResNet-50-i)']),
    (('vit12i',), ['ViT-4-i (shrunk from ViT-12-i)']), (('gpt3',), ['GPT-1 (shrunk from GPT-3)'])])
def test_quick_names_each_shrunk_chain_for_what_it_is_and_times_it_once(chains, names):
  """res122i and res50i shrink alike: one chain, not two rows of one model under two names."""
  configs = bench.distinct_chains('cifar10', chains, ('bfloat16',), quick=True)
  assert [c.name for c in configs.values()] == names
  assert [c.name for c in bench.distinct_chains('cifar10', chains, ('bfloat16',)).values()] == [
      bench.chain_config('cifar10', key, 'bfloat16').name for key in chains]  # full size: the paper's


@pytest.mark.slow
def test_the_document_and_its_table(result):
  assert json.loads(json.dumps(result)) == result
  assert {'device', 'platform', 'device_count', 'jax_version', 'date', 'xla_flags'} <= set(result)
  assert result['flags']['chains'] == ['res50i', 'res14'] and result['flags']['batch'] == 16
  assert result['peer'] == [] and result['scaling'] == []  # one device: nothing to scale
  text = bench.table(result)
  for blocks in ('2-2 ', '4-4 ', '8-8 ', '2-2 to 8-8', '0.5625', 'Stepping ratio', '2/1/1'):
    assert blocks in text


@pytest.mark.parametrize('epochs, total, expected', [
    ((60, 50, 50), 160, (60, 50, 50)), ((60, 50, 50), 16, (6, 5, 5)), ((60, 50, 50), 3, (1, 1, 1)),
    ((1, 1), 7, (4, 3)), ((5,), 1, (1,)),
    ((100, 1, 1), 10, (8, 1, 1))])  # every cycle keeps an epoch, taken from the largest
def test_scaled_epochs_keep_the_proportions_and_add_up(epochs, total, expected):
  assert bench.scale_epochs(epochs, total) == expected


@pytest.mark.parametrize('kwargs, message', [
    (dict(chains=('res50i', 'res51')), '--chains=res50i,res51: each must be one of res14, res50'),
    (dict(dtypes=('float16',)), '--dtype=float16: each must be one of float32, bfloat16'),
    (dict(batch=0), '--batch=0: must be a positive integer'),
    (dict(steps=-5), '--steps=-5: must be a positive integer'),
    (dict(warmup=-1), '--warmup=-1: must be a non-negative integer'),
    (dict(dataset='mnist'), '--dataset=mnist: must be one of cifar10, cifar100, stl10'),
    (dict(chains=('vit12i',), dataset='stl10'), '--dataset=stl10: the ViT chains are for cifar10, cifar100'),
    (dict(peer='jax'), "--peer=jax: must be '' or 'torch'"),
    (dict(chains=('res50i', 'vit12i'), peer='torch'),
     '--peer=torch: has no ViT (vit12i); it times the ResNet and GPT chains'),
    (dict(config=tiny_gpt(num_seeds=2), peer='torch'),
     '--peer=torch: trains one seed, not config.num_seeds=2 at once'),
    (dict(batch=50_001), '--batch=50001: must not exceed the 50000 training images'),
    (dict(full_epochs=16), '--epochs=16: only --full trains whole protocols; add --full'),
    (dict(quick=True, full=True, full_epochs=2), '--epochs=2: must give each of the 3 cycles an epoch'),
    (dict(quick=True, full=True, full_epochs=0), '--epochs=0: must give each of the 3 cycles an epoch'),
    (dict(fsdp=(3,)), '--fsdp=3: 3 is not a divisor of the 1 devices'),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, message):
  with pytest.raises(bench.BenchError) as e:
    bench.run(**kwargs)
  assert str(e.value).startswith(message)


def test_the_fsdp_rows_give_the_state_s_bytes_on_each_device():
  """One device, so fsdp 1: every byte of the state (AdamW's params, mu and nu at least) on it, whole.
  The split over 8 devices is tests/test_sharding.py's."""
  c = tiny_gpt()
  row, = bench.fsdp_scaling(c, data.load(c), [1], steps=2, warmup=0)
  assert row['fsdp'] == 1 and row['step_ms'] > 0
  assert row['state_bytes'] == row['state_bytes_per_device'] == row['replicated_bytes']
  assert row['state_bytes'] >= 3 * 4 * row['num_params']


@pytest.mark.skipif(importlib.util.find_spec('torch') is not None, reason='PyTorch is installed')
def test_the_torch_peer_without_torch_says_so():
  with pytest.raises(bench.BenchError, match=r'--peer=torch: needs PyTorch, which is not installed '
                                              r'\(pip install -e "\.\[peer\]"\)'):
    bench.run(quick=True, peer='torch')


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
@pytest.mark.slow
def test_the_torch_peer_is_the_same_network(result, monkeypatch):
  """Eager only: torch.compile takes about a minute on this CPU."""
  import torch
  monkeypatch.delattr(torch, 'compile')
  config = bench.chain_config('cifar10', 'res50i', 'bfloat16', quick=True)
  jax_row = result['rows'][-1]
  mine, row = bench.torch_peer(config, data.load(config), (8, 8), 5, 1, jax_row)
  assert mine == {**jax_row, 'implementation': f'JAX {bench.jax.__version__}', 'jax_speedup': 1.0}
  assert row['implementation'] == 'PyTorch eager' and row['num_params'] == jax_row['num_params']
  assert row['images_per_second'] == pytest.approx(16 / row['step_ms'] * 1e3)
  assert row['jax_speedup'] == pytest.approx(row['step_ms'] / jax_row['step_ms'])


@pytest.mark.slow
def test_the_torch_gpt_peer_is_the_same_decoder():
  """The flax GPT's weights copied into the PyTorch decoder give the same logits."""
  torch = pytest.importorskip('torch')
  import jax
  from mlres.gpt import GPT
  from mlres.torch_peer import Decoder
  model, net = GPT(2, 32, 4, 128, 16, h=0.5), Decoder(2, 32, 4, 128, 16, 256, h=0.5)
  tokens = np.random.default_rng(0).integers(0, 256, (4, 16))
  variables = model.init(jax.random.key(0), tokens)
  p = jax.tree.map(lambda x: torch.from_numpy(np.array(x)), variables['params'])
  assert sum(x.numel() for x in jax.tree.leaves(p)) == sum(x.numel() for x in net.parameters())

  def dense(linear, d):  # flax's (in, ...) kernels, torch's (out, in) weights
    linear.weight.data, linear.bias.data = d['kernel'].reshape(linear.in_features, -1).T, d['bias'].flatten()

  def norm(layer, d):
    layer.weight.data, layer.bias.data = d['scale'], d['bias']

  net.embed.weight.data, net.pos_embed.data = p['embed']['embedding'], p['pos_embed']
  for block, d in zip(net.blocks, (p['decoder']['block0'], p['decoder']['block1'])):
    qkv = [d['attn'][k] for k in ('query', 'key', 'value')]
    block.qkv.weight.data = torch.cat([a['kernel'].reshape(32, 32).T for a in qkv])
    block.qkv.bias.data = torch.cat([a['bias'].flatten() for a in qkv])
    for name in ('out', 'mlp1', 'mlp2'):
      dense(getattr(block, name), d['attn']['out'] if name == 'out' else d[name])
    norm(block.norm1, d['norm1']), norm(block.norm2, d['norm2'])
  norm(net.norm, p['norm']), dense(net.head, p['head'])
  with torch.no_grad():
    logits = net(torch.from_numpy(tokens)).numpy()
  np.testing.assert_allclose(logits, model.apply(variables, tokens), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_the_torch_gpt_peer_times_the_same_step_beside_jax(monkeypatch):
  """Eager only (torch.compile takes minutes on this CPU): the same parameters, 4 windows of 16
  tokens per step, torch on as many threads as this process has CPUs."""
  torch = pytest.importorskip('torch')
  monkeypatch.delattr(torch, 'compile')
  result = bench.run(config=tiny_gpt(), peer='torch', steps=2, warmup=1)
  row, = result['rows']
  mine, peer = result['peer']
  assert mine['implementation'].startswith('JAX') and mine['step_ms'] == row['step_ms']
  assert peer['implementation'] == 'PyTorch eager' and peer['num_params'] == row['num_params']
  assert (peer['stage_sizes'], peer['widths'], peer['batch']) == ([2], [32, 4, 128, 16], 4)
  assert peer['tokens_per_second'] == pytest.approx(4 * 16 / peer['step_ms'] * 1e3)
  assert peer['jax_speedup'] == pytest.approx(peer['step_ms'] / row['step_ms'])
  assert peer['torch_threads'] == len(os.sched_getaffinity(0))
  assert result['flags']['config']['model']['width'] == 32
  text = bench.table(result).split('\n\n')[-1]
  assert 'Tokens/s' in text and 'Images/s' not in text and 'PyTorch eager' in text


@pytest.mark.slow
@pytest.mark.parametrize('flag, message', [
    ('--dtype=fp8', '--dtype=fp8: each must be one of float32, bfloat16'),
    ('--seeds=1,a', '--seeds=1,a: each must be a positive integer'),
    ('--out=/no/such/folder/bench.json', '--out=/no/such/folder/bench.json: /no/such/folder is not a '
                                         'writable folder'),
    ('--config=configs/pystdlib_gpt.py', '--quick: not with --config, whose fields say what is '
                                         'timed; override them (--config.batch_size=32, '
                                         '--config.model.dtype=bfloat16, ...)'),
], ids=['dtype', 'seeds', 'out', 'config'])
def test_the_command_line_exits_2_with_one_line(flag, message):
  run = subprocess.run([sys.executable, '-m', 'mlres.bench', '--quick', flag], cwd=ROOT,
                       env={**os.environ, 'PYTHONPATH': ROOT}, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 2 and run.stdout == ''
  assert run.stderr.strip() == f'error: {message}'


@pytest.mark.slow
def test_a_plan_that_widens_is_refused_in_one_line():
  run = subprocess.run([sys.executable, '-m', 'mlres.bench', '--config=configs/digits_widen.py'], cwd=ROOT,
                       env={**os.environ, 'PYTHONPATH': ROOT}, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and run.stdout == ''
  assert run.stderr.strip() == ('error: --config=configs/digits_widen.py: its plan widens '
                                '(config.cycles.widths), and the bench times plans that only deepen; '
                                'time each width as a plan of its own (--config.cycles.widths=() '
                                '--config.model.width=...)')
