// PagedKvCache: the K and V memory of the CPU backend (DESIGN §5), in f32.
//
// num_blocks physical blocks of block_size token slots, for every layer and KV head:
//   keys:   [layer][block][kv_head][head_dim][slot]  — transposed, so one zmm load gives a
//                                                      dimension for 16 slots (scores for 16
//                                                      keys without horizontal sums)
//   values: [layer][block][kv_head][slot][head_dim]  — a slot's vector is contiguous
// Which block belongs to whom is decided outside (kvcache/) and arrives as block tables.
//
// The CPU backend keeps two: the device pool the forward pass reads, and a host pool of the same
// block shape that swapped-out blocks are copied to (both are RAM here; the split mirrors the
// accelerator's, so the scheduler's swap plans run unchanged).
//
// Ownership: owns both pools (anonymous mappings, committed on first touch).
// Thread-safety: none; distinct slots may be written from distinct threads.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/cpu/aligned_buffer.h"

namespace reflect::cpu {

class PagedKvCache {
 public:
  static absl::StatusOr<PagedKvCache> Create(int64_t num_layers, int64_t num_kv_heads,
                                             int64_t head_dim, int64_t num_blocks,
                                             int64_t block_size);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t head_dim() const { return head_dim_; }

  // [head_dim][block_size] keys of one block and head.
  float* Keys(int64_t layer, int64_t block, int64_t kv_head) {
    return keys_.As<float>() + Offset(layer, block, kv_head);
  }
  const float* Keys(int64_t layer, int64_t block, int64_t kv_head) const {
    return keys_.As<float>() + Offset(layer, block, kv_head);
  }
  // [block_size][head_dim] values of one block and head.
  float* Values(int64_t layer, int64_t block, int64_t kv_head) {
    return values_.As<float>() + Offset(layer, block, kv_head);
  }
  const float* Values(int64_t layer, int64_t block, int64_t kv_head) const {
    return values_.As<float>() + Offset(layer, block, kv_head);
  }

  // Stores the K and V vectors (head_dim floats each) of one token into `slot` of `block`.
  void Write(int64_t layer, int64_t block, int64_t slot, int64_t kv_head, const float* key,
             const float* value);

  // Copies every layer's K and V of block `source` into block `destination`.
  void CopyBlock(int64_t source, int64_t destination);

  // Copies every layer's K and V of block `source_block` of `source`, a cache of the same
  // layers, heads, head_dim and block size (say the host swap pool), into `destination_block`.
  // Cost: one memcpy per layer and pool of a block's floats.
  void CopyBlockFrom(const PagedKvCache& source, int64_t source_block, int64_t destination_block);

 private:
  int64_t Offset(int64_t layer, int64_t block, int64_t kv_head) const {
    return ((layer * num_blocks_ + block) * num_kv_heads_ + kv_head) * head_dim_ * block_size_;
  }

  int64_t num_layers_ = 0;
  int64_t num_kv_heads_ = 0;
  int64_t head_dim_ = 0;
  int64_t num_blocks_ = 0;
  int64_t block_size_ = 0;
  AlignedBuffer keys_;
  AlignedBuffer values_;
};

}  // namespace reflect::cpu
