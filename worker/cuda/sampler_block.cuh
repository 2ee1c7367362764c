// Block-wide building blocks of the sampling kernel (one thread block of kThreads per row):
// reductions, histograms of (count, mass) and the search for the first histogram bin whose
// running total reaches a goal.
//
// Masses are fixed point: a weight w in [0, 1] counts as round(w · 2^s) in an unsigned 64-bit
// integer, s chosen per vocabulary so that the whole row's sum cannot overflow. Integer sums are
// exact in any order, so atomics, warp shuffles and thread counts never change a result: a row
// samples the same token in any batch and on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "worker/cuda/sampler_kernels.h"

namespace reflect::cuda::sampler {

inline constexpr int kThreads = 512;  // per block, one block per row
inline constexpr int kWarpSize = 32;
inline constexpr int kWarps = kThreads / kWarpSize;
inline constexpr unsigned kFullMask = 0xffffffffu;

// Histogram of a row by distance below its largest logit: bucket floor((max - logit) · 16), the
// last bucket taking everything from 127.94 down (weights there are 0). Buckets are contiguous
// runs of the ranking, so the bucket where a running total crosses a goal holds the token that
// crosses it, and only that bucket's tokens need a finer search.
inline constexpr int kBuckets = 2048;
inline constexpr float kBucketsPerUnit = 16.0f;
// Tokens of one bucket searched from shared memory; a fuller bucket (near-flat rows, many ties)
// is searched by passes over the whole row instead.
inline constexpr int kCandidateCapacity = 2048;
// The finer search: radix select on rank keys, 8 bits per pass.
inline constexpr int kRadixBits = 8;
inline constexpr int kRadixBins = 1 << kRadixBits;

// 64-bit unsigned as CUDA's atomics and shuffles name it (uint64_t is unsigned long here).
using FixedMass = unsigned long long;
using RankKey = unsigned long long;  // (ordered logit bits, vocab - 1 - id): larger ranks first

// How many tokens, and how much mass, a set of them holds.
struct Tally {
  uint32_t count;
  FixedMass mass;
};

__device__ __forceinline__ Tally operator+(Tally left, Tally right) {
  return Tally{left.count + right.count, left.mass + right.mass};
}

// What a running total over the ranking must reach: a count (top-k, the n-th token), a mass at
// least (top-p), or a mass above (the draw's inverse CDF). Masses compare in real units.
struct Goal {
  enum class Kind { kCountAtLeast, kMassAtLeast, kMassAbove };
  Kind kind;
  uint32_t count;
  double mass;
  double mass_unit;  // 2^-s: the real weight of one fixed-point unit

  __device__ bool ReachedBy(Tally total) const {
    if (kind == Kind::kCountAtLeast) return total.count >= count;
    const double value = __dmul_rn(__ull2double_rn(total.mass), mass_unit);
    return kind == Kind::kMassAtLeast ? value >= mass : value > mass;
  }
};

// Block scratch, in shared memory (one per block). 64-bit arrays first: no padding.
struct SharedState {
  FixedMass bucket_mass[kBuckets];  // per bucket, then running totals (InclusiveScan)
  RankKey candidates[kCandidateCapacity];
  FixedMass bin_mass[kRadixBins];
  FixedMass warp_mass[kWarps];
  RankKey alternatives[kSamplerMaxAlternatives];
  uint32_t bucket_count[kBuckets];
  uint32_t bin_count[kRadixBins];
  uint32_t warp_count[kWarps];
  uint32_t candidate_count;
  uint32_t alternative_count;
  int found_bin;
};
static_assert(sizeof(SharedState) <= 48 * 1024, "the sampling kernel's static shared memory");

__device__ __forceinline__ int LaneId() { return static_cast<int>(threadIdx.x) % kWarpSize; }
__device__ __forceinline__ int WarpId() { return static_cast<int>(threadIdx.x) / kWarpSize; }

struct Plus {
  __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return a + b;
  }
};
struct Larger {
  __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return max(a, b);
  }
};

// `combine` over the 32 lanes' values, returned to every lane.
template <typename Combine>
__device__ __forceinline__ unsigned long long WarpReduce(unsigned long long value,
                                                         Combine combine) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    value = combine(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

// `combine` over every thread's value (0 is its identity), returned to every thread. All threads
// call it.
template <typename Combine>
__device__ __forceinline__ unsigned long long BlockReduce(unsigned long long value,
                                                          SharedState& shared, Combine combine) {
  value = WarpReduce(value, combine);
  if (LaneId() == 0) shared.warp_mass[WarpId()] = value;
  __syncthreads();
  unsigned long long total = 0;
  for (int warp = 0; warp < kWarps; ++warp) total = combine(total, shared.warp_mass[warp]);
  __syncthreads();  // warp_mass is free again
  return total;
}

__device__ __forceinline__ unsigned long long WarpSum(unsigned long long value) {
  return WarpReduce(value, Plus{});
}

__device__ __forceinline__ unsigned long long BlockSum(unsigned long long value,
                                                       SharedState& shared) {
  return BlockReduce(value, shared, Plus{});
}

__device__ __forceinline__ unsigned long long BlockMax(unsigned long long value,
                                                       SharedState& shared) {
  return BlockReduce(value, shared, Larger{});
}

// Adds one token (count 1, `mass`) to bin `bin` of a shared histogram; bin -1 adds nothing.
// Called by all 32 lanes of the warp together. A warp whose lanes all hit one bin (ties, narrow
// ranges) adds once instead of 32 colliding atomics.
__device__ __forceinline__ void AddToBins(uint32_t* counts, FixedMass* masses, int bin,
                                          FixedMass mass) {
  const int first_lane_bin = __shfl_sync(kFullMask, bin, 0);
  if (__all_sync(kFullMask, bin == first_lane_bin)) {
    if (first_lane_bin < 0) return;
    const FixedMass warp_mass = WarpSum(mass);
    if (LaneId() == 0) {
      atomicAdd(&counts[bin], static_cast<uint32_t>(kWarpSize));
      atomicAdd(&masses[bin], warp_mass);
    }
    return;
  }
  if (bin >= 0) {
    atomicAdd(&counts[bin], 1u);
    atomicAdd(&masses[bin], mass);
  }
}

// Zeroes bins [0, bin_count). All threads call it; the caller synchronizes before adding.
__device__ __forceinline__ void ClearBins(uint32_t* counts, FixedMass* masses, int bin_count) {
  for (int bin = static_cast<int>(threadIdx.x); bin < bin_count; bin += kThreads) {
    counts[bin] = 0;
    masses[bin] = 0;
  }
}

// Replaces bins [0, bin_count) by their running totals (bin b: bins 0..b). Each thread sums a
// contiguous run of bins, then the threads' totals are scanned across the block.
__device__ inline void InclusiveScan(uint32_t* counts, FixedMass* masses, int bin_count,
                                     SharedState& shared) {
  const int per_thread = (bin_count + kThreads - 1) / kThreads;
  const int begin = min(bin_count, static_cast<int>(threadIdx.x) * per_thread);
  const int end = min(bin_count, begin + per_thread);
  Tally own{0, 0};
  for (int bin = begin; bin < end; ++bin) {
    own.count += counts[bin];
    own.mass += masses[bin];
    counts[bin] = own.count;
    masses[bin] = own.mass;
  }
  // Inclusive scan of the threads' totals within the warp, then of the warps' totals.
  Tally running = own;
  for (int offset = 1; offset < kWarpSize; offset *= 2) {
    const uint32_t count = __shfl_up_sync(kFullMask, running.count, offset);
    const FixedMass mass = __shfl_up_sync(kFullMask, running.mass, offset);
    if (LaneId() >= offset) running = running + Tally{count, mass};
  }
  if (LaneId() == kWarpSize - 1) {
    shared.warp_count[WarpId()] = running.count;
    shared.warp_mass[WarpId()] = running.mass;
  }
  __syncthreads();
  if (WarpId() == 0) {
    Tally warp_running = LaneId() < kWarps
                             ? Tally{shared.warp_count[LaneId()], shared.warp_mass[LaneId()]}
                             : Tally{0, 0};
    for (int offset = 1; offset < kWarpSize; offset *= 2) {
      const uint32_t count = __shfl_up_sync(kFullMask, warp_running.count, offset);
      const FixedMass mass = __shfl_up_sync(kFullMask, warp_running.mass, offset);
      if (LaneId() >= offset) warp_running = warp_running + Tally{count, mass};
    }
    if (LaneId() < kWarps) {
      shared.warp_count[LaneId()] = warp_running.count;
      shared.warp_mass[LaneId()] = warp_running.mass;
    }
  }
  __syncthreads();
  // Everything before this thread's run: earlier lanes of its warp, then earlier warps.
  Tally before{running.count - own.count, running.mass - own.mass};
  if (WarpId() > 0)
    before = before + Tally{shared.warp_count[WarpId() - 1], shared.warp_mass[WarpId() - 1]};
  for (int bin = begin; bin < end; ++bin) {
    counts[bin] += before.count;
    masses[bin] += before.mass;
  }
  __syncthreads();
}

// The first bin b of running totals (InclusiveScan) with `goal` reached by before + total(b)
// but not by before + total(b - 1): the bin holding the token that reaches the goal. -1 when
// even the last bin does not reach it. All threads call it and get the answer.
__device__ inline int FindFirstBin(const uint32_t* counts, const FixedMass* masses, int bin_count,
                                   Tally before, const Goal& goal, SharedState& shared) {
  if (threadIdx.x == 0) shared.found_bin = -1;
  __syncthreads();
  for (int bin = static_cast<int>(threadIdx.x); bin < bin_count; bin += kThreads) {
    const Tally through = before + Tally{counts[bin], masses[bin]};
    const Tally prior = bin == 0 ? before : before + Tally{counts[bin - 1], masses[bin - 1]};
    // Running totals only grow, so exactly one bin (or none) passes.
    if (goal.ReachedBy(through) && !goal.ReachedBy(prior)) shared.found_bin = bin;
  }
  __syncthreads();
  const int found = shared.found_bin;
  __syncthreads();  // found_bin is free again
  return found;
}

}  // namespace reflect::cuda::sampler
