// The penalties of worker/sampler.cc's ApplyPenalties, on the device: one thread per distinct
// (row, token) the host listed (cuda_sampler.cc), so no two threads touch one logit.
#include <cuda_runtime.h>

#include <cstdint>

#include "worker/cuda/sampler_kernels.h"

namespace reflect::cuda {
namespace {

constexpr int kPenaltyThreads = 256;

__global__ void ApplyPenaltiesKernel(float* logits, int64_t vocab_size,
                                     const SamplerRowParams* rows,
                                     const SamplerPenaltyEntry* entries, int64_t entry_count) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= entry_count) return;
  const SamplerPenaltyEntry entry = entries[index];
  const SamplerRowParams& row = rows[entry.row];
  float& logit = logits[entry.row * vocab_size + entry.token_id];
  float value = logit;
  if (row.apply_repetition) {
    // Hugging Face: logit > 0 ? logit / p : logit * p, in float.
    value = value > 0.0f ? __fdiv_rn(value, row.repetition_penalty)
                         : __fmul_rn(value, row.repetition_penalty);
  }
  if (row.apply_frequency_presence && entry.generated_count > 0) {
    // OpenAI: float(logit - count · frequency - presence) in double. GCC and Clang contract the
    // host's `logit - count * frequency` into one fused multiply-add; so does this.
    const double count = static_cast<double>(entry.generated_count);
    value = __double2float_rn(__dsub_rn(
        __fma_rn(-count, row.frequency_penalty, static_cast<double>(value)), row.presence_penalty));
  }
  logit = value;
}

}  // namespace

cudaError_t LaunchApplyPenalties(float* logits, int64_t vocab_size, const SamplerRowParams* rows,
                                 const SamplerPenaltyEntry* entries, int64_t entry_count,
                                 cudaStream_t stream) {
  if (entry_count < 0 || vocab_size < 1) return cudaErrorInvalidValue;
  if (entry_count == 0) return cudaSuccess;
  const int64_t blocks = (entry_count + kPenaltyThreads - 1) / kPenaltyThreads;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  ApplyPenaltiesKernel<<<static_cast<unsigned>(blocks), kPenaltyThreads, 0, stream>>>(
      logits, vocab_size, rows, entries, entry_count);
  return cudaGetLastError();
}

}  // namespace reflect::cuda
