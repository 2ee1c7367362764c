#include "worker/cpu/paged_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "worker/cpu/vector_math.h"

namespace reflect::cpu {
namespace {

// Heads handled per pass: bounded so the accumulators stay in registers.
constexpr int kMaxHeadsPerPass = 4;

int64_t PaddedKeys(int64_t position, int64_t block_size) {
  const int64_t blocks = position / block_size + 1;
  return blocks * block_size;
}

// scores[h][key] = (q_h · k_key) * scale for every key slot of the blocks covering 0..position.
template <int kHeads>
void Scores(const PagedKvCache& cache, const AttentionGroup& group, const float* queries,
            float* scores, int64_t score_stride) {
  const int64_t block_size = cache.block_size();
  const int64_t head_dim = cache.head_dim();
  const int64_t num_blocks = group.position / block_size + 1;
  const __m512 scale = _mm512_set1_ps(group.scale);
  for (int64_t block = 0; block < num_blocks; ++block) {
    const float* keys = cache.Keys(group.layer, group.block_table[block], group.kv_head);
    for (int64_t slot = 0; slot < block_size; slot += kLanes) {
      const __mmask16 mask = FirstLanes(block_size - slot);
      // Two chains per head (even and odd dimensions) halve the FMA latency chain.
      __m512 even[kHeads];
      __m512 odd[kHeads];
#pragma GCC unroll 4
      for (int head = 0; head < kHeads; ++head) {
        even[head] = _mm512_setzero_ps();
        odd[head] = _mm512_setzero_ps();
      }
      int64_t dimension = 0;
      for (; dimension + 1 < head_dim; dimension += 2) {
        const __m512 key_even = _mm512_maskz_loadu_ps(mask, keys + dimension * block_size + slot);
        const __m512 key_odd =
            _mm512_maskz_loadu_ps(mask, keys + (dimension + 1) * block_size + slot);
#pragma GCC unroll 4
        for (int head = 0; head < kHeads; ++head) {
          const float* query = queries + head * head_dim;
          even[head] = _mm512_fmadd_ps(_mm512_set1_ps(query[dimension]), key_even, even[head]);
          odd[head] = _mm512_fmadd_ps(_mm512_set1_ps(query[dimension + 1]), key_odd, odd[head]);
        }
      }
      if (dimension < head_dim) {
        const __m512 key_even = _mm512_maskz_loadu_ps(mask, keys + dimension * block_size + slot);
#pragma GCC unroll 4
        for (int head = 0; head < kHeads; ++head) {
          even[head] = _mm512_fmadd_ps(_mm512_set1_ps(queries[head * head_dim + dimension]),
                                       key_even, even[head]);
        }
      }
#pragma GCC unroll 4
      for (int head = 0; head < kHeads; ++head) {
        const __m512 score = _mm512_mul_ps(_mm512_add_ps(even[head], odd[head]), scale);
        _mm512_mask_storeu_ps(scores + head * score_stride + block * block_size + slot, mask,
                              score);
      }
    }
  }
}

// Replaces scores[0..count) by exp(score - max) and returns their sum.
float ExponentiateRow(float* scores, int64_t count) {
  __m512 maximum = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t index = 0; index < count; index += kLanes) {
    const __mmask16 mask = FirstLanes(count - index);
    maximum =
        _mm512_mask_max_ps(maximum, mask, maximum, _mm512_maskz_loadu_ps(mask, scores + index));
  }
  const __m512 row_maximum = _mm512_set1_ps(MaxLanes(maximum));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t index = 0; index < count; index += kLanes) {
    const __mmask16 mask = FirstLanes(count - index);
    const __m512 exponent =
        Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scores + index), row_maximum));
    _mm512_mask_storeu_ps(scores + index, mask, exponent);
    sum = _mm512_mask_add_ps(sum, mask, sum, exponent);
  }
  return SumLanes(sum);
}

// output[h] = Σ_key weight[h][key] · v_key / sums[h], keys in increasing order.
template <int kHeads>
void WeightedValues(const PagedKvCache& cache, const AttentionGroup& group, const float* weights,
                    int64_t weight_stride, const float* sums, float* output) {
  const int64_t block_size = cache.block_size();
  const int64_t head_dim = cache.head_dim();
  const int64_t num_keys = group.position + 1;
  const int64_t num_blocks = group.position / block_size + 1;
  // Two 16-dimension chunks per sweep over the keys.
  for (int64_t chunk = 0; chunk < head_dim; chunk += 2 * kLanes) {
    const __mmask16 first_mask = FirstLanes(head_dim - chunk);
    const __mmask16 second_mask =
        chunk + kLanes < head_dim ? FirstLanes(head_dim - chunk - kLanes) : 0;
    __m512 first[kHeads];
    __m512 second[kHeads];
#pragma GCC unroll 4
    for (int head = 0; head < kHeads; ++head) {
      first[head] = _mm512_setzero_ps();
      second[head] = _mm512_setzero_ps();
    }
    for (int64_t block = 0; block < num_blocks; ++block) {
      const float* values = cache.Values(group.layer, group.block_table[block], group.kv_head);
      const int64_t slots = std::min(block_size, num_keys - block * block_size);
      for (int64_t slot = 0; slot < slots; ++slot) {
        const float* value = values + slot * head_dim + chunk;
        const __m512 value_first = _mm512_maskz_loadu_ps(first_mask, value);
        const __m512 value_second = _mm512_maskz_loadu_ps(second_mask, value + kLanes);
        const int64_t key = block * block_size + slot;
#pragma GCC unroll 4
        for (int head = 0; head < kHeads; ++head) {
          const __m512 weight = _mm512_set1_ps(weights[head * weight_stride + key]);
          first[head] = _mm512_fmadd_ps(weight, value_first, first[head]);
          second[head] = _mm512_fmadd_ps(weight, value_second, second[head]);
        }
      }
    }
#pragma GCC unroll 4
    for (int head = 0; head < kHeads; ++head) {
      const __m512 sum = _mm512_set1_ps(sums[head]);
      float* destination = output + head * head_dim + chunk;
      _mm512_mask_storeu_ps(destination, first_mask, _mm512_div_ps(first[head], sum));
      _mm512_mask_storeu_ps(destination + kLanes, second_mask, _mm512_div_ps(second[head], sum));
    }
  }
}

template <int kHeads>
void AttendHeads(const PagedKvCache& cache, const AttentionGroup& group, const float* queries,
                 float* scratch, float* output) {
  const int64_t stride = PaddedKeys(group.position, cache.block_size());
  Scores<kHeads>(cache, group, queries, scratch, stride);
  float sums[kHeads];
  for (int head = 0; head < kHeads; ++head) {
    sums[head] = ExponentiateRow(scratch + head * stride, group.position + 1);
  }
  WeightedValues<kHeads>(cache, group, scratch, stride, sums, output);
}

}  // namespace

int64_t AttentionScratchSize(int64_t position, int64_t block_size, int64_t group_size) {
  return PaddedKeys(position, block_size) * std::min<int64_t>(group_size, kMaxHeadsPerPass);
}

void AttendGroup(const PagedKvCache& cache, const AttentionGroup& group, float* scratch,
                 float* output) {
  const int64_t head_dim = cache.head_dim();
  for (int64_t first = 0; first < group.group_size; first += kMaxHeadsPerPass) {
    const float* queries = group.queries + first * head_dim;
    float* head_output = output + first * head_dim;
    switch (std::min<int64_t>(kMaxHeadsPerPass, group.group_size - first)) {
      case 1:
        AttendHeads<1>(cache, group, queries, scratch, head_output);
        break;
      case 2:
        AttendHeads<2>(cache, group, queries, scratch, head_output);
        break;
      case 3:
        AttendHeads<3>(cache, group, queries, scratch, head_output);
        break;
      default:
        AttendHeads<4>(cache, group, queries, scratch, head_output);
        break;
    }
  }
}

}  // namespace reflect::cpu
