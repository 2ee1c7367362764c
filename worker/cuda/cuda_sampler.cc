#include "worker/cuda/cuda_sampler.h"

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "worker/cuda/cuda_status.h"
#include "worker/cuda/sampler_kernels.h"

namespace reflect::cuda {

static_assert(kMaxLogprobs == kSamplerMaxAlternatives);

// A device buffer and its pinned host twin, of the same size: what crosses between them is
// staged in page-locked memory so that the copies are truly asynchronous.
struct StagedBuffer {
  void* device = nullptr;
  void* host = nullptr;
  size_t capacity = 0;  // bytes, of each

  StagedBuffer() = default;
  StagedBuffer(const StagedBuffer&) = delete;
  StagedBuffer& operator=(const StagedBuffer&) = delete;
  ~StagedBuffer() {
    // Sample synchronizes its stream before returning, so nothing still uses these.
    cudaFree(device);
    cudaFreeHost(host);
  }

  // At least `bytes` of each, contents not kept; grows geometrically.
  absl::Status Reserve(size_t bytes, absl::string_view what) {
    if (bytes <= capacity) return absl::OkStatus();
    const size_t new_capacity = std::max(bytes, 2 * capacity);
    cudaFree(std::exchange(device, nullptr));
    cudaFreeHost(std::exchange(host, nullptr));
    capacity = 0;
    REFLECT_RETURN_IF_ERROR(
        CudaStatus(cudaMalloc(&device, new_capacity), absl::StrCat("allocating ", what)));
    REFLECT_RETURN_IF_ERROR(
        CudaStatus(cudaMallocHost(&host, new_capacity), absl::StrCat("allocating pinned ", what)));
    capacity = new_capacity;
    return absl::OkStatus();
  }
};

// One call's input travels as one upload: [rows] SamplerRowParams then [entries]
// SamplerPenaltyEntry. Results come back as [rows] SamplerRowResult.
struct CudaSampler::Buffers {
  StagedBuffer input;
  StagedBuffer results;
};

namespace {

bool PenaltiesApply(const SamplingParams& params) {
  return params.repetition_penalty != 1.0 || params.frequency_penalty != 0.0 ||
         params.presence_penalty != 0.0;
}

SamplerRowParams RowParams(const SamplingRow& row, int64_t vocab_size) {
  const SamplingParams& params = *row.params;
  SamplerRowParams converted;
  converted.seed = params.seed;
  converted.position = row.position;
  converted.top_p = params.top_p;
  converted.min_p = params.min_p;
  converted.frequency_penalty = params.frequency_penalty;
  converted.presence_penalty = params.presence_penalty;
  converted.greedy = params.temperature == 0.0;
  converted.inverse_temperature =
      converted.greedy ? 1.0f : static_cast<float>(1.0 / params.temperature);
  converted.repetition_penalty = static_cast<float>(params.repetition_penalty);
  converted.top_k =
      static_cast<int32_t>(params.top_k > 0 ? std::min(params.top_k, vocab_size) : vocab_size);
  converted.logprobs = std::max(params.logprobs, 0);
  converted.apply_repetition = params.repetition_penalty != 1.0;
  converted.apply_frequency_presence =
      params.frequency_penalty != 0.0 || params.presence_penalty != 0.0;
  return converted;
}

// Appends row `row_index`'s penalty entries: its distinct valid ids (prompt and generated when
// the repetition penalty applies, else generated only) with their generated counts. `keys` is
// scratch: id · 2 + 1 for a generated occurrence, id · 2 for a prompt one.
void AppendPenaltyEntries(const SamplingRow& row, int32_t row_index, int64_t vocab_size,
                          const SamplerRowParams& params, std::vector<int64_t>& keys,
                          std::vector<SamplerPenaltyEntry>& entries) {
  keys.clear();
  auto add = [&](std::span<const int32_t> ids, int64_t generated) {
    for (const int32_t id : ids) {
      if (id >= 0 && id < vocab_size) keys.push_back(int64_t{id} * 2 + generated);
    }
  };
  if (params.apply_repetition) add(row.prompt_ids, 0);
  add(row.generated_ids, 1);
  std::sort(keys.begin(), keys.end());
  for (size_t begin = 0; begin < keys.size();) {
    const int64_t id = keys[begin] / 2;
    int32_t generated_count = 0;
    size_t end = begin;
    for (; end < keys.size() && keys[end] / 2 == id; ++end) generated_count += keys[end] % 2;
    entries.push_back(SamplerPenaltyEntry{.row = row_index,
                                          .token_id = static_cast<int32_t>(id),
                                          .generated_count = generated_count});
    begin = end;
  }
}

}  // namespace

CudaSampler::CudaSampler(int64_t vocab_size) : vocab_size_(vocab_size), buffers_(new Buffers()) {}

CudaSampler::CudaSampler(CudaSampler&& other) noexcept
    : vocab_size_(other.vocab_size_), buffers_(std::exchange(other.buffers_, nullptr)) {}

CudaSampler& CudaSampler::operator=(CudaSampler&& other) noexcept {
  if (this != &other) {
    delete buffers_;
    vocab_size_ = other.vocab_size_;
    buffers_ = std::exchange(other.buffers_, nullptr);
  }
  return *this;
}

CudaSampler::~CudaSampler() { delete buffers_; }

absl::StatusOr<CudaSampler> CudaSampler::Create(int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size >= kSamplerMaxVocabulary) {
    return absl::InvalidArgumentError(absl::StrCat("CudaSampler: vocabulary size ", vocab_size,
                                                   " is outside [1, ", kSamplerMaxVocabulary, ")"));
  }
  return CudaSampler(vocab_size);
}

absl::Status CudaSampler::Sample(float* logits, std::span<const SamplingRow> rows,
                                 std::vector<SampledToken>& tokens, cudaStream_t stream) {
  tokens.clear();
  if (rows.empty()) return absl::OkStatus();
  for (const SamplingRow& row : rows) {
    if (row.params == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("CudaSampler: sequence ", row.sequence_id, " has no sampling params"));
    }
    if (row.params->logprobs > kMaxLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat("CudaSampler: sequence ", row.sequence_id,
                                                     " asks for ", row.params->logprobs,
                                                     " logprobs; at most ", kMaxLogprobs));
    }
  }

  std::vector<SamplerRowParams> params;
  params.reserve(rows.size());
  std::vector<SamplerPenaltyEntry> entries;
  std::vector<int64_t> keys;
  for (size_t index = 0; index < rows.size(); ++index) {
    params.push_back(RowParams(rows[index], vocab_size_));
    if (PenaltiesApply(*rows[index].params)) {
      AppendPenaltyEntries(rows[index], static_cast<int32_t>(index), vocab_size_, params.back(),
                           keys, entries);
    }
  }

  const size_t params_bytes = params.size() * sizeof(SamplerRowParams);
  const size_t entries_bytes = entries.size() * sizeof(SamplerPenaltyEntry);
  const size_t results_bytes = rows.size() * sizeof(SamplerRowResult);
  REFLECT_RETURN_IF_ERROR(
      buffers_->input.Reserve(params_bytes + entries_bytes, "sampling parameters"));
  REFLECT_RETURN_IF_ERROR(buffers_->results.Reserve(results_bytes, "sampled tokens"));
  std::byte* host_input = static_cast<std::byte*>(buffers_->input.host);
  std::copy_n(reinterpret_cast<const std::byte*>(params.data()), params_bytes, host_input);
  std::copy_n(reinterpret_cast<const std::byte*>(entries.data()), entries_bytes,
              host_input + params_bytes);
  std::byte* device_input = static_cast<std::byte*>(buffers_->input.device);
  REFLECT_RETURN_IF_ERROR(
      CudaStatus(cudaMemcpyAsync(device_input, host_input, params_bytes + entries_bytes,
                                 cudaMemcpyHostToDevice, stream),
                 "uploading sampling parameters"));
  const auto* device_params = reinterpret_cast<const SamplerRowParams*>(device_input);
  const auto* device_entries =
      reinterpret_cast<const SamplerPenaltyEntry*>(device_input + params_bytes);
  auto* device_results = static_cast<SamplerRowResult*>(buffers_->results.device);
  REFLECT_RETURN_IF_ERROR(
      CudaStatus(LaunchApplyPenalties(logits, vocab_size_, device_params, device_entries,
                                      static_cast<int64_t>(entries.size()), stream),
                 "launching ApplyPenaltiesKernel"));
  REFLECT_RETURN_IF_ERROR(
      CudaStatus(LaunchSampleRows(logits, vocab_size_, static_cast<int64_t>(rows.size()),
                                  device_params, device_results, stream),
                 "launching SampleRowsKernel"));
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(buffers_->results.host, device_results,
                                                     results_bytes, cudaMemcpyDeviceToHost, stream),
                                     "downloading sampled tokens"));
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "sampling on the device"));

  const auto* host_results = static_cast<const SamplerRowResult*>(buffers_->results.host);
  tokens.resize(rows.size());
  for (size_t index = 0; index < rows.size(); ++index) {
    const SamplerRowResult& result = host_results[index];
    SampledToken& token = tokens[index];
    token.sequence_id = rows[index].sequence_id;
    token.token_id = result.token_id;
    token.logprob = result.logprob;
    for (int32_t alternative = 0; alternative < result.alternative_count; ++alternative) {
      token.top_logprobs.push_back(
          TokenAlternative{.token_id = result.alternative_ids[alternative],
                           .logprob = result.alternative_logprobs[alternative]});
    }
  }
  return absl::OkStatus();
}

}  // namespace reflect::cuda
