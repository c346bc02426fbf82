#!/usr/bin/env bash
# Builds what the GPU machine needs (it has no Rust toolchain) into gpu-kit/ (git-ignored):
# the release binary, the cuda_parity test binary, and the MNIST files for the genotype check.
# Then, with the device tool: carry ["gpu-kit"], command "bash benches/gpu/run.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
test_bin=$(cargo test --release --test cuda_parity --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda_parity" and m.get("executable"):
        print(m["executable"])')
rm -rf gpu-kit && mkdir -p gpu-kit/data/mnist
# Stripped: the device tool carries at most 64 MiB.
strip -o gpu-kit/darts target/release/darts
strip -o gpu-kit/cuda_parity "$test_bin"
data=${DARTS_DATA_DIR:-../shared/datasets}
cp "$data"/mnist/* gpu-kit/data/mnist/
du -sh gpu-kit
