// Sampling on the device (DESIGN §6, issue #5): the semantics of worker/sampler.h's SampleToken —
// penalties, temperature, top-k, top-p, min-p, a draw whose uniform number is
// SamplingUniform(seed, position), the chosen token's logprob and the N best alternatives —
// over logits that stay on the GPU. Only the results (a token, a logprob and at most
// kMaxLogprobs alternatives per row) cross to the host.
//
// Agreement with SampleToken (tests/cuda_sampler_test.cc): greedy picks the same token (lowest id
// among the largest logits; NaN never) and logprobs within 1e-4; a random draw picks the same
// token unless the host's cumulative mass at a boundary it crosses is within 1e-5 of the drawn
// target (float exp and summation order differ), and top-k / top-p / min-p keep the same set.
//
// Cost per row: a few passes over the vocabulary (max, exp-sum, a radix select for top-k / top-p
// thresholds) by one thread block; no sort of the whole vocabulary.
//
// Ownership: owns its device and pinned host buffers, grown on demand. Thread-safety: one caller
// at a time; calls are ordered on the stream given.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/step_plan.h"
#include "worker/backend.h"

namespace reflect::cuda {

// The API's bound on SamplingParams.logprobs (the router validates it; larger is refused here).
inline constexpr int kMaxLogprobs = 20;

class CudaSampler {
 public:
  static absl::StatusOr<CudaSampler> Create(int64_t vocab_size);
  CudaSampler(CudaSampler&&) noexcept;
  CudaSampler& operator=(CudaSampler&&) noexcept;
  ~CudaSampler();

  // Samples rows.size() rows of `logits` ([rows, vocab_size] f32 on the device, row i for
  // rows[i]; modified in place as scratch) into `tokens` (resized; sequence ids from `rows`).
  // Uploads each row's parameters and, when its penalties are not neutral, its prompt / generated
  // ids; synchronizes `stream` before returning the results. INVALID_ARGUMENT for logprobs above
  // kMaxLogprobs or a null params pointer.
  absl::Status Sample(float* logits, std::span<const SamplingRow> rows,
                      std::vector<SampledToken>& tokens, cudaStream_t stream);

 private:
  struct Buffers;
  explicit CudaSampler(int64_t vocab_size);
  int64_t vocab_size_ = 0;
  Buffers* buffers_ = nullptr;  // device and pinned host memory, freed by the destructor
};

}  // namespace reflect::cuda
