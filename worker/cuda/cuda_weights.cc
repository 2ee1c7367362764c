#include "worker/cuda/cuda_weights.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/dtype.h"
#include "common/status_macros.h"
#include "worker/cpu/rope.h"
#include "worker/cuda/cuda_status.h"

namespace reflect::cuda {
namespace {

// Every array starts 256 bytes into alignment, cuBLASLt's default pointer requirement.
constexpr int64_t kAlignmentBytes = 256;
// Elements converted per staging chunk (16 MiB of bf16); two chunks alternate.
constexpr int64_t kStagingElements = int64_t{8} << 20;

template <typename T>
int64_t Aligned(int64_t elements) {
  constexpr int64_t kPerAlignment = kAlignmentBytes / sizeof(T);
  return (elements + kPerAlignment - 1) / kPerAlignment * kPerAlignment;
}

struct LayerOffsets {
  int64_t qkv = 0, output = 0, gate_up = 0, down = 0;  // in the bf16 arena
  int64_t input_norm = 0, post_attention_norm = 0;     // in the f32 arena
};

// Where every tensor lies in the two arenas, in elements.
struct WeightPlan {
  int64_t embedding = 0, lm_head = 0;  // bf16
  std::vector<LayerOffsets> layers;
  int64_t final_norm = 0, inverse_frequencies = 0;  // f32
  int64_t matrix_elements = 0, vector_elements = 0;
};

WeightPlan PlanWeights(const ModelConfig& config, bool tied_embeddings) {
  WeightPlan plan;
  const auto matrix = [&plan](int64_t rows, int64_t columns) {
    const int64_t offset = plan.matrix_elements;
    plan.matrix_elements += Aligned<Bf16>(rows * columns);
    return offset;
  };
  const auto vector = [&plan](int64_t count) {
    const int64_t offset = plan.vector_elements;
    plan.vector_elements += Aligned<float>(count);
    return offset;
  };
  const int64_t hidden = config.hidden_size;
  const int64_t query_width = config.num_attention_heads * config.head_dim;
  const int64_t qkv_rows = query_width + 2 * config.num_key_value_heads * config.head_dim;
  plan.embedding = matrix(config.vocab_size, hidden);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    LayerOffsets& offsets = plan.layers.emplace_back();
    offsets.qkv = matrix(qkv_rows, hidden);
    offsets.output = matrix(hidden, query_width);
    offsets.gate_up = matrix(2 * config.intermediate_size, hidden);
    offsets.down = matrix(hidden, config.intermediate_size);
    offsets.input_norm = vector(hidden);
    offsets.post_attention_norm = vector(hidden);
  }
  plan.lm_head = tied_embeddings ? plan.embedding : matrix(config.vocab_size, hidden);
  plan.final_norm = vector(hidden);
  plan.inverse_frequencies = vector(config.head_dim / 2);
  return plan;
}

// Elements [begin, begin + count) of `view` as bf16 bits.
void ConvertToBf16(const TensorView& view, int64_t begin, int64_t count, uint16_t* out) {
  const std::byte* source = view.data + begin * DTypeSize(view.dtype);
  switch (view.dtype) {
    case DType::kBF16:
      std::memcpy(out, source, count * sizeof(uint16_t));
      return;
    case DType::kF32:
      for (int64_t index = 0; index < count; ++index) {
        float value;
        std::memcpy(&value, source + index * 4, 4);
        out[index] = F32ToBf16(value);
      }
      return;
    case DType::kF16:
      for (int64_t index = 0; index < count; ++index) {
        uint16_t bits;
        std::memcpy(&bits, source + index * 2, 2);
        out[index] = F32ToBf16(F16ToF32(bits));
      }
      return;
  }
}

// Host → device copies through two pinned chunks: while one chunk's copy runs, the host converts
// the next into the other. Ownership: owns the chunks and their events; waits for its copies
// before freeing them.
class StagedUploader {
 public:
  explicit StagedUploader(cudaStream_t stream) : stream_(stream) {}
  StagedUploader(const StagedUploader&) = delete;
  StagedUploader& operator=(const StagedUploader&) = delete;
  ~StagedUploader() {
    cudaStreamSynchronize(stream_);  // no copy may still read a chunk being freed
    for (cudaEvent_t event : copied_) {
      if (event != nullptr) cudaEventDestroy(event);
    }
  }

  absl::Status Init() {
    for (int slot = 0; slot < 2; ++slot) {
      REFLECT_ASSIGN_OR_RETURN(
          chunks_[slot], PinnedBuffer<uint16_t>::Allocate(kStagingElements, "weight staging"));
      REFLECT_RETURN_IF_ERROR(CudaStatus(
          cudaEventCreateWithFlags(&copied_[slot], cudaEventDisableTiming), "cudaEventCreate"));
    }
    return absl::OkStatus();
  }

  // Enqueues the copy of all of `view`, as bf16, to `destination`.
  absl::Status Upload(const TensorView& view, Bf16* destination) {
    const int64_t count = view.NumElements();
    for (int64_t begin = 0; begin < count; begin += kStagingElements) {
      const int64_t chunk = std::min(kStagingElements, count - begin);
      const int slot = next_slot_;
      next_slot_ = 1 - slot;
      // The chunk's previous copy must be done before it is overwritten (an event never
      // recorded counts as done).
      REFLECT_RETURN_IF_ERROR(
          CudaStatus(cudaEventSynchronize(copied_[slot]), "waiting for a weight copy"));
      ConvertToBf16(view, begin, chunk, chunks_[slot].data());
      REFLECT_RETURN_IF_ERROR(
          CudaStatus(cudaMemcpyAsync(destination + begin, chunks_[slot].data(),
                                     chunk * sizeof(uint16_t), cudaMemcpyHostToDevice, stream_),
                     "copying weights to the device"));
      REFLECT_RETURN_IF_ERROR(
          CudaStatus(cudaEventRecord(copied_[slot], stream_), "recording a weight copy"));
    }
    return absl::OkStatus();
  }

 private:
  cudaStream_t stream_;
  PinnedBuffer<uint16_t> chunks_[2];
  cudaEvent_t copied_[2] = {nullptr, nullptr};
  int next_slot_ = 0;
};

void CopyFloats(const TensorView& view, float* out) {
  const int64_t count = view.NumElements();
  for (int64_t index = 0; index < count; ++index) out[index] = view.At(index);
}

}  // namespace

bool TiedEmbeddings(const LlamaWeights& weights) {
  return weights.lm_head.data == weights.embed_tokens.data &&
         weights.lm_head.dtype == weights.embed_tokens.dtype;
}

int64_t CudaWeightBytes(const ModelConfig& config, bool tied_embeddings) {
  const WeightPlan plan = PlanWeights(config, tied_embeddings);
  return plan.matrix_elements * static_cast<int64_t>(sizeof(Bf16)) +
         plan.vector_elements * static_cast<int64_t>(sizeof(float));
}

absl::StatusOr<CudaModelWeights> UploadLlamaWeights(const ModelConfig& config,
                                                    const LlamaWeights& weights,
                                                    cudaStream_t stream) {
  const bool tied = TiedEmbeddings(weights);
  const WeightPlan plan = PlanWeights(config, tied);
  CudaModelWeights uploaded;
  REFLECT_ASSIGN_OR_RETURN(
      uploaded.matrices, DeviceBuffer<Bf16>::Allocate(plan.matrix_elements, "bf16 model weights"));
  REFLECT_ASSIGN_OR_RETURN(uploaded.vectors,
                           DeviceBuffer<float>::Allocate(plan.vector_elements, "f32 norm weights"));
  Bf16* const matrices = uploaded.matrices.data();
  const float* const vectors = uploaded.vectors.data();
  std::vector<float> host_vectors(plan.vector_elements, 0.0f);
  {
    StagedUploader uploader(stream);
    REFLECT_RETURN_IF_ERROR(uploader.Init());
    REFLECT_RETURN_IF_ERROR(uploader.Upload(weights.embed_tokens, matrices + plan.embedding));
    const int64_t hidden = config.hidden_size;
    const int64_t query_rows = config.num_attention_heads * config.head_dim;
    const int64_t kv_rows = config.num_key_value_heads * config.head_dim;
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      const LlamaLayerWeights& source = weights.layers[layer];
      const LayerOffsets& offsets = plan.layers[layer];
      Bf16* const qkv = matrices + offsets.qkv;
      REFLECT_RETURN_IF_ERROR(uploader.Upload(source.q_proj, qkv));
      REFLECT_RETURN_IF_ERROR(uploader.Upload(source.k_proj, qkv + query_rows * hidden));
      REFLECT_RETURN_IF_ERROR(
          uploader.Upload(source.v_proj, qkv + (query_rows + kv_rows) * hidden));
      REFLECT_RETURN_IF_ERROR(uploader.Upload(source.o_proj, matrices + offsets.output));
      Bf16* const gate_up = matrices + offsets.gate_up;
      REFLECT_RETURN_IF_ERROR(uploader.Upload(source.gate_proj, gate_up));
      REFLECT_RETURN_IF_ERROR(
          uploader.Upload(source.up_proj, gate_up + config.intermediate_size * hidden));
      REFLECT_RETURN_IF_ERROR(uploader.Upload(source.down_proj, matrices + offsets.down));
      CopyFloats(source.input_layernorm, host_vectors.data() + offsets.input_norm);
      CopyFloats(source.post_attention_layernorm,
                 host_vectors.data() + offsets.post_attention_norm);
      CudaLayerWeights& layer_weights = uploaded.layers.emplace_back();
      layer_weights.input_norm = vectors + offsets.input_norm;
      layer_weights.qkv = qkv;
      layer_weights.output = matrices + offsets.output;
      layer_weights.post_attention_norm = vectors + offsets.post_attention_norm;
      layer_weights.gate_up = gate_up;
      layer_weights.down = matrices + offsets.down;
    }
    if (!tied) {
      REFLECT_RETURN_IF_ERROR(uploader.Upload(weights.lm_head, matrices + plan.lm_head));
    }
    CopyFloats(weights.norm, host_vectors.data() + plan.final_norm);
    const cpu::Rope rope(config);
    const std::vector<float>& frequencies = rope.inverse_frequencies();
    std::copy(frequencies.begin(), frequencies.end(),
              host_vectors.begin() + plan.inverse_frequencies);
    REFLECT_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(uploaded.vectors.data(), host_vectors.data(),
                        host_vectors.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
        "copying norm weights to the device"));
  }  // the uploader waits for every copy here
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "uploading the model weights"));
  uploaded.embedding = matrices + plan.embedding;
  uploaded.lm_head = matrices + plan.lm_head;
  uploaded.final_norm = vectors + plan.final_norm;
  uploaded.inverse_frequencies = vectors + plan.inverse_frequencies;
  return uploaded;
}

}  // namespace reflect::cuda
