#!/usr/bin/env bash
# Creates the models the tests share, once per build tree: make_test_models.sh REFLECT_BIN OUT_DIR
# tools/fixtures/make_golden_logits.py runs this same script, so the golden logits in
# tests/fixtures/golden come from exactly these models (mkmodel weights are deterministic).
set -euo pipefail
reflect="$1"
out="$2"
mkdir -p "$out"
make_model() {
  local name="$1"; shift
  if [ ! -f "$out/$name/config.json" ]; then
    "$reflect" mkmodel --out "$out/$name" "$@"
  fi
}
make_model tiny --preset tiny --dtype f32
# A second shape for the golden logits: MQA (1 KV head), head_dim != hidden / heads, tied
# embeddings, different RoPE base and scaling.
make_model gqa-small --layers 3 --hidden 192 --heads 4 --kv_heads 1 --head_dim 64 \
  --intermediate 512 --rope_theta 10000 --rope_scaling_factor 4 --rope_original_max_position 2048 \
  --tie_embeddings=true --dtype f32
make_model tiny-bf16 --preset tiny --dtype bf16
