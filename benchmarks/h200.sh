#!/usr/bin/env bash
# The GPU measurements for a session lent an H200 through the device tool, in two calls that fit
# its 15 minutes of device time (a start costs 1-2 of them). Make the second call as soon as the
# first returns, while the machine is still warm:
#   run(command='bash benchmarks/h200.sh full', carry=['.whl'], timeout_s=600)
#   run(command='bash benchmarks/h200.sh steps', carry=['.whl'], timeout_s=<what is left, less 30>)
# full:  the 160-epoch ResNet-122-i protocol, bf16, trained end to end by `python -m mlres.main`
#        on synthetic CIFAR-shaped data (about 8 minutes if the targets hold; stopped at 500 s);
#        metrics.jsonl is copied out every 15 s, so a run cut short still says how far it got and
#        how fast.
# steps: mlres.bench, most important first; each command writes its JSON when it ends, so a call
#        cut short keeps what finished.
# extra: what a later session may add: the ViT chain, the GPT chain, both protocols end to end at
# 16 epochs, PyTorch beside.
# Needs ml_collections as a wheel in .whl/ (ignored by git; the machine has JAX, flax, optax, orbax,
# absl and torch): python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#   --implementation cp --platform manylinux2014_x86_64 -d .whl ml_collections
# Results land in $OUT (at most 8 files come back), or in benchmarks/h200-out elsewhere.
set -uo pipefail
phase=${1:-}
case $phase in full|steps|extra) ;; *) echo "usage: bash benchmarks/h200.sh full|steps|extra" >&2; exit 2;; esac
# A pure-Python wheel imports straight from its zip file: no pip needed there.
wheels=$(ls "$PWD"/.whl/*.whl 2>/dev/null | tr '\n' ':')
export PYTHONPATH=$PWD:$wheels${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -c 'import ml_collections' || { echo "h200.sh: no ml_collections: download its wheel into .whl/ and carry it (see the top of this script)" >&2; exit 3; }
out=${OUT:-benchmarks/h200-out}
mkdir -p "$out"
log=$out/$phase.txt
# JAX's compilation cache, one per phase: `full` and `steps` compile the same programs, and each
# phase's compile times must be cold ones (`steps` then times a warm start on purpose).
cache=/tmp/mlres-jax-$phase
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$log"
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())' | tee -a "$log"

bench() {  # bench NAME FLAGS...: one mlres.bench command, its table in the log, its JSON in $out/NAME.json
  local name=$1; shift
  echo "== $(date -u +%T) python -m mlres.bench $* ${XLA_FLAGS:+(XLA_FLAGS=$XLA_FLAGS)}" | tee -a "$log"
  python3 -m mlres.bench --compilation_cache=$cache --out="$out/$name.json" "$@" 2>&1 | tee -a "$log"
}

case $phase in
full)
  work=/tmp/mlres-full
  rm -rf $work
  # Detached from the output, so that its sleep holds no pipe open after the run.
  (while sleep 15; do cp $work/metrics.jsonl "$out/" 2>/dev/null; done) >/dev/null 2>&1 </dev/null &
  copier=$!
  start=$(date +%s)
  # Stopped by SIGTERM after 500 s, past the 8-minute target (it saves a checkpoint and exits):
  # its files are copied out within the call's 600 s, and `steps` keeps the rest of the lease.
  timeout -k 15 500 python3 -m mlres.main --config=configs/cifar10_res122i.py --workdir=$work \
    --config.dataset=synthetic --config.synthetic.num_train=50000 --config.synthetic.num_test=10000 \
    --config.model.dtype=bfloat16 --config.compilation_cache=$cache 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  echo "end to end, process start to exit: $(( $(date +%s) - start )) s; exit status $status" | tee -a "$log"
  kill $copier
  cp $work/metrics.jsonl $work/summary.json "$out/" 2>/dev/null  # no summary.json if it was stopped
  exit $status
  ;;
steps)
  # Per architecture: cold compile, step ms, images/s; the measured multi-level ratio (targets:
  # ResNet-122 <= 8 ms, ResNet-50 <= 3.5 ms, ratio <= 0.60, compile <= 20 s).
  bench tables --chains=res122i,res50i --steps=300 --warmup=50
  # The same programs again from the compilation cache (target: compile near zero).
  bench warm --chains=res122i --steps=20 --warmup=2
  # Ten seeds at once against one (#8's target: at most 2x one seed's time).
  bench seeds --chains=res50i --seeds=1,10 --steps=100 --warmup=10
  # Levers, each against the bf16, 50-steps-per-dispatch row of the first table.
  bench fp32 --chains=res122 --dtype=float32 --steps=100 --warmup=10
  bench dispatch1 --chains=res122 --steps_per_dispatch=1 --steps=100 --warmup=10
  XLA_FLAGS=--xla_gpu_enable_command_buffer= bench no-command-buffers --chains=res122 --steps=100 --warmup=10
  ;;
extra)
  # The CIFAR ViT chain (3, 6, 12 blocks of ViT-Tiny's width, AdamW) in the same table's form.
  bench vit --chains=vit12i --steps=100 --warmup=10
  # The GPT chain (3, 6, 12 blocks of width 384, context 256, 64 windows, AdamW) on the bytes of the
  # machine's own standard library, in tokens/s: three compiles and 300 steps each, about a minute.
  bench gpt --chains=gpt12i --steps=100 --warmup=10
  # The same chain on the token files of every .py file the machine's Python sees (pysource,
  # configs/pysource_gpt12i.py): written first, then timed as the config trains it.
  python3 -m mlres.data tokens pysource --out="$HOME/.cache/mlres/data/pysource" 2>&1 | tail -3 | tee -a "$log"
  bench pysource --config=configs/pysource_gpt12i.py --steps=100 --warmup=10
  bench protocols --chains=res122i --full --epochs=16 --steps=100 --warmup=10
  bench torch --chains=res122 --peer=torch --steps=100 --warmup=10
  ;;
esac
