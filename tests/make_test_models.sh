#!/usr/bin/env bash
# Creates the models the tests share, once per build tree: make_test_models.sh REFLECT_BIN OUT_DIR
# Their shapes must match tools/fixtures/make_golden_logits.py, which computes the golden logits.
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
