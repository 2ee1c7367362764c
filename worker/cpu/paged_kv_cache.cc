#include "worker/cpu/paged_kv_cache.h"

#include <cstring>

#include "common/status_macros.h"

namespace reflect::cpu {

absl::StatusOr<PagedKvCache> PagedKvCache::Create(int64_t num_layers, int64_t num_kv_heads,
                                                  int64_t head_dim, int64_t num_blocks,
                                                  int64_t block_size) {
  if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0 || num_blocks <= 0 || block_size <= 0) {
    return absl::InvalidArgumentError("KV cache dimensions must be positive");
  }
  PagedKvCache cache;
  cache.num_layers_ = num_layers;
  cache.num_kv_heads_ = num_kv_heads;
  cache.head_dim_ = head_dim;
  cache.num_blocks_ = num_blocks;
  cache.block_size_ = block_size;
  const size_t bytes =
      static_cast<size_t>(num_layers * num_blocks * num_kv_heads * head_dim * block_size) *
      sizeof(float);
  REFLECT_ASSIGN_OR_RETURN(cache.keys_, AlignedBuffer::Allocate(bytes));
  REFLECT_ASSIGN_OR_RETURN(cache.values_, AlignedBuffer::Allocate(bytes));
  return cache;
}

void PagedKvCache::Write(int64_t layer, int64_t block, int64_t slot, int64_t kv_head,
                         const float* key, const float* value) {
  float* keys = Keys(layer, block, kv_head);
  for (int64_t dimension = 0; dimension < head_dim_; ++dimension) {
    keys[dimension * block_size_ + slot] = key[dimension];
  }
  std::memcpy(Values(layer, block, kv_head) + slot * head_dim_, value, head_dim_ * sizeof(float));
}

void PagedKvCache::CopyBlock(int64_t source, int64_t destination) {
  if (source == destination) return;
  CopyBlockFrom(*this, source, destination);
}

void PagedKvCache::CopyBlockFrom(const PagedKvCache& source, int64_t source_block,
                                 int64_t destination_block) {
  const size_t block_bytes =
      static_cast<size_t>(num_kv_heads_ * head_dim_ * block_size_) * sizeof(float);
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    std::memcpy(Keys(layer, destination_block, 0), source.Keys(layer, source_block, 0),
                block_bytes);
    std::memcpy(Values(layer, destination_block, 0), source.Values(layer, source_block, 0),
                block_bytes);
  }
}

}  // namespace reflect::cpu
