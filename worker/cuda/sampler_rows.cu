// The sampling kernel: worker/sampler.cc's SampleToken after the penalties, one thread block per
// row, over logits that stay on the device.
//
// Greedy: one pass for the largest logit (lowest id among equals), one for the normalizer
// Σ e^(logit - max); with alternatives, the bucket histogram and a selection of the n-th token.
// Otherwise: the largest scaled logit, the bucket histogram (which also counts the tokens of
// weight > 0 and sums those of weight >= min_p), then one Select (sampler_select.cuh) per
// threshold — top-k's k-th token, top-p's boundary, the draw — and for alternatives the n-th.
//
// Agreement with the host: weights are the host's bit for bit (sampler_math.cuh) and the ranking
// is the same total order (logit descending, id ascending, NaN as -inf). Only the sums differ:
// the host adds double weights in rank order (top-k, top-p, the draw) or over 16 vector lanes
// (the normalizer); here each weight is rounded to a fixed-point integer (2^s units, s = 63 -
// id_bits >= 39) and the integers add exactly, in whatever order the threads run. Each rounding
// is at most 2^-(s+1), so a mass over the whole vocabulary is off by at most
// vocab · 2^-(s+1) <= 2^-(64 - 2·id_bits) (1e-9 at 128k tokens), against masses >= 1 (the top
// token weighs 1); the host's double sums are closer still. So a mass comparison (top-p, the
// draw) can go the other way only when the host's running mass is within ~1e-9 (relative) of
// the threshold: well inside the 1e-5 of cuda_sampler.h. Logprobs agree to ~1e-9.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "worker/cuda/sampler_block.cuh"
#include "worker/cuda/sampler_kernels.h"
#include "worker/cuda/sampler_math.cuh"
#include "worker/cuda/sampler_select.cuh"

namespace reflect::cuda {
namespace sampler {
namespace {

// What BuildBuckets learns about the whole row besides the histogram.
struct RowSummary {
  Tally total;              // every token
  Tally min_p_kept;         // tokens of weight >= min_p (at least the top token)
  uint32_t positive_count;  // tokens of weight > 0: a prefix of the ranking
};

__device__ double RealMass(const RowView& row, FixedMass mass) {
  return __dmul_rn(__ull2double_rn(mass), row.mass_unit);
}

// Fills shared.bucket_count / bucket_mass with the running totals of the row's buckets.
// row.max_value must be set and finite.
__device__ RowSummary BuildBuckets(const RowView& row, double min_p, SharedState& shared) {
  ClearBins(shared.bucket_count, shared.bucket_mass, kBuckets);
  __syncthreads();
  uint32_t positive_count = 0;
  uint32_t min_p_count = 0;
  FixedMass min_p_mass = 0;
  for (int base = 0; base < row.vocab_size; base += kThreads) {
    const int id = base + static_cast<int>(threadIdx.x);
    const bool in_row = id < row.vocab_size;
    const float value = in_row ? row.Value(id) : 0.0f;
    const float weight = in_row ? row.WeightOf(value) : 0.0f;
    const FixedMass mass = row.MassOf(weight);
    AddToBins(shared.bucket_count, shared.bucket_mass, in_row ? row.BucketOf(value) : -1, mass);
    if (in_row && weight > 0.0f) ++positive_count;
    // worker/sampler.cc stops at the first rank with `token_weight < min_p` (in double); this
    // counts every token of weight >= min_p. The same set, as weights fall along the ranking:
    // except that cpu::Exp steps up by an ulp at ~3000 of the 10^9 floats in [-103, 0], so a
    // min_p within an ulp of such a weight could keep a token the host drops.
    if (in_row && static_cast<double>(weight) >= min_p) {
      ++min_p_count;
      min_p_mass += mass;
    }
  }
  __syncthreads();
  InclusiveScan(shared.bucket_count, shared.bucket_mass, kBuckets, shared);
  RowSummary summary;
  summary.total = Tally{shared.bucket_count[kBuckets - 1], shared.bucket_mass[kBuckets - 1]};
  summary.positive_count = static_cast<uint32_t>(BlockSum(positive_count, shared));
  summary.min_p_kept =
      Tally{static_cast<uint32_t>(BlockSum(min_p_count, shared)), BlockSum(min_p_mass, shared)};
  // The top token (weight exactly 1) always stays, even for a min_p above 1.
  if (summary.min_p_kept.count == 0) summary.min_p_kept = Tally{1, row.MassOf(1.0f)};
  return summary;
}

// The rank keys of the first `count` (1..kSamplerMaxAlternatives) tokens of the ranking, best
// first, into shared.alternatives. Needs the bucket histogram.
__device__ void CollectTop(const RowView& row, uint32_t count, SharedState& shared) {
  const Selection last = Select(row, Goal{Goal::Kind::kCountAtLeast, count, 0.0, 0.0}, shared);
  const int last_bucket = row.BucketOf(row.ValueOfKey(last.key));
  if (threadIdx.x == 0) shared.alternative_count = 0;
  __syncthreads();
  // Keys are unique, so exactly `count` tokens have a key >= the last one's.
  ForEachRowToken(
      row, [&](float value) { return row.BucketOf(value) <= last_bucket; },
      [&](RankKey key, bool active) {
        if (!active || key < last.key) return;
        const uint32_t slot = atomicAdd(&shared.alternative_count, 1u);
        if (slot < kSamplerMaxAlternatives) shared.alternatives[slot] = key;
      });
  __syncthreads();
  if (threadIdx.x == 0) {
    for (uint32_t sorted = 1; sorted < count; ++sorted) {  // insertion sort, largest key first
      const RankKey key = shared.alternatives[sorted];
      uint32_t place = sorted;
      for (; place > 0 && shared.alternatives[place - 1] < key; --place)
        shared.alternatives[place] = shared.alternatives[place - 1];
      shared.alternatives[place] = key;
    }
  }
  __syncthreads();
}

// The largest rank key of the row: its largest value, lowest id among equals. Greedy skips NaN
// (ArgMax never picks it); the scaled values have none (NaN is -inf there). 0 when all are NaN.
__device__ RankKey FirstRankKey(const RowView& row, bool skip_nan, SharedState& shared) {
  RankKey best = 0;
  for (int id = static_cast<int>(threadIdx.x); id < row.vocab_size; id += kThreads) {
    if (skip_nan && isnan(row.logits[id])) continue;
    best = max(best, row.KeyOf(row.Value(id), id));
  }
  return BlockMax(best, shared);
}

// Temperature 0: the first token of the ranking; logprobs under the penalized softmax at
// temperature 1, log(weight) - log(Σ weights) as the host computes them. Thread 0 writes
// `result` (global memory).
__device__ void SampleGreedy(RowView& row, const SamplerRowParams& params, SharedState& shared,
                             SamplerRowResult* result) {
  const bool writer = threadIdx.x == 0;
  const RankKey best = FirstRankKey(row, /*skip_nan=*/true, shared);
  row.max_value = best == 0 ? NAN : row.ValueOfKey(best);
  if (writer) {
    result->token_id = best == 0 ? 0 : row.IdOfKey(best);
    result->alternative_count = 0;
  }
  if (!isfinite(row.max_value)) {
    // Every weight is 0 (e^NaN or e^-inf), so the host's normalizer is 0: logprob -log 0.
    if (writer) result->logprob = INFINITY;
    return;
  }
  FixedMass normalizer = 0;
  if (params.logprobs == 0) {
    for (int id = static_cast<int>(threadIdx.x); id < row.vocab_size; id += kThreads)
      normalizer += row.MassOf(row.WeightOf(row.Value(id)));
    normalizer = BlockSum(normalizer, shared);
  } else {
    normalizer = BuildBuckets(row, 0.0, shared).total.mass;
  }
  const double log_normalizer = log(RealMass(row, normalizer));
  if (writer) result->logprob = static_cast<float>(-log_normalizer);
  if (params.logprobs == 0) return;
  const uint32_t count =
      min(static_cast<uint32_t>(params.logprobs), static_cast<uint32_t>(row.vocab_size));
  CollectTop(row, count, shared);
  if (!writer) return;
  int32_t listed = 0;
  for (uint32_t rank = 0; rank < count; ++rank) {
    const RankKey key = shared.alternatives[rank];
    const double logprob =
        static_cast<double>(__fsub_rn(row.ValueOfKey(key), row.max_value)) - log_normalizer;
    if (!isfinite(logprob)) continue;  // -inf or NaN logits: not a possible token
    result->alternative_ids[listed] = row.IdOfKey(key);
    result->alternative_logprobs[listed] = static_cast<float>(logprob);
    ++listed;
  }
  result->alternative_count = listed;
}

// Temperature > 0: top-k, top-p, min-p, then the draw, as worker/sampler.cc. The kept tokens are
// a prefix of the ranking, `kept` its count and mass. Thread 0 writes `result`.
__device__ void SampleRandom(RowView& row, const SamplerRowParams& params, SharedState& shared,
                             SamplerRowResult* result) {
  const bool writer = threadIdx.x == 0;
  const RankKey best = FirstRankKey(row, /*skip_nan=*/false, shared);
  row.max_value = row.ValueOfKey(best);
  if (writer) result->alternative_count = 0;
  if (!isfinite(row.max_value)) {
    // Every weight is 0: the host draws its first rank, of logprob log(0 / 0).
    if (writer) {
      result->token_id = row.IdOfKey(best);
      result->logprob = NAN;
    }
    return;
  }
  const RowSummary summary = BuildBuckets(row, params.min_p, shared);
  const uint32_t vocab_size = static_cast<uint32_t>(row.vocab_size);
  Tally kept = summary.total;
  if (static_cast<uint32_t>(params.top_k) < vocab_size) {
    kept =
        Select(row, Goal{Goal::Kind::kCountAtLeast, static_cast<uint32_t>(params.top_k), 0.0, 0.0},
               shared)
            .through;
  }
  const double top_k_mass = RealMass(row, kept.mass);
  if (params.min_p > 0.0 && summary.min_p_kept.count < kept.count) kept = summary.min_p_kept;
  if (params.top_p < 1.0) {
    // The shortest prefix whose mass reaches top_p of top-k's (host: kept_mass >= top_p · mass).
    const Goal goal{Goal::Kind::kMassAtLeast, 0, __dmul_rn(params.top_p, top_k_mass),
                    row.mass_unit};
    const Selection boundary = Select(row, goal, shared);
    if (boundary.found && boundary.through.count < kept.count) kept = boundary.through;
  }
  const double kept_mass = RealMass(row, kept.mass);

  // The inverse CDF: the first rank whose running mass exceeds u · kept_mass. When rounding
  // leaves none inside the kept prefix, the host ends on its last token of weight > 0.
  const double target = __dmul_rn(SamplingUniformOnDevice(params.seed, params.position), kept_mass);
  Selection drawn = Select(row, Goal{Goal::Kind::kMassAbove, 0, target, row.mass_unit}, shared);
  if (!drawn.found || drawn.through.count > kept.count) {
    drawn = Select(
        row, Goal{Goal::Kind::kCountAtLeast, min(kept.count, summary.positive_count), 0.0, 0.0},
        shared);
  }
  if (writer) {
    const float weight = row.WeightOf(row.ValueOfKey(drawn.key));
    result->token_id = row.IdOfKey(drawn.key);
    result->logprob = static_cast<float>(log(static_cast<double>(weight) / kept_mass));
  }

  // Alternatives: the first kept ranks of weight > 0 (a prefix), same formula as the token's.
  const uint32_t count =
      min(min(static_cast<uint32_t>(params.logprobs), kept.count), summary.positive_count);
  if (count == 0) return;
  CollectTop(row, count, shared);
  if (!writer) return;
  for (uint32_t rank = 0; rank < count; ++rank) {
    const RankKey key = shared.alternatives[rank];
    const float weight = row.WeightOf(row.ValueOfKey(key));
    result->alternative_ids[rank] = row.IdOfKey(key);
    result->alternative_logprobs[rank] =
        static_cast<float>(log(static_cast<double>(weight) / kept_mass));
  }
  result->alternative_count = static_cast<int32_t>(count);
}

__global__ void __launch_bounds__(kThreads)
    SampleRowsKernel(const float* logits, int vocab_size, int id_bits, float mass_scale,
                     double mass_unit, const SamplerRowParams* rows, SamplerRowResult* results) {
  __shared__ SharedState shared;
  const SamplerRowParams params = rows[blockIdx.x];
  RowView row;
  row.logits = logits + static_cast<int64_t>(blockIdx.x) * vocab_size;
  row.vocab_size = vocab_size;
  row.id_bits = id_bits;
  row.radix_passes = (32 + id_bits + kRadixBits - 1) / kRadixBits;
  row.scale = params.greedy ? 1.0f : params.inverse_temperature;
  row.max_value = 0.0f;
  row.mass_scale = mass_scale;
  row.mass_unit = mass_unit;
  // Every thread takes the same path (it follows values read from shared memory).
  if (params.greedy) {
    SampleGreedy(row, params, shared, &results[blockIdx.x]);
  } else {
    SampleRandom(row, params, shared, &results[blockIdx.x]);
  }
}

}  // namespace
}  // namespace sampler

cudaError_t LaunchSampleRows(const float* logits, int64_t vocab_size, int64_t row_count,
                             const SamplerRowParams* rows, SamplerRowResult* results,
                             cudaStream_t stream) {
  if (vocab_size < 1 || vocab_size >= kSamplerMaxVocabulary || row_count < 0 ||
      row_count > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  if (row_count == 0) return cudaSuccess;
  // Rank keys hold ids in id_bits bits; fixed-point weights use 2^(63 - id_bits) units, so the
  // whole row (at most 2^id_bits weights <= 1) sums below 2^63.
  int id_bits = 1;
  while ((int64_t{1} << id_bits) < vocab_size) ++id_bits;
  const int scale_bits = 63 - id_bits;
  sampler::SampleRowsKernel<<<static_cast<unsigned>(row_count), sampler::kThreads, 0, stream>>>(
      logits, static_cast<int>(vocab_size), id_bits, std::ldexp(1.0f, scale_bits),
      std::ldexp(1.0, -scale_bits), rows, results);
  return cudaGetLastError();
}

}  // namespace reflect::cuda
