// The sampling kernels behind CudaSampler (cuda_sampler.h), as plain launch functions and the
// plain structs they read and write: included by cuda_sampler.cc (C++20) and by the sampler_*.cu
// files (C++17 under nvcc), so nothing here may need more than C++17.
//
// Every launch enqueues on `stream` and returns at once with cudaGetLastError's answer
// (cudaErrorInvalidValue, launching nothing, for sizes out of range).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace reflect::cuda {

// The most alternatives a row may ask for (CudaSampler checks kMaxLogprobs against it).
inline constexpr int kSamplerMaxAlternatives = 20;

// The largest vocabulary the kernels take: ids fit in 24 bits of a row's 64-bit rank key.
inline constexpr int64_t kSamplerMaxVocabulary = int64_t{1} << 24;

// One row's parameters, from SamplingParams and SamplingRow, converted on the host exactly as
// worker/sampler.cc converts them.
struct SamplerRowParams {
  uint64_t seed = 0;
  int64_t position = 0;  // the sampled token's position: SamplingUniform(seed, position)
  double top_p = 1.0;
  double min_p = 0.0;
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  float inverse_temperature = 1.0f;       // float(1.0 / temperature); unused when greedy
  float repetition_penalty = 1.0f;        // float(repetition_penalty)
  int32_t top_k = 0;                      // min(top_k, vocab) when top_k > 0; vocab when off
  int32_t logprobs = 0;                   // alternatives wanted, in [0, kSamplerMaxAlternatives]
  bool greedy = false;                    // temperature == 0
  bool apply_repetition = false;          // repetition_penalty != 1
  bool apply_frequency_presence = false;  // frequency_penalty != 0 or presence_penalty != 0
};

// One distinct token of a row whose penalties are not neutral: every distinct valid id of
// prompt + generated when the repetition penalty applies, else every distinct generated id.
struct SamplerPenaltyEntry {
  int32_t row = 0;
  int32_t token_id = 0;
  int32_t generated_count = 0;  // occurrences among the generated ids
};

// What comes back to the host for one row.
struct SamplerRowResult {
  int32_t token_id;
  float logprob;
  int32_t alternative_count;
  int32_t alternative_ids[kSamplerMaxAlternatives];
  float alternative_logprobs[kSamplerMaxAlternatives];
};

// Applies the penalties of `entries` (device, `entry_count` of them, each (row, id) at most
// once) to logits [rows, vocab_size]; `rows` is the device copy of the rows' parameters.
cudaError_t LaunchApplyPenalties(float* logits, int64_t vocab_size, const SamplerRowParams* rows,
                                 const SamplerPenaltyEntry* entries, int64_t entry_count,
                                 cudaStream_t stream);

// Samples each of `row_count` rows of logits [row_count, vocab_size] (after penalties) into
// results[row]: one thread block per row. vocab_size in [1, kSamplerMaxVocabulary).
cudaError_t LaunchSampleRows(const float* logits, int64_t vocab_size, int64_t row_count,
                             const SamplerRowParams* rows, SamplerRowResult* results,
                             cudaStream_t stream);

}  // namespace reflect::cuda
