#include "worker/sampler.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <limits>
#include <ranges>
#include <vector>

#include "common/splitmix64.h"
#include "worker/cpu/vector_math.h"

namespace reflect {
namespace {

// Token ids in [0, vocab_size) from `ids`, sorted, each once.
std::vector<int32_t> DistinctIds(std::span<const int32_t> first, std::span<const int32_t> second,
                                 size_t vocab_size) {
  std::vector<int32_t> ids;
  ids.reserve(first.size() + second.size());
  for (std::span<const int32_t> part : {first, second}) {
    for (int32_t id : part) {
      if (id >= 0 && static_cast<size_t>(id) < vocab_size) ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace

void ApplyPenalties(std::span<float> logits, const SamplingParams& params,
                    std::span<const int32_t> prompt_ids, std::span<const int32_t> generated_ids) {
  if (params.repetition_penalty != 1.0) {
    // Hugging Face semantics: every distinct token seen so far, prompt included, becomes less
    // likely whatever the sign of its logit.
    const float penalty = static_cast<float>(params.repetition_penalty);
    for (int32_t id : DistinctIds(prompt_ids, generated_ids, logits.size())) {
      float& logit = logits[static_cast<size_t>(id)];
      logit = logit > 0.0f ? logit / penalty : logit * penalty;
    }
  }
  if (params.frequency_penalty != 0.0 || params.presence_penalty != 0.0) {
    // OpenAI semantics, over generated tokens only: logit -= count * frequency + presence.
    std::vector<int32_t> sorted;
    sorted.reserve(generated_ids.size());
    for (int32_t id : generated_ids) {
      if (id >= 0 && static_cast<size_t>(id) < logits.size()) sorted.push_back(id);
    }
    std::sort(sorted.begin(), sorted.end());
    for (size_t begin = 0; begin < sorted.size();) {
      size_t end = begin;
      while (end < sorted.size() && sorted[end] == sorted[begin]) ++end;
      const double count = static_cast<double>(end - begin);
      float& logit = logits[static_cast<size_t>(sorted[begin])];
      logit =
          static_cast<float>(logit - count * params.frequency_penalty - params.presence_penalty);
      begin = end;
    }
  }
}

namespace {

// The lowest id among the largest logits; NaN is never the largest (id 0 when all are NaN).
// Vectorized: one pass for the maximum, one for its first occurrence.
int32_t ArgMax(std::span<const float> logits) {
  const int64_t count = std::ssize(logits);
  __m512 maximum = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t index = 0; index < count; index += cpu::kLanes) {
    const __mmask16 mask = cpu::FirstLanes(count - index);
    // max_ps returns its second operand when either is NaN: NaN logits leave `maximum` alone.
    maximum = _mm512_mask_max_ps(maximum, mask, _mm512_maskz_loadu_ps(mask, logits.data() + index),
                                 maximum);
  }
  const __m512 target = _mm512_set1_ps(cpu::MaxLanes(maximum));
  for (int64_t index = 0; index < count; index += cpu::kLanes) {
    const __mmask16 mask = cpu::FirstLanes(count - index);
    const __mmask16 equal = _mm512_mask_cmp_ps_mask(
        mask, _mm512_maskz_loadu_ps(mask, logits.data() + index), target, _CMP_EQ_OQ);
    if (equal != 0) return static_cast<int32_t>(index + std::countr_zero(equal));
  }
  return 0;
}

// e^x by the CPU kernels' vector exp, exactly 0 below e^-103 (so for -inf) and for NaN: a token
// of weight 0 is never drawn nor listed. Lane-wise, so ExpOne and SumOfExponentials agree bitwise.
__m512 WeightOf(__m512 x) {
  const __mmask16 possible = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.0f), _CMP_GE_OQ);
  return _mm512_maskz_mov_ps(possible, cpu::Exp(x));
}

float ExpOne(float x) { return _mm512_cvtss_f32(WeightOf(_mm512_set1_ps(x))); }

// Σ e^(logit - max_logit) over `logits`, each term as ExpOne, summed in double (16 lanes, then
// a fixed order): about 40 µs for a 128k vocabulary where a scalar exp loop takes ten times that.
double SumOfExponentials(std::span<const float> logits, float max_logit) {
  const int64_t count = std::ssize(logits);
  const __m512 shift = _mm512_set1_ps(max_logit);
  __m512d low = _mm512_setzero_pd();
  __m512d high = _mm512_setzero_pd();
  for (int64_t index = 0; index < count; index += cpu::kLanes) {
    const __mmask16 mask = cpu::FirstLanes(count - index);
    const __m512 terms = _mm512_maskz_mov_ps(
        mask, WeightOf(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, logits.data() + index), shift)));
    // The maskz forms: GCC 12 flags the unmasked ones' "undefined" source (see vector_math.h).
    const __m256 first =
        _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(terms), 0));
    const __m256 second =
        _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(terms), 1));
    low = _mm512_add_pd(low, _mm512_maskz_cvtps_pd(0xff, first));
    high = _mm512_add_pd(high, _mm512_maskz_cvtps_pd(0xff, second));
  }
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, _mm512_add_pd(low, high));
  double sum = 0.0;
  for (double lane : lanes) sum += lane;
  return sum;
}

// The ids of the `count` largest logits (at most all of them), ranked by (logit descending, id
// ascending) with NaN as -inf: the same order as RankedVocabulary. A partial selection over the
// ids, O(vocabulary * log count), with no sort of the vocabulary.
std::vector<int32_t> TopIds(std::span<const float> logits, size_t count) {
  std::vector<int32_t> ids(std::min(count, logits.size()));
  if (ids.empty()) return ids;
  auto key = [&](int32_t id) {
    const float logit = logits[static_cast<size_t>(id)];
    return std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit;
  };
  std::ranges::partial_sort_copy(std::views::iota(int32_t{0}, static_cast<int32_t>(logits.size())),
                                 ids, [&](int32_t left, int32_t right) {
                                   const float left_key = key(left);
                                   const float right_key = key(right);
                                   if (left_key != right_key) return left_key > right_key;
                                   return left < right;
                                 });
  return ids;
}

// The vocabulary ranked by (logit descending, id ascending), produced lazily in bands of logit
// value: the first band holds the tokens within 2 of the top logit, the next within 5, and so on.
// Each band costs one scan of the logits plus a sort of its own members, so a caller walking the
// top ranks (top-k, top-p, a draw from a peaked distribution) never sorts the long tail.
class RankedVocabulary {
 public:
  explicit RankedVocabulary(std::span<const float> logits, float max_logit)
      : logits_(logits), max_logit_(max_logit) {
    ranked_.reserve(std::min<size_t>(logits.size(), 1024));
  }

  size_t size() const { return logits_.size(); }

  // The id at rank `rank` (< size()).
  int32_t At(size_t rank) {
    while (rank >= ranked_.size()) AddNextBand();
    return ranked_[rank];
  }

 private:
  void AddNextBand() {
    // Offsets below the top logit; the last band takes everything left (-inf included).
    static constexpr float kBandOffsets[] = {2.0f, 5.0f, 10.0f, 20.0f, 40.0f};
    const bool last_band = band_ == std::size(kBandOffsets);
    const float lower = last_band ? 0.0f : max_logit_ - kBandOffsets[band_];
    const size_t band_begin = ranked_.size();
    for (size_t id = 0; id < logits_.size(); ++id) {
      const float logit = logits_[id];
      const bool above_upper = band_ > 0 && logit >= upper_;
      if (!above_upper && (last_band || logit >= lower))
        ranked_.push_back(static_cast<int32_t>(id));
    }
    std::sort(ranked_.begin() + static_cast<std::ptrdiff_t>(band_begin), ranked_.end(),
              [this](int32_t left, int32_t right) {
                const float left_logit = logits_[static_cast<size_t>(left)];
                const float right_logit = logits_[static_cast<size_t>(right)];
                if (left_logit != right_logit) return left_logit > right_logit;
                return left < right;
              });
    upper_ = lower;
    ++band_;
  }

  std::span<const float> logits_;
  float max_logit_;
  std::vector<int32_t> ranked_;
  size_t band_ = 0;
  float upper_ = 0.0f;  // the lower bound of the previous band
};

}  // namespace

double SamplingUniform(uint64_t seed, int64_t position) {
  // Output number position + 1 of a SplitMix64 stream whose state starts at SplitMix64Mix(seed):
  // counter based, so any position is computed directly, and each seed gets its own stream.
  const uint64_t stream = SplitMix64Mix(seed);
  const uint64_t counter = static_cast<uint64_t>(position) + 1;
  const uint64_t bits = SplitMix64Mix(stream + counter * kSplitMix64Gamma);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

SampledToken SampleToken(std::span<float> logits, const SamplingParams& params,
                         std::span<const int32_t> prompt_ids,
                         std::span<const int32_t> generated_ids, int64_t position) {
  SampledToken result;
  if (logits.empty()) return result;
  ApplyPenalties(logits, params, prompt_ids, generated_ids);

  if (params.temperature == 0.0) {
    // Greedy: the logprob reported is under the penalized distribution at temperature 1.
    const int32_t best = ArgMax(logits);
    const float max_logit = logits[static_cast<size_t>(best)];
    const double log_normalizer = std::log(SumOfExponentials(logits, max_logit));
    result.token_id = best;
    result.logprob = static_cast<float>(-log_normalizer);
    if (params.logprobs > 0) {
      // The same formula as the chosen token's, whose logit - max_logit is 0, so its entry (the
      // first) equals result.logprob exactly.
      for (const int32_t id : TopIds(logits, static_cast<size_t>(params.logprobs))) {
        const double logprob =
            static_cast<double>(logits[static_cast<size_t>(id)] - max_logit) - log_normalizer;
        if (!std::isfinite(logprob)) continue;  // -inf or NaN logits: not a possible token
        result.top_logprobs.push_back(
            TokenAlternative{.token_id = id, .logprob = static_cast<float>(logprob)});
      }
    }
    return result;
  }

  // NaN would break the ranking's strict weak order; treat it as impossible.
  const float inverse_temperature = static_cast<float>(1.0 / params.temperature);
  for (float& logit : logits) {
    logit =
        std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit * inverse_temperature;
  }
  const float max_logit = logits[static_cast<size_t>(ArgMax(logits))];

  // Weights are probabilities up to one shared factor: exp(logit - max), 1 for the top token.
  // min-p compares a token with the top token, a ratio no renormalization changes, so it is a
  // plain weight threshold. top-k, top-p and min-p each keep a prefix of the ranked vocabulary,
  // so together they keep the shortest of the three; only top-p's threshold depends on the
  // order (it is measured after top-k, as in Hugging Face and vLLM).
  // Single-precision vector exp (many times faster over a 128k vocabulary); sums are in double.
  auto weight = [&](int32_t id) -> double {
    return ExpOne(logits[static_cast<size_t>(id)] - max_logit);
  };
  RankedVocabulary ranked(logits, max_logit);
  const size_t vocab_size = logits.size();
  const size_t top_k =
      params.top_k > 0 ? std::min(static_cast<size_t>(params.top_k), vocab_size) : vocab_size;
  double top_k_mass = 0.0;
  if (top_k < vocab_size) {
    for (size_t rank = 0; rank < top_k; ++rank) top_k_mass += weight(ranked.At(rank));
  } else {
    top_k_mass = SumOfExponentials(logits, max_logit);
  }

  size_t kept = top_k;
  double kept_mass = top_k_mass;
  if (params.top_p < 1.0 || params.min_p > 0.0) {
    // The top token (weight 1 >= min_p) always stays.
    kept_mass = 0.0;
    for (kept = 0; kept < top_k;) {
      const double token_weight = weight(ranked.At(kept));
      if (kept > 0 && token_weight < params.min_p) break;
      kept_mass += token_weight;
      ++kept;
      if (params.top_p < 1.0 && kept_mass >= params.top_p * top_k_mass) break;
    }
  }

  // Inverse CDF over the kept tokens in rank order: rank order (not id order) makes equal
  // logits resolve the same way whatever else shares the batch.
  const double target = SamplingUniform(params.seed, position) * kept_mass;
  double cumulative = 0.0;
  size_t chosen = 0;
  for (size_t rank = 0; rank < kept; ++rank) {
    const double token_weight = weight(ranked.At(rank));
    if (token_weight <= 0.0) break;
    chosen = rank;
    cumulative += token_weight;
    if (cumulative > target) break;
  }
  const int32_t token = ranked.At(chosen);
  result.token_id = token;
  result.logprob = static_cast<float>(std::log(weight(token) / kept_mass));
  if (params.logprobs > 0) {
    // The kept tokens are the first `kept` ranks, and TopIds ranks the same way, so its first
    // min(N, kept) ids are the N most likely kept tokens. Same formula as the chosen token's.
    const size_t count = std::min(static_cast<size_t>(params.logprobs), kept);
    for (const int32_t id : TopIds(logits, count)) {
      const double token_weight = weight(id);
      if (token_weight <= 0.0) break;  // probability 0: the draw never picks it (nor later ranks)
      result.top_logprobs.push_back(TokenAlternative{
          .token_id = id, .logprob = static_cast<float>(std::log(token_weight / kept_mass))});
    }
  }
  return result;
}

}  // namespace reflect
