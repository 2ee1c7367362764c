// Causal grouped-query attention of one token over a PagedKvCache.
//
// For a query at `position`, attends keys 0..position, read through the sequence's block table
// (keys of the token itself must already be written). Scores are q·k in f32 (an FMA chain over
// head_dim per key, in fixed order), times 1/sqrt(head_dim); softmax in f32 with the exponent
// sum taken in 16 lanes by key index mod 16; the output accumulates weight·v over keys in
// increasing order. Nothing depends on other queries, on the chunk the token arrived in or on
// the thread: a query's output is a pure function of (q, keys 0..position, values 0..position).
//
// The query heads sharing one KV head (a GQA group) are processed together so each key and value
// vector is loaded once for all of them.
#pragma once

#include <cstdint>

#include "worker/cpu/paged_kv_cache.h"

namespace reflect::cpu {

struct AttentionGroup {
  int64_t layer = 0;
  int64_t kv_head = 0;
  int64_t position = 0;                  // of the query token
  const int32_t* block_table = nullptr;  // covers positions 0..position
  const float* queries = nullptr;        // group_size heads × head_dim, RoPE applied
  int64_t group_size = 0;                // query heads per KV head
  float scale = 1.0f;
};

// Floats of scratch AttendGroup needs for a query at `position`.
int64_t AttentionScratchSize(int64_t position, int64_t block_size, int64_t group_size);

// Writes group_size × head_dim floats to `output`.
void AttendGroup(const PagedKvCache& cache, const AttentionGroup& group, float* scratch,
                 float* output);

}  // namespace reflect::cpu
