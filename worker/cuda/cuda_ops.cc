// cuda_ops.h: argument checks (INVALID_ARGUMENT before any launch), the choice of vectorized
// kernels where alignment allows, and launch errors as INTERNAL. The kernels are in ops_*.cu.
#include "worker/cuda/cuda_ops.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/cuda/cuda_status.h"
#include "worker/cuda/ops_launch.h"

namespace reflect::cuda {
namespace {

// Grid limits: x up to 2^31 - 1 blocks, y and z up to 65535.
constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxGridYZ = 65535;
// RotateAndStore keeps cos/sin of a position in shared memory.
constexpr int64_t kMaxRopeHeadDim = 1024;

bool Aligned(const void* pointer, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

absl::Status Launched(cudaError_t error, const char* kernel) {
  return CudaStatus(error, absl::StrCat("launching ", kernel));
}

absl::Status CheckBatch(const AttentionBatch& batch, const char* op) {
  if (batch.tokens < 0 || batch.tokens > kMaxGridX) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": tokens ", batch.tokens, " outside [0, ", kMaxGridX, "]"));
  }
  if (batch.block_size <= 0 || batch.max_blocks_per_sequence <= 0 || batch.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": block_size (", batch.block_size, "), max_blocks_per_sequence (",
                     batch.max_blocks_per_sequence, ") and num_blocks (", batch.num_blocks,
                     ") must be positive"));
  }
  if (batch.tokens > 0 && (batch.positions == nullptr || batch.token_sequence == nullptr ||
                           batch.block_tables == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": positions, token_sequence and block_tables must be set"));
  }
  return absl::OkStatus();
}

absl::Status CheckHeads(int64_t heads, int64_t kv_heads, const char* op) {
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": heads (", heads, ") must be a multiple",
                                                   " of kv_heads (", kv_heads, "), both positive"));
  }
  return absl::OkStatus();
}

// The checks and launch of a conversion: INVALID_ARGUMENT for a negative count or, when there is
// something to convert, a null pointer; nothing to do for none.
template <typename From, typename To>
absl::Status Convert(const char* name,
                     cudaError_t (*launch)(const From*, int64_t, To*, cudaStream_t),
                     const From* input, int64_t count, To* out, cudaStream_t stream) {
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": count ", count, " is negative"));
  }
  if (count == 0) return absl::OkStatus();
  if (input == nullptr || out == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": null input or out"));
  }
  return Launched(launch(input, count, out, stream), name);
}

}  // namespace

absl::Status EmbedTokens(const int32_t* token_ids, int64_t tokens, const Bf16* table,
                         int64_t vocab_begin, int64_t vocab_rows, int64_t hidden, float* residual,
                         cudaStream_t stream) {
  if (tokens < 0 || tokens > kMaxGridX || hidden <= 0 || vocab_begin < 0 || vocab_rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EmbedTokens: tokens ", tokens, " must be in [0, ", kMaxGridX, "], hidden ", hidden,
        " positive, vocab_begin ", vocab_begin, " and vocab_rows ", vocab_rows, " not negative"));
  }
  if (tokens == 0) return absl::OkStatus();
  if (token_ids == nullptr || residual == nullptr || (vocab_rows > 0 && table == nullptr)) {
    return absl::InvalidArgumentError("EmbedTokens: null token_ids, table or residual");
  }
  const bool vectorized = hidden % 8 == 0 && Aligned(table, 16) && Aligned(residual, 16);
  return Launched(kernels::EmbedTokens(token_ids, tokens, table, vocab_begin, vocab_rows, hidden,
                                       vectorized, residual, stream),
                  "EmbedTokens");
}

absl::Status RmsNorm(const float* input, const int32_t* rows_index, int64_t rows, int64_t hidden,
                     const float* weight, float epsilon, Bf16* out, cudaStream_t stream) {
  if (rows < 0 || rows > kMaxGridX || hidden <= 0 || !(epsilon >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("RmsNorm: rows ", rows, " must be in [0, ",
                                                   kMaxGridX, "], hidden ", hidden,
                                                   " positive, epsilon ", epsilon, " >= 0"));
  }
  if (rows == 0) return absl::OkStatus();
  if (input == nullptr || weight == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("RmsNorm: null input, weight or out");
  }
  const bool vectorized =
      hidden % 4 == 0 && Aligned(input, 16) && Aligned(weight, 16) && Aligned(out, 8);
  return Launched(
      kernels::RmsNorm(input, rows_index, rows, hidden, weight, epsilon, vectorized, out, stream),
      "RmsNorm");
}

absl::Status RotateAndStore(float* qkv, const AttentionBatch& batch, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, const float* inverse_frequencies,
                            Bf16* key_cache, Bf16* value_cache, cudaStream_t stream) {
  REFLECT_RETURN_IF_ERROR(CheckBatch(batch, "RotateAndStore"));
  REFLECT_RETURN_IF_ERROR(CheckHeads(heads, kv_heads, "RotateAndStore"));
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > kMaxRopeHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("RotateAndStore: head_dim ", head_dim,
                                                   " must be even, in [2, ", kMaxRopeHeadDim, "]"));
  }
  if (batch.tokens == 0) return absl::OkStatus();
  if (qkv == nullptr || inverse_frequencies == nullptr || key_cache == nullptr ||
      value_cache == nullptr) {
    return absl::InvalidArgumentError(
        "RotateAndStore: null qkv, inverse_frequencies, key_cache or value_cache");
  }
  return Launched(kernels::RotateAndStore(qkv, batch, heads, kv_heads, head_dim,
                                          inverse_frequencies, key_cache, value_cache, stream),
                  "RotateAndStore");
}

int64_t AttentionScratchFloats(int64_t tokens, int64_t heads, int64_t head_dim, int64_t max_context,
                               int64_t keys_per_split) {
  if (tokens <= 0 || heads <= 0 || head_dim <= 0 || max_context <= 0 || keys_per_split <= 0) {
    return 0;
  }
  const int64_t splits = (max_context + keys_per_split - 1) / keys_per_split;
  return tokens * heads * splits * (head_dim + 2);
}

absl::Status PagedAttention(const float* qkv, const AttentionBatch& batch, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, float scale, const Bf16* key_cache,
                            const Bf16* value_cache, int64_t max_context, int64_t keys_per_split,
                            float* scratch, Bf16* out, cudaStream_t stream) {
  REFLECT_RETURN_IF_ERROR(CheckBatch(batch, "PagedAttention"));
  REFLECT_RETURN_IF_ERROR(CheckHeads(heads, kv_heads, "PagedAttention"));
  if (heads / kv_heads > kernels::kMaxAttentionGroup || heads > kMaxGridYZ) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PagedAttention: ", heads / kv_heads, " query heads per kv head (at most ",
        kernels::kMaxAttentionGroup, "), ", heads, " heads (at most ", kMaxGridYZ, ")"));
  }
  if (head_dim != 32 && head_dim != 64 && head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: head_dim ", head_dim, " is not supported (32, 64 or 128)"));
  }
  if (head_dim == 32 && heads / kv_heads > 4) {  // a 32-wide row has 4 slices, one per head
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: head_dim 32 takes at most 4 query heads per kv head, not ",
                     heads / kv_heads));
  }
  if (keys_per_split <= 0 || keys_per_split % batch.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: keys_per_split ",
                                                   keys_per_split, " must be a positive multiple",
                                                   " of block_size ", batch.block_size));
  }
  if (batch.tokens == 0) return absl::OkStatus();
  const int64_t max_splits = (max_context + keys_per_split - 1) / keys_per_split;
  if (max_context <= 0 || max_splits > kMaxGridYZ) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PagedAttention: max_context ", max_context, " must be positive and need at most ",
        kMaxGridYZ, " splits of ", keys_per_split, " keys"));
  }
  if (qkv == nullptr || key_cache == nullptr || value_cache == nullptr || scratch == nullptr ||
      out == nullptr) {
    return absl::InvalidArgumentError(
        "PagedAttention: null qkv, key_cache, value_cache, scratch or out");
  }
  // The kernel reads q, K and V 16 bytes at a time.
  if (!Aligned(qkv, 16) || !Aligned(key_cache, 16) || !Aligned(value_cache, 16)) {
    return absl::InvalidArgumentError(
        "PagedAttention: qkv, key_cache and value_cache must be 16-byte aligned");
  }
  return Launched(
      kernels::PagedAttention(qkv, batch, heads, kv_heads, head_dim, scale, key_cache, value_cache,
                              max_splits, keys_per_split, scratch, out, stream),
      "PagedAttention");
}

absl::Status SiluAndMultiply(const float* gate_up, int64_t rows, int64_t intermediate, Bf16* out,
                             cudaStream_t stream) {
  // A block covers 256 columns (1024 vectorized); the chunks of a row are the grid's y.
  if (rows < 0 || rows > kMaxGridX || intermediate <= 0 || intermediate > 256 * kMaxGridYZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("SiluAndMultiply: rows ", rows, " must be in [0, ", kMaxGridX,
                     "], intermediate ", intermediate, " in [1, ", 256 * kMaxGridYZ, "]"));
  }
  if (rows == 0) return absl::OkStatus();
  if (gate_up == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("SiluAndMultiply: null gate_up or out");
  }
  const bool vectorized = intermediate % 4 == 0 && Aligned(gate_up, 16) && Aligned(out, 8);
  return Launched(kernels::SiluAndMultiply(gate_up, rows, intermediate, vectorized, out, stream),
                  "SiluAndMultiply");
}

absl::Status CopyBlocks(Bf16* const* layer_caches, int64_t layers, const int32_t* sources,
                        const int32_t* destinations, int64_t count, int64_t block_elements,
                        cudaStream_t stream) {
  if (layers < 0 || 2 * layers > kMaxGridYZ || count < 0 || count > kMaxGridX ||
      block_elements <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CopyBlocks: layers ", layers, " must be in [0, ", kMaxGridYZ / 2, "], count ", count,
        " in [0, ", kMaxGridX, "], block_elements ", block_elements, " positive"));
  }
  if (layers == 0 || count == 0) return absl::OkStatus();
  if (layer_caches == nullptr || sources == nullptr || destinations == nullptr) {
    return absl::InvalidArgumentError("CopyBlocks: null layer_caches, sources or destinations");
  }
  return Launched(kernels::CopyBlocks(layer_caches, layers, sources, destinations, count,
                                      block_elements, stream),
                  "CopyBlocks");
}

absl::Status FloatToBf16(const float* input, int64_t count, Bf16* out, cudaStream_t stream) {
  return Convert("FloatToBf16", kernels::FloatToBf16, input, count, out, stream);
}

absl::Status Bf16ToFloat(const Bf16* input, int64_t count, float* out, cudaStream_t stream) {
  return Convert("Bf16ToFloat", kernels::Bf16ToFloat, input, count, out, stream);
}

}  // namespace reflect::cuda
