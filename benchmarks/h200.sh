#!/usr/bin/env bash
# The GPU benchmark in one call of a few minutes, for a session lent an H200 (device tool):
#   run(command='bash benchmarks/h200.sh', carry=['.whl'], timeout_s=540)
# Needs ml_collections as a wheel in .whl/ (the machine has JAX, flax, optax, orbax, absl; the
# benchmark reads no tfds data). Results land in $OUT (or benchmarks/) as JSON and text.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
out=${OUT:-benchmarks}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$out/gpu.txt"
# Step times, ratios and PyTorch (if installed) for both chains, bf16 and fp32, cold compiles.
python3 -m mlres.bench --chains=res122i,res50i --dtype=bfloat16,float32 --compilation_cache=/tmp/mlres-jax \
  --out="$out/bench-h200.json" 2>&1 | tee "$out/bench-h200.txt"
# Compiles again with the cache warm; seeds at once; one full protocol end to end.
python3 -m mlres.bench --chains=res50i --seeds=1,2,4,8,10,16 --compilation_cache=/tmp/mlres-jax \
  --out="$out/bench-h200-seeds.json" 2>&1 | tee "$out/bench-h200-seeds.txt"
python3 -m mlres.bench --chains=res122i --full --compilation_cache=/tmp/mlres-jax \
  --out="$out/bench-h200-full.json" 2>&1 | tee "$out/bench-h200-full.txt"
