#!/usr/bin/env bash
# The one GPU run (device tool, after benches/gpu/prepare.sh): checks and times everything and
# leaves the results in $OUT (default gpu-out/). Steps, each with its own time limit so that
# one failure does not eat the session:
#   1. environment: GPU, driver, libraries darts loads
#   2. cuda_parity on the real GPU (every kernel vs its CPU twin)
#   3. darts bench search --device cuda: config S (C=16, 8 cells, 32x32x3), batch 64 and 256,
#      first and second order, then the same steps in PyTorch eager + cuDNN (darts_torch.py)
#   4. a short MNIST search on the GPU and on the CPU with the same seed: same genotype?
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
kit=gpu-kit
# The toolkit's libraries first (never a stubs directory), then torch's wheels as a fallback.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export DARTS_DATA_DIR=$PWD/$kit/data
export DARTS_BIN=$PWD/$kit/darts
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/log.txt"; }

step "1. environment"
{ nvidia-smi; nvcc --version; python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'; } >"$OUT/env.txt" 2>&1
head -20 "$OUT/env.txt"

step "2. cuda_parity on the GPU"
DARTS_PARITY_BACKEND=driver timeout 240 ./$kit/cuda_parity --test-threads=1 2>&1 | tee "$OUT/parity.txt" | tail -25

step "3. search step: darts vs PyTorch"
for b in 64 256; do
  for o in 1 2; do
    timeout 120 ./$kit/darts bench search --device cuda --config s --batch $b --order $o --reps 5 --json \
      2>>"$OUT/bench-stderr.txt" | tail -1 | tee -a "$OUT/bench-darts.jsonl"
  done
done
DARTS_OP_TIMES=1 timeout 60 ./$kit/darts bench search --device cuda --config s --order 1 --reps 3 \
  >"$OUT/profile.txt" 2>&1
timeout 200 python3 benches/gpu/darts_torch.py --batch 64 256 --order 1 2 --reps 5 | tee "$OUT/bench-torch.jsonl"

step "4. same genotype on GPU and CPU"
args="search --dataset mnist --channels 4 --layers 3 --batch-size 32 --epochs 1 --max-steps 30 --seed 3 --json"
timeout 120 ./$kit/darts $args --device cuda 2>"$OUT/search-gpu.err" | tail -1 >"$OUT/search-gpu.json"
timeout 120 ./$kit/darts $args --device cpu 2>"$OUT/search-cpu.err" | tail -1 >"$OUT/search-cpu.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
g, c = (json.load(open(f"{out}/search-{d}.json")) for d in ("gpu", "cpu"))
print("gpu:", g["genotype_text"]); print("cpu:", c["genotype_text"])
print("same genotype:", g["genotype"] == c["genotype"], "| val acc gpu", g["val_accuracy"], "cpu", c["val_accuracy"])
PY
step "done"
