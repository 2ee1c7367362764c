#!/usr/bin/env bash
# Issue #5's one command on a lent GPU machine (docs/cuda.md): builds the CUDA backend for sm_90,
# runs the CUDA tests, checks model logits (CUDA against the CPU backend and against
# transformers), runs `reflect bench --backend cuda --preset 8b` with and without --deterministic
# and the same workloads through transformers `generate`, and prints a summary table last:
# check | result | numbers. A stage that fails is recorded and the script goes on to the summary;
# it exits 1 when any check failed (a missed benchmark target shows as MISSED, not as a failure).
#
# On the GPU machine, from the repository root:
#   tools/gpu-check.sh [--prebuilt BUNDLE] [--only STAGES] [--budget SECONDS] [--build-dir DIR]
#                      [--jobs N] [--skip-hf]
# Here (a machine with the project's libraries, tools/install-deps.sh, and nvcc; no GPU needed):
#   tools/gpu-check.sh --pack BUNDLE [--build-dir DIR] [--jobs N]
#
# Building. Without --prebuilt, configures DIR (default build-gpu) with CUDA on for sm_90 and
# builds the binaries the checks run with N jobs (default: every core). The lent machines have
# nvcc, CMake, ninja and python3 with torch and transformers, but maybe not the C++ libraries
# (absl, gRPC, Gloo, ...), and no package registry: then the build stage fails saying so. --pack
# builds the same binaries where the libraries are and packs them, with every shared library they
# load that is neither glibc's, libstdc++'s nor CUDA's, into the tarball BUNDLE; carried to the
# GPU machine, --prebuilt BUNDLE unpacks it instead of building. The tests look for the
# repository where the bundle was built (the path is compiled in): when that path is missing on
# the GPU machine, --prebuilt links it to this repository.
#
# Time. The device tool stops a command after 10 minutes, so stages start only while --budget
# (default 570 s) leaves them time, and each runs under a timeout within it; what is skipped says
# so in the summary. --only tests,logits,bench,hf runs some stages (the build or unpacking always
# comes first; --only build builds everything and runs nothing), to split a run over several
# calls on a machine kept warm in between.
#
# Outputs: stdout; with $OUT set (the device tool brings back what is under it) also
# $OUT/summary.txt, $OUT/results.jsonl (every benchmark figure and logits check) and one log per
# stage (build.log, tests.log, logits.log, bench.log, hf.log): seven files, under the tool's eight.
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 2
CUDA_TESTS=(cuda_ops_test cuda_sampler_test cuda_backend_test nccl_communicator_test)
TEST_TIMEOUT=240   # seconds, per test binary
LOGITS_TIMEOUT=240
BENCH_TIMEOUT=240  # per `reflect bench` run
HF_TIMEOUT=300
SUMMARY_RESERVE=15  # seconds kept for the summary
MAX_LOG_BYTES=$((15 * 1024 * 1024))

build_dir="build-gpu"
jobs="$(nproc)"
prebuilt=""
pack_to=""
skip_hf=0
budget=570
only="tests,logits,bench,hf"
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --pack) pack_to="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --skip-hf) skip_hf=1; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$prebuilt" ] && [ -r "$prebuilt" ]; then  # the bundle names its build folder
  build_dir="$(tar -tJf "$prebuilt" | sed -n 's|/bundle-info.txt$||p' | head -n 1)"
fi
BUILD="$REPO/$build_dir"
REFLECT="$BUILD/tools/reflect/reflect"
TARGETS=(reflect)  # what the stages run: `reflect`, and the tests when they run or are packed
if [ -n "$pack_to" ] || [[ ",$only," == *,tests,* || ",$only," == *,build,* ]]; then
  TARGETS+=("${CUDA_TESTS[@]}")
fi

stage() { printf '\n=== %s ===\n' "$*"; }

# Configures $BUILD (once) and builds the targets of TARGETS the tree defines (a test whose
# source is missing has none): returns ninja's status; $missing_targets lists the others.
configure_and_build() {
  local nvcc known=() target
  nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
  if [ ! -f "$BUILD/build.ninja" ]; then
    cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DREFLECT_ENABLE_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$nvcc" || return 1
  fi
  missing_targets=""
  for target in "${TARGETS[@]}"; do
    if ninja -C "$BUILD" -t query "$target" >/dev/null 2>&1; then
      known+=("$target")
    else
      missing_targets+=" $target"
    fi
  done
  ninja -C "$BUILD" -j "$jobs" "${known[@]}"
}

# --pack BUNDLE: builds here and writes the tarball --prebuilt takes.
pack() {
  local bundle_dir="$BUILD/bundle-lib" files=() target path library
  stage "building for the bundle ($BUILD, $jobs jobs)"
  configure_and_build || { echo "gpu-check: the build failed" >&2; exit 1; }
  if ! grep -q '^REFLECT_ENABLE_CUDA:BOOL=ON' "$BUILD/CMakeCache.txt"; then
    echo "gpu-check: $build_dir is configured without CUDA (REFLECT_ENABLE_CUDA)" >&2
    exit 1
  fi
  [ -n "$missing_targets" ] && echo "gpu-check: no target:$missing_targets (packing the rest)"
  rm -rf "$bundle_dir" && mkdir -p "$bundle_dir"
  for target in "${TARGETS[@]}"; do
    for path in "tools/reflect/$target" "tests/$target"; do
      if [ -f "$BUILD/$path" ] && [ -x "$BUILD/$path" ]; then files+=("$build_dir/$path"); fi
    done
  done
  for path in "${files[@]}"; do
    ldd "$REPO/$path" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
  done | sort -u | while read -r library; do
    case "$(basename "$library")" in
      linux-vdso* | ld-linux* | libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | \
        libgcc_s.so* | libstdc++.so* | libcuda.so* | libcudart.so* | libcublas*.so* | \
        libnccl.so* | libnvidia*) ;;
      *) cp -L "$library" "$bundle_dir/" ;;
    esac
  done
  printf 'source_dir=%s\nbuild_dir=%s\n' "$REPO" "$build_dir" >"$BUILD/bundle-info.txt"
  stage "packing ${#files[@]} binaries and $(find "$bundle_dir" -type f | wc -l) libraries"
  mkdir -p "$(dirname "$pack_to")"
  tar -C "$REPO" -cJf "$pack_to" "${files[@]}" "$build_dir/bundle-lib" \
    "$build_dir/bundle-info.txt" || exit 1
  ls -l "$pack_to"
  echo "on the GPU machine: tools/gpu-check.sh --prebuilt $pack_to (carry its folder)"
  exit 0
}

[ -n "$pack_to" ] && pack

LOGS="${OUT:-$BUILD/gpu-check-logs}"
WORK="$BUILD/gpu-check-work"  # scratch kept out of $OUT (the tool brings back 8 files at most)
mkdir -p "$LOGS" "$WORK"
SUMMARY="$WORK/summary.tsv"
RESULTS="$LOGS/results.jsonl"
: >"$SUMMARY"
: >"$RESULTS"

# record CHECK RESULT NUMBERS: one summary row (RESULT: PASS FAIL SKIP MET MISSED INFO).
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SUMMARY"; }

have_python() { command -v python3 >/dev/null; }

wanted() { [[ ",$only," == *",$1,"* ]]; }

# time_for LIMIT: prints the seconds a stage may take (LIMIT, or what the budget leaves if that
# is less); fails when fewer than 30 are left.
time_for() {
  local left=$((budget - SECONDS - SUMMARY_RESERVE))
  [ "$left" -lt 30 ] && return 1
  echo $((left < $1 ? left : $1))
}

# Adds to BINARY_LIBRARY_PATH the folders of the libraries `ldd $1` cannot find (CUDA's and
# NCCL's, in the CUDA toolkit or in the Python packages torch brings); fails when some stay
# missing. Only our binaries run with that path (run_binary), so python3 keeps its own libraries.
BINARY_LIBRARY_PATH=""
find_libraries() {
  local library found
  while read -r library; do
    found="$(find /usr/local/nvidia/ /usr/local/cuda/ /usr/local/cuda/lib64/ /usr/lib/ /opt/ \
      /usr/local/lib/ -name "$library" -not -path '*/stubs/*' 2>/dev/null | head -n 1)"
    if [ -n "$found" ]; then
      BINARY_LIBRARY_PATH="${BINARY_LIBRARY_PATH:+$BINARY_LIBRARY_PATH:}$(dirname "$found")"
    fi
  done < <(run_binary ldd "$1" 2>/dev/null | awk '/not found/ { print $1 }')
  ! run_binary ldd "$1" 2>/dev/null | grep -q "not found"
}

# Runs a command with BINARY_LIBRARY_PATH ahead of LD_LIBRARY_PATH.
run_binary() {
  local path="$BINARY_LIBRARY_PATH"
  if [ -n "${LD_LIBRARY_PATH:-}" ]; then path="${path:+$path:}$LD_LIBRARY_PATH"; fi
  LD_LIBRARY_PATH="$path" "$@"
}

# $WORK/reflect: `reflect` with its libraries, for the Python checks to run.
write_reflect_wrapper() {
  local path="$BINARY_LIBRARY_PATH"
  if [ -n "${LD_LIBRARY_PATH:-}" ]; then path="${path:+$path:}$LD_LIBRARY_PATH"; fi
  {
    echo '#!/usr/bin/env bash'
    if [ -n "$path" ]; then printf 'export LD_LIBRARY_PATH=%q\n' "$path"; fi
    # shellcheck disable=SC2016  # "$@" belongs to the wrapper
    printf 'exec %q "$@"\n' "$REFLECT"
  } >"$WORK/reflect"
  chmod +x "$WORK/reflect"
}

stage_device() {
  stage "device"
  local gpu
  if gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"; then
    echo "$gpu"
    record "gpu" PASS "$(echo "$gpu" | head -n 1)"
  else
    record "gpu" FAIL "nvidia-smi sees no GPU"
  fi
  if command -v nvcc >/dev/null; then nvcc --version | tail -n 1; fi
  if have_python; then
    python3 -c 'import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available())' 2>&1 | tail -n 1
  fi
}

# --prebuilt: unpacks the bundle and makes its binaries find their libraries and the repository.
unpack_prebuilt() {
  local log="$1" source_dir binary unresolved=""
  if ! tar -C "$REPO" -xJf "$prebuilt" >"$log" 2>&1; then
    record "build (prebuilt)" FAIL "cannot unpack $prebuilt (build.log)"
    return 1
  fi
  source_dir="$(sed -n 's/^source_dir=//p' "$BUILD/bundle-info.txt")"
  if [ "$source_dir" != "$REPO" ] && [ ! -e "$source_dir" ]; then
    mkdir -p "$(dirname "$source_dir")" && ln -s "$REPO" "$source_dir"
  fi
  BINARY_LIBRARY_PATH="$BUILD/bundle-lib"
  for binary in "$REFLECT" "${CUDA_TESTS[@]/#/$BUILD/tests/}"; do
    if [ -x "$binary" ] && ! find_libraries "$binary"; then
      unresolved+=" $(basename "$binary")"
      run_binary ldd "$binary" | grep "not found" | tee -a "$log"
    fi
  done
  if [ -n "$unresolved" ]; then
    record "build (prebuilt)" FAIL "libraries not found for:$unresolved (build.log)"
    return 1
  fi
  record "build (prebuilt)" PASS "$(basename "$prebuilt"), built at $source_dir"
}

stage_build() {
  local log="$LOGS/build.log" start=$SECONDS status
  if [ -n "$prebuilt" ]; then
    stage "unpacking $prebuilt"
    unpack_prebuilt "$log"
    return
  fi
  stage "build ($build_dir, $jobs jobs; build.log)"
  configure_and_build >"$log" 2>&1
  status=$?
  if [ "$status" -ne 0 ]; then
    grep -E "error|FAILED|Could not find|Could NOT find" "$log" | head -n 30
    if [ ! -f "$BUILD/build.ninja" ] && grep -q "Could not find a package\|Could NOT find" "$log"
    then
      local missing
      missing="$(grep -oE 'provided by "[^"]*"|Could NOT find \S+' "$log" | head -n 4)"
      missing="$(echo "$missing" | tr '\n' ' ')"
      record "build" FAIL "missing C++ libraries ($missing): --pack elsewhere, then --prebuilt"
    else
      record "build" FAIL "configure or compile failed after $((SECONDS - start)) s (build.log)"
    fi
    return 1
  fi
  find_libraries "$REFLECT" >/dev/null
  local architectures
  architectures="$(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$BUILD/CMakeCache.txt")"
  if ! grep -q '^REFLECT_ENABLE_CUDA:BOOL=ON' "$BUILD/CMakeCache.txt"; then
    record "build" FAIL "$build_dir is configured without CUDA (REFLECT_ENABLE_CUDA)"
    return 1
  fi
  record "build" PASS \
    "sm_${architectures} in $((SECONDS - start)) s${missing_targets:+; no target:$missing_targets}"
}

stage_tests() {
  stage "CUDA tests"
  local log="$LOGS/tests.log" test binary output status passed failed skipped numbers limit
  : >"$log"
  "$REPO/tests/make_test_models.sh" "$WORK/reflect" "$BUILD/test-models" >>"$log" 2>&1 ||
    record "test models" FAIL "tests/make_test_models.sh failed (tests.log)"
  for test in "${CUDA_TESTS[@]}"; do
    binary="$BUILD/tests/$test"
    if [ ! -x "$binary" ]; then
      record "$test" FAIL "not built"
      continue
    fi
    if ! limit="$(time_for "$TEST_TIMEOUT")"; then
      record "$test" SKIP "no time left (--budget $budget)"
      continue
    fi
    find_libraries "$binary" >/dev/null
    output="$(run_binary timeout "$limit" "$binary" --gtest_color=no 2>&1)"
    status=$?
    printf '%s\n' "$output" >>"$log"
    printf '%s\n' "$output" | grep -E '^\[  (FAILED|SKIPPED|PASSED) |^\[==========\]|Failure' |
      head -n 40
    passed="$(printf '%s\n' "$output" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p')"
    failed="$(printf '%s\n' "$output" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p')"
    skipped="$(printf '%s\n' "$output" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p')"
    numbers="${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
    if [ "$status" -eq 124 ]; then
      record "$test" FAIL "timed out after $limit s"
    elif [ "$status" -ne 0 ]; then
      record "$test" FAIL "exit $status: $numbers"
    elif [ "${passed:-0}" -eq 0 ]; then
      record "$test" FAIL "nothing ran on the GPU: $numbers"
    else
      record "$test" PASS "$numbers"
    fi
  done
}

stage_logits() {
  stage "logits: CUDA against the CPU backend and transformers"
  local log="$LOGS/logits.log" report="$WORK/logits.json" limit status
  if ! have_python; then
    record "logits" FAIL "needs python3"
    return
  fi
  if ! limit="$(time_for "$LOGITS_TIMEOUT")"; then
    record "logits" SKIP "no time left (--budget $budget)"
    return
  fi
  rm -f "$report"
  timeout "$limit" python3 "$REPO/tools/bench/hf_logits_check.py" --reflect "$WORK/reflect" \
    --models "$BUILD/test-models" --json-out "$report" 2>&1 | tee "$log"
  status="${PIPESTATUS[0]}"
  if [ ! -s "$report" ]; then
    record "logits" FAIL "hf_logits_check.py exited $status without a report (logits.log)"
    return
  fi
  python3 - "$report" "$RESULTS" <<'PY' >>"$SUMMARY"
import json, sys
report = json.load(open(sys.argv[1]))
with open(sys.argv[2], "a") as results:
    for check in report["checks"]:
        results.write(json.dumps({"stage": "logits", **check}) + "\n")
        numbers = "; ".join(f"{c['against']}: {c['max_abs_difference']:.3g} <= {c['tolerance']:.3g}"
                            for c in check.get("comparisons", []))
        detail = check.get("detail", "")
        result = {"pass": "PASS", "fail": "FAIL"}.get(check["result"], "SKIP")
        print(f"logits {check['name']}\t{result}\t"
              f"{numbers}{' | ' if numbers and detail else ''}{detail}")
PY
}

# figures_rows KIND LABEL FILE [BASELINE]: summary rows of the JSON figures in FILE, also appended
# to results.jsonl. KIND reflect: against their targets, and with BASELINE (the default mode's
# figures) the cost of this mode; KIND transformers: with BASELINE (reflect's figures) as ratios.
figures_rows() {
  python3 - "$RESULTS" "$@" <<'PY'
import json, os, sys
results_path, kind, label, path = sys.argv[1:5]
baseline_path = sys.argv[5] if len(sys.argv) > 5 else ""

def figures(file_path):
    found = {}
    if not file_path or not os.path.exists(file_path):
        return found
    for line in open(file_path):
        try:
            figure = json.loads(line)
        except ValueError:
            continue  # stderr lines, or a line cut short
        if isinstance(figure, dict) and "figure" in figure:
            key = figure["figure"]
            if key == "throughput":
                key = f"throughput {figure['input_tokens']}/{figure['output_tokens']}"
            elif key == "skipped":
                key = f"skipped {figure['workload']}"
            found[key] = figure
    return found

mine, base = figures(path), figures(baseline_path)
with open(results_path, "a") as results:
    for figure in mine.values():
        results.write(json.dumps({"stage": label, **figure}) + "\n")

# (key, field, higher is better, name, how the field prints)
MEASURES = (("batch1_decode", "seconds_per_token", False, "batch-1 decode",
             lambda value: f"{value * 1e3:.3f} ms/token"),
            ("throughput 1000/1000", "tokens_per_second", True, "throughput 1000/1000",
             lambda value: f"{value:.0f} tokens/s"),
            ("throughput 128/128", "tokens_per_second", True, "throughput 128/128",
             lambda value: f"{value:.0f} tokens/s"),
            ("time_to_first_token", "seconds", False, "time to first token (1000)",
             lambda value: f"{value * 1e3:.2f} ms"))

if kind == "reflect" and "copy_bandwidth" in mine:
    print(f"{label}: copy bandwidth\tINFO\t"
          f"{mine['copy_bandwidth']['bytes_per_second'] * 1e-9:.0f} GB/s (read + write)")
for key, field, higher_is_better, name, show in MEASURES:
    if key not in mine:
        continue
    figure = mine[key]
    numbers = show(figure[field])
    if "requests" in figure:
        numbers += f", {figure['requests']} requests"
    if key == "batch1_decode" and "roofline_seconds" in figure:
        numbers += (f"; roofline {figure['roofline_seconds'] * 1e3:.3f} ms: "
                    f"{figure['ratio_to_roofline']:.3f}x (target <= {figure['target_ratio']})")
    elif "target_tokens_per_second" in figure:
        numbers += f" (target >= {figure['target_tokens_per_second']:.0f})"
    elif "target_seconds" in figure:
        numbers += f" (target <= {figure['target_seconds'] * 1e3:.0f} ms)"
    if key in base:
        ratio = (figure[field] / base[key][field] if higher_is_better
                 else base[key][field] / figure[field])
        numbers += (f"; {ratio:.2f}x the default mode's speed" if kind == "reflect"
                    else f"; reflect is {1 / ratio:.2f}x as fast")
    result = "INFO" if "met" not in figure else ("MET" if figure["met"] else "MISSED")
    print(f"{label}: {name}\t{result}\t{numbers}")
for key, figure in mine.items():
    if key.startswith("skipped"):
        print(f"{label}: {figure['workload']}\tSKIP\t{figure['reason']}")
PY
}

stage_bench() {
  stage "reflect bench --backend cuda --preset 8b"
  local log="$LOGS/bench.log" mode label file status limit flags
  : >"$log"
  rm -f "$WORK"/bench-*.jsonl
  for mode in default deterministic; do
    label="bench"
    file="$WORK/bench-$mode.jsonl"
    flags=(--backend cuda --preset 8b --json)
    if [ "$mode" = deterministic ]; then
      flags+=(--deterministic)
      label="bench --deterministic"
    fi
    if ! limit="$(time_for "$BENCH_TIMEOUT")"; then
      record "$label" SKIP "no time left (--budget $budget)"
      continue
    fi
    echo "--- reflect bench ${flags[*]}" | tee -a "$log"
    run_binary timeout "$limit" "$REFLECT" bench "${flags[@]}" 2>&1 | tee -a "$log" >"$file"
    status="${PIPESTATUS[0]}"
    if [ "$status" -eq 124 ]; then
      record "$label" FAIL "timed out after $limit s"
    elif [ "$status" -ne 0 ]; then
      record "$label" FAIL "exit $status: $(grep -v '^{' "$file" | tail -n 1)"
    fi
    if ! have_python; then
      record "$label" INFO "no python3 to read the figures: bench.log"
    elif [ "$mode" = deterministic ]; then
      figures_rows reflect "$label" "$file" "$WORK/bench-default.jsonl" >>"$SUMMARY"
    else
      figures_rows reflect "$label" "$file" >>"$SUMMARY"
    fi
  done
}

stage_hf() {
  stage "transformers generate, the same workloads"
  local log="$LOGS/hf.log" file="$WORK/hf.jsonl" limit status
  if [ "$skip_hf" -eq 1 ]; then
    record "transformers generate" SKIP "--skip-hf"
    return
  fi
  if ! have_python || ! python3 -c 'import sys, torch, transformers
sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    record "transformers generate" SKIP "torch with CUDA and transformers are not importable"
    return
  fi
  if ! limit="$(time_for "$HF_TIMEOUT")"; then
    record "transformers generate" SKIP "no time left (--budget $budget)"
    return
  fi
  # Workloads start only while a minute is left for the longest one.
  timeout "$limit" python3 "$REPO/tools/bench/hf_generate_bench.py" \
    --max-seconds $((limit > 90 ? limit - 60 : 30)) 2>&1 | tee "$log" >"$file"
  status="${PIPESTATUS[0]}"
  if [ "$status" -eq 124 ]; then
    record "transformers generate" FAIL "timed out after $limit s"
  elif [ "$status" -ne 0 ]; then
    record "transformers generate" FAIL "exit $status (hf.log)"
  fi
  figures_rows transformers "transformers" "$file" "$WORK/bench-default.jsonl" >>"$SUMMARY"
}

print_summary() {
  stage "summary"
  local table="$LOGS/summary.txt" failures log
  failures="$(awk -F '\t' '$2 == "FAIL"' "$SUMMARY" | wc -l)"
  {
    printf '%-50s | %-6s | %s\n' "check" "result" "numbers"
    printf '%.0s-' {1..100}
    printf '\n'
    while IFS=$'\t' read -r check result numbers; do
      printf '%-50s | %-6s | %s\n' "$check" "$result" "$numbers"
    done <"$SUMMARY"
    printf '%.0s-' {1..100}
    printf '\n'
    if [ "$failures" -eq 0 ]; then
      echo "gpu-check: every check passed ($(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS} s)"
    else
      echo "gpu-check: $failures check(s) FAILED ($(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS} s)"
    fi
  } >"$table"
  for log in "$LOGS"/*.log; do
    if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt "$MAX_LOG_BYTES" ]; then
      tail -c "$MAX_LOG_BYTES" "$log" >"$WORK/log.tail" && mv "$WORK/log.tail" "$log"
    fi
  done
  cat "$table"
  [ "$failures" -eq 0 ]
}

stage_device
if stage_build; then
  write_reflect_wrapper
  if wanted tests; then stage_tests; fi
  if wanted logits; then stage_logits; fi
  if wanted bench; then stage_bench; fi
fi
if wanted hf; then stage_hf; fi
print_summary
