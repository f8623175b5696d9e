"""Trains or restores a tests config on this process's devices, for test_sharding.py, and prints
what it found as one JSON line.

    python tests/meshes.py train WORKDIR CONFIG [FIELD=VALUE ...]
    python tests/meshes.py restore WORKDIR CONFIG [FIELD=VALUE ...]

CONFIG is a config of conftest (tiny, tiny_lm), FIELD=VALUE its overrides (mesh.fsdp=4). train runs
mlres's trainer in WORKDIR (resuming what is there) and prints each epoch's train and test losses
per seed and the layout of the state at its last epoch; restore prints the layout of the latest
checkpoint restored onto this run's mesh, and the fingerprints of its values, restored and saved.
"""
import ast
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))
import conftest  # noqa: E402  (after the path)

import mlres.data  # noqa: E402
from mlres import parallel, report, train  # noqa: E402
from mlres.checkpoint import Checkpointer, fingerprint  # noqa: E402


def layout_of(state) -> dict:
  """Each leaf's shape, item size and spec, and each device's bytes of the state."""
  leaves = {jax.tree_util.keystr(path): [list(leaf.shape), leaf.dtype.itemsize,
                                         [a if a is None or isinstance(a, str) else list(a)
                                          for a in leaf.sharding.spec]]
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
  held = {}
  for leaf in jax.tree.leaves(state):
    for shard in leaf.addressable_shards:
      held[shard.device.id] = held.get(shard.device.id, 0) + shard.data.nbytes
  return {'leaves': leaves, 'held': [held[d.id] for d in jax.devices()]}


def main(action: str, workdir: str, name: str, *overrides: str) -> dict:
  fields = {k: ast.literal_eval(v) for k, v in (o.split('=', 1) for o in overrides)}
  config = getattr(conftest, name)(**fields)
  if action == 'restore':
    ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'))
    layout = parallel.Layout.of(config)
    state, meta = ckpt.restore(ckpt.steps()[-1], lambda meta: train.abstract_state(
        mlres.data.load(config), meta, layout))
    ckpt.close()
    return {**layout_of(state), 'fingerprint': fingerprint(state), 'saved': meta['fingerprint']}
  last = {}
  original = train.end_epoch

  def keeping(run, state, *args):
    last['state'] = state
    return original(run, state, *args)
  train.end_epoch = keeping
  train.train_and_evaluate(config, workdir)
  records = report.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  per_seed = lambda r, key: r['seeds'][key] if 'seeds' in r else [r[key]]
  return {**layout_of(last['state']), 'train_loss': [per_seed(r, 'train_loss') for r in records],
          'test_loss': [per_seed(r, 'test_loss') for r in records]}


if __name__ == '__main__':
  print(json.dumps(main(*sys.argv[1:])))
