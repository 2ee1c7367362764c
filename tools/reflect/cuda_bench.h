// `reflect bench --backend cuda`: the benchmarks of issue #5 on one GPU, over a model directory
// (--model) or random bf16 weights of a preset shape generated in memory (--preset 8b). In order:
//
//   copy bandwidth  cudaMemcpy of 1 GiB device to device, the best of 10 after a warm-up,
//                   counting bytes read and written: the bandwidth of the roofline below.
//   batch-1 decode  one request, a 128-token random prompt, 128 greedy tokens through the
//                   Generator: the median interval between consecutive tokens (128 decode steps),
//                   against the roofline = DecodeStepBytes at the median step's context / the
//                   copy bandwidth. Target: at most 1.10 × the roofline.
//   throughput      1000 in / 1000 out, then 128 in / 128 out: every request submitted at once
//                   to the Generator (greedy, ignore_eos), as many as the KV pool holds whole (at
//                   most 256, then 512), so every step runs the full batch; generated tokens /
//                   wall time. Targets: 10,000 and 18,000 tokens/s.
//   first token     one 1000-token prompt on an idle backend, max_tokens 1: the Generator's time
//                   to first token, median of 10 after a warm-up. Target: 30 ms.
//
// The backend flags of backend_flags.h apply (--deterministic measures that mode's cost). Prints
// a table, or with --json one JSON object per figure per line ({"figure": "copy_bandwidth", ...}),
// the lines tools/bench/hf_generate_bench.py prints for transformers and tools/gpu-check.sh
// compares. Exit codes: 0 done, 2 bad flags, 1 a failure (FAILED_PRECONDITION without a CUDA
// build or device, before any weight is generated).
//
// The Measure* functions take any Backend (the CPU backend runs them too, on small shapes).
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"

namespace reflect::cli {

struct CudaBenchRequest {
  ModelConfig config;
  std::string model_label;          // the directory, or "preset 8b", for the report
  std::filesystem::path model_dir;  // empty: random weights from `seed`
  uint64_t seed = 0;
  int num_threads = 0;  // generating random weights; 0: one per core
  bool json = false;
};

int RunCudaBench(const CudaBenchRequest& request);

// Bytes one batch-1 decode step must read at `context_tokens` tokens of context: every weight it
// uses once (bf16 matrices, f32 norm weights, one embedding row; the whole embedding when it is
// also the LM head) and the bf16 keys and values of the context.
int64_t DecodeStepBytes(const ModelConfig& config, int64_t context_tokens);

// The median interval between consecutive tokens of one request with a `prompt_tokens` random
// prompt generating steps + 1 greedy tokens (so `steps` decode steps).
absl::StatusOr<double> MeasureBatchOneDecodeSeconds(Backend& backend, const ModelConfig& config,
                                                    int64_t prompt_tokens, int64_t steps,
                                                    std::mt19937_64& random);

struct ThroughputFigure {
  int64_t requests = 0;
  int64_t generated_tokens = 0;
  double seconds = 0.0;
  double tokens_per_second = 0.0;
};

// min(max_requests, what the KV pool holds whole) requests of `input_tokens` random tokens, each
// generating `output_tokens` greedy tokens, submitted at once. The backend must take steps of
// max_requests sequences and max_tokens_per_step tokens.
absl::StatusOr<ThroughputFigure> MeasureThroughput(Backend& backend, const ModelConfig& config,
                                                   int64_t input_tokens, int64_t output_tokens,
                                                   int64_t max_requests,
                                                   int64_t max_tokens_per_step,
                                                   std::mt19937_64& random);

// The median time to first token of `runs` single requests with a `prompt_tokens` random prompt
// on an otherwise idle backend, after one warm-up request.
absl::StatusOr<double> MeasureTimeToFirstTokenSeconds(Backend& backend, const ModelConfig& config,
                                                      int64_t prompt_tokens, int runs,
                                                      int64_t max_tokens_per_step,
                                                      std::mt19937_64& random);

}  // namespace reflect::cli
