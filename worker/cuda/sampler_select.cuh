// Finding a token by its place in a row's ranking without sorting the row: the token where a
// running total over the ranking (by logit descending, then id ascending) first reaches a goal —
// the k-th token for top-k, the top-p boundary, the draw's inverse CDF, the n-th alternative.
//
// Two levels. The row's bucket histogram (by distance below the largest logit, BuildBuckets)
// names the bucket where the goal is reached; then a radix select over the rank keys of that
// bucket's tokens, 8 bits a pass from the top, names the token. A bucket that fits in shared
// memory is gathered there first (the usual case: one pass over the row), else every pass reads
// the row again and keeps the bucket's tokens.
//
// Rank keys are (ordered logit bits << id_bits) | (vocab - 1 - id): unique, and larger for
// earlier ranks, so ties resolve by id and the search ends on exactly one token.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "worker/cuda/sampler_block.cuh"
#include "worker/cuda/sampler_math.cuh"

namespace reflect::cuda::sampler {

// One row as the kernel sees it: raw logits (after penalties), how they are scaled and ranked.
struct RowView {
  const float* logits;
  int vocab_size;
  int id_bits;       // bits of the id field of a rank key: vocab_size <= 2^id_bits
  int radix_passes;  // ceil((32 + id_bits) / kRadixBits)
  float scale;       // 1/temperature, or 1 for greedy
  float max_value;   // the largest value (set once known)
  float mass_scale;  // 2^s: fixed-point units per unit of weight
  double mass_unit;  // 2^-s

  // The logit as ranked: NaN as -inf, times 1/temperature (as worker/sampler.cc).
  __device__ float Value(int id) const {
    const float raw = logits[id];
    return isnan(raw) ? -INFINITY : __fmul_rn(raw, scale);
  }
  __device__ RankKey KeyOf(float value, int id) const {
    return (static_cast<RankKey>(OrderedBits(value)) << id_bits) |
           static_cast<RankKey>(vocab_size - 1 - id);
  }
  __device__ float ValueOfKey(RankKey key) const {
    return FromOrderedBits(static_cast<uint32_t>(key >> id_bits));
  }
  __device__ int IdOfKey(RankKey key) const {
    return vocab_size - 1 - static_cast<int>(key & ((RankKey{1} << id_bits) - 1));
  }
  // worker/sampler.cc's weight(id): ExpOne(logit - max_logit), the subtraction in float.
  __device__ float WeightOf(float value) const { return TokenWeight(__fsub_rn(value, max_value)); }
  __device__ FixedMass MassOf(float weight) const {
    return __float2ull_rn(__fmul_rn(weight, mass_scale));  // exact scaling, then nearest
  }
  // Non-increasing in value (max - value and the scaling round monotonically), so a bucket is a
  // run of the ranking. NaN distances (value = max = inf) go to the last bucket.
  __device__ int BucketOf(float value) const {
    const float scaled = __fmul_rn(__fsub_rn(max_value, value), kBucketsPerUnit);
    return scaled < static_cast<float>(kBuckets - 1) ? static_cast<int>(scaled) : kBuckets - 1;
  }
};

// A token found by Select, and the running total of the ranking through it (its rank + 1, and
// the mass of the ranks up to and including it).
struct Selection {
  bool found;
  RankKey key;
  Tally through;
};

// Calls visit(key, active) for every token of the row (active: id < vocab and `keep(value)`),
// the same number of times on every thread of the block, so `visit` may use warp collectives.
template <typename Keep, typename Visit>
__device__ void ForEachRowToken(const RowView& row, Keep keep, Visit visit) {
  for (int base = 0; base < row.vocab_size; base += kThreads) {
    const int id = base + static_cast<int>(threadIdx.x);
    const bool in_row = id < row.vocab_size;
    const float value = in_row ? row.Value(id) : 0.0f;
    const bool active = in_row && keep(value);
    visit(active ? row.KeyOf(value, id) : RankKey{0}, active);
  }
}

// Copies the rank keys of bucket `bucket`'s tokens (at most kCandidateCapacity) into
// shared.candidates, in no particular order, and returns how many.
__device__ inline uint32_t GatherBucket(const RowView& row, int bucket, SharedState& shared) {
  if (threadIdx.x == 0) shared.candidate_count = 0;
  __syncthreads();
  ForEachRowToken(
      row, [&](float value) { return row.BucketOf(value) == bucket; },
      [&](RankKey key, bool active) {
        // One shared atomic per warp, then each lane takes its place among the warp's matches.
        const unsigned matches = __ballot_sync(kFullMask, active);
        if (matches == 0) return;
        const int leader = __ffs(matches) - 1;
        uint32_t start = 0;
        if (LaneId() == leader)
          start = atomicAdd(&shared.candidate_count, static_cast<uint32_t>(__popc(matches)));
        start = __shfl_sync(kFullMask, start, leader);
        if (active) {
          const unsigned lanes_below = (1u << LaneId()) - 1u;
          shared.candidates[start + __popc(matches & lanes_below)] = key;
        }
      });
  __syncthreads();
  const uint32_t gathered = shared.candidate_count;
  __syncthreads();
  return gathered;
}

// Radix select among one bucket's tokens: the token whose running total reaches `goal`, given
// the total `before` of every earlier rank (which does not reach it) and that the bucket's last
// token does. `for_each_token(visit)` visits the bucket's tokens as ForEachRowToken does.
template <typename ForEachToken>
__device__ Selection RadixSelect(const RowView& row, ForEachToken for_each_token, Tally before,
                                 const Goal& goal, SharedState& shared) {
  RankKey prefix = 0;  // the digits chosen so far
  Tally above = before;
  Tally through = before;
  for (int pass = 0; pass < row.radix_passes; ++pass) {
    const int shift = kRadixBits * (row.radix_passes - 1 - pass);
    // shift + kRadixBits <= 32 + 24 < 64: the shifts below are defined.
    const RankKey chosen_high = prefix >> (shift + kRadixBits);
    ClearBins(shared.bin_count, shared.bin_mass, kRadixBins);
    __syncthreads();
    for_each_token([&](RankKey key, bool active) {
      const bool matches = active && (key >> (shift + kRadixBits)) == chosen_high;
      // Bins in rank order: the largest digit first.
      const int bin =
          matches ? kRadixBins - 1 - static_cast<int>((key >> shift) & (kRadixBins - 1)) : -1;
      const FixedMass mass = matches ? row.MassOf(row.WeightOf(row.ValueOfKey(key))) : 0;
      AddToBins(shared.bin_count, shared.bin_mass, bin, mass);
    });
    __syncthreads();
    InclusiveScan(shared.bin_count, shared.bin_mass, kRadixBins, shared);
    const int bin =
        FindFirstBin(shared.bin_count, shared.bin_mass, kRadixBins, above, goal, shared);
    if (bin < 0) return Selection{false, 0, before};  // only if the caller's promise is broken
    through = above + Tally{shared.bin_count[bin], shared.bin_mass[bin]};
    if (bin > 0) above = above + Tally{shared.bin_count[bin - 1], shared.bin_mass[bin - 1]};
    prefix |= static_cast<RankKey>(kRadixBins - 1 - bin) << shift;
    __syncthreads();  // the bins are read; the next pass clears them
  }
  return Selection{true, prefix, through};
}

// The token of the row whose running total over the ranking first reaches `goal`; not found
// when the whole row does not reach it. The bucket histogram must be built (BuildBuckets).
__device__ inline Selection Select(const RowView& row, const Goal& goal, SharedState& shared) {
  const int bucket =
      FindFirstBin(shared.bucket_count, shared.bucket_mass, kBuckets, Tally{0, 0}, goal, shared);
  if (bucket < 0) return Selection{false, 0, Tally{0, 0}};
  const Tally before = bucket == 0
                           ? Tally{0, 0}
                           : Tally{shared.bucket_count[bucket - 1], shared.bucket_mass[bucket - 1]};
  const uint32_t population = shared.bucket_count[bucket] - before.count;
  if (population <= kCandidateCapacity) {
    const uint32_t gathered = GatherBucket(row, bucket, shared);
    auto for_each_candidate = [&](auto visit) {
      for (uint32_t base = 0; base < gathered; base += kThreads) {
        const uint32_t index = base + threadIdx.x;
        const bool active = index < gathered;
        visit(active ? shared.candidates[index] : RankKey{0}, active);
      }
    };
    return RadixSelect(row, for_each_candidate, before, goal, shared);
  }
  auto for_each_bucket_token = [&](auto visit) {
    ForEachRowToken(
        row, [&](float value) { return row.BucketOf(value) == bucket; }, visit);
  };
  return RadixSelect(row, for_each_bucket_token, before, goal, shared);
}

}  // namespace reflect::cuda::sampler
