#!/usr/bin/env bash
# `make bench`: the in-house benchmarks, printed to stdout. Usage: tools/bench.sh BUILD_DIR
# The side-by-side comparison with llama.cpp is `make bench-llamacpp` (tools/bench/compare_llamacpp.py).
set -euo pipefail
build="${1:-build}"
reflect="$build/tools/reflect/reflect"
models="${MODELS_DIR:-models}"

echo "== tokenizer (single thread) =="
"$build/tools/tokenizer_bench" --benchmark_min_time=1

echo "== scheduler: planning one step =="
"$build/tools/scheduler_bench"

echo "== CPU kernels =="
"$build/tools/cpu_kernels_bench" --benchmark_min_time=0.5

echo "== engine, tiny preset (the demo model, bf16) =="
"$reflect" bench --model "$models/tiny" --batch-sizes 1,8,32 --prompt-tokens 128 --decode-tokens 32

if [ ! -f "$models/1b/config.json" ]; then
  "$reflect" mkmodel --preset 1b --dtype bf16 --out "$models/1b"
fi
echo "== engine, 1b preset (bf16) =="
"$reflect" bench --model "$models/1b" --batch-sizes 1,8,32 --prompt-tokens 128 --decode-tokens 16
