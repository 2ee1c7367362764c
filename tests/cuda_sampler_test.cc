// CudaSampler (worker/cuda/cuda_sampler.h) against the host's SampleToken (worker/sampler.h):
// many rows at once with different parameters, random and adversarial logits (ties, -inf, NaN,
// +inf, flat rows), at a 128k vocabulary and at an odd one. Skips where there is no CUDA device,
// or in a build without CUDA.
#include "gtest/gtest.h"

#ifdef REFLECT_WITH_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/sampling_params.h"
#include "worker/backend.h"
#include "worker/cuda/cuda_sampler.h"
#include "worker/sampler.h"

namespace reflect::cuda {
namespace {

constexpr float kInfinity = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool HasDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// One row to sample: its logits and what SamplingRow points at.
struct RowCase {
  std::string name;
  std::vector<float> logits;
  SamplingParams params;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  int64_t position = 0;
};

// Samples `cases` as one batch on the device (logits uploaded to one [rows, vocab] buffer).
std::vector<SampledToken> SampleOnDevice(CudaSampler& sampler, const std::vector<RowCase>& cases,
                                         int64_t vocab_size, cudaStream_t stream) {
  std::vector<float> logits;
  std::vector<SamplingRow> rows;
  for (size_t index = 0; index < cases.size(); ++index) {
    const RowCase& row_case = cases[index];
    logits.insert(logits.end(), row_case.logits.begin(), row_case.logits.end());
    rows.push_back(SamplingRow{.sequence_id = static_cast<int64_t>(100 + index),
                               .params = &row_case.params,
                               .prompt_ids = row_case.prompt_ids,
                               .generated_ids = row_case.generated_ids,
                               .position = row_case.position});
  }
  EXPECT_EQ(logits.size(), cases.size() * static_cast<size_t>(vocab_size));
  float* device_logits = nullptr;
  EXPECT_EQ(cudaMalloc(&device_logits, logits.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(device_logits, logits.data(), logits.size() * sizeof(float),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  std::vector<SampledToken> tokens;
  const absl::Status status = sampler.Sample(device_logits, rows, tokens, stream);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(cudaFree(device_logits), cudaSuccess);
  EXPECT_EQ(tokens.size(), cases.size());
  for (size_t index = 0; index < tokens.size(); ++index)
    EXPECT_EQ(tokens[index].sequence_id, static_cast<int64_t>(100 + index));
  return tokens;
}

// Whether the host's draw for `row_case` sits within the contract's 1e-5 of a boundary, where
// the device may legitimately pick a neighbour: recomputes the host's processed distribution
// (penalties, temperature, ranking by logit then id, top-k, top-p, min-p) in double and looks for
// a running mass within 1e-5 (relative) of the top-p threshold or of the drawn target, or a
// weight within 1e-5 of min_p.
bool NearBoundary(const RowCase& row_case) {
  const SamplingParams& params = row_case.params;
  if (params.temperature == 0.0) return false;  // greedy has no mass boundary
  std::vector<float> logits = row_case.logits;
  ApplyPenalties(logits, params, row_case.prompt_ids, row_case.generated_ids);
  const float inverse_temperature = static_cast<float>(1.0 / params.temperature);
  for (float& logit : logits) logit = std::isnan(logit) ? -kInfinity : logit * inverse_temperature;
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t left, int32_t right) {
    if (logits[left] != logits[right]) return logits[left] > logits[right];
    return left < right;
  });
  const float max_logit = logits[order[0]];
  std::vector<double> weights;
  for (int32_t id : order) {
    const float shifted = logits[id] - max_logit;
    weights.push_back(shifted >= -103.0f ? std::exp(static_cast<double>(shifted)) : 0.0);
  }
  const size_t top_k =
      params.top_k > 0 ? std::min<size_t>(params.top_k, weights.size()) : weights.size();
  const double top_k_mass = std::accumulate(weights.begin(), weights.begin() + top_k, 0.0);
  const double threshold = params.top_p * top_k_mass;
  size_t kept = top_k;
  double kept_mass = top_k_mass;
  bool near = false;
  if (params.top_p < 1.0 || params.min_p > 0.0) {
    kept_mass = 0.0;
    for (kept = 0; kept < top_k;) {
      if (params.min_p > 0.0 && std::abs(weights[kept] - params.min_p) <= 1e-5 * params.min_p)
        near = true;
      if (kept > 0 && weights[kept] < params.min_p) break;
      kept_mass += weights[kept];
      ++kept;
      if (params.top_p < 1.0 && std::abs(kept_mass - threshold) <= 1e-5 * top_k_mass) near = true;
      if (params.top_p < 1.0 && kept_mass >= threshold) break;
    }
  }
  const double target = SamplingUniform(params.seed, row_case.position) * kept_mass;
  double cumulative = 0.0;
  for (size_t rank = 0; rank < kept && !near; ++rank) {
    cumulative += weights[rank];
    near = std::abs(cumulative - target) <= 1e-5 * kept_mass;
  }
  return near;
}

// Expects `actual` within `tolerance` of `expected`, NaN for NaN and infinities exactly.
void ExpectLogprob(float actual, float expected, const std::string& what) {
  if (std::isnan(expected)) {
    EXPECT_TRUE(std::isnan(actual)) << what << ": " << actual;
  } else if (std::isinf(expected)) {
    EXPECT_EQ(actual, expected) << what;
  } else {
    EXPECT_NEAR(actual, expected, 1e-4) << what;
  }
}

// Compares every device result with SampleToken; returns how many rows drew a different token
// at a boundary (the contract's exception), after checking each such row is one.
int ExpectAgreement(const std::vector<RowCase>& cases, const std::vector<SampledToken>& tokens) {
  int boundary_rows = 0;
  for (size_t index = 0; index < cases.size() && index < tokens.size(); ++index) {
    const RowCase& row_case = cases[index];
    std::vector<float> scratch = row_case.logits;
    const SampledToken expected = SampleToken(scratch, row_case.params, row_case.prompt_ids,
                                              row_case.generated_ids, row_case.position);
    const SampledToken& actual = tokens[index];
    const std::string what = absl::StrCat("row ", index, " (", row_case.name, ")");
    if (actual.token_id != expected.token_id) {
      EXPECT_TRUE(NearBoundary(row_case))
          << what << ": token " << actual.token_id << ", host " << expected.token_id;
      ++boundary_rows;
      continue;  // the kept set may differ too: nothing else is comparable
    }
    ExpectLogprob(actual.logprob, expected.logprob, what + " logprob");
    EXPECT_EQ(actual.top_logprobs.size(), expected.top_logprobs.size()) << what;
    const size_t listed = std::min(actual.top_logprobs.size(), expected.top_logprobs.size());
    for (size_t rank = 0; rank < listed; ++rank) {
      const std::string alternative = absl::StrCat(what, " alternative ", rank);
      EXPECT_EQ(actual.top_logprobs[rank].token_id, expected.top_logprobs[rank].token_id)
          << alternative;
      ExpectLogprob(actual.top_logprobs[rank].logprob, expected.top_logprobs[rank].logprob,
                    alternative);
    }
  }
  return boundary_rows;
}

// Logits of several shapes: the ones real models give and the ones that break naive kernels.
enum class Shape { kNormal, kPeaked, kTies, kSpecials };

std::vector<float> MakeLogits(Shape shape, int64_t vocab_size, std::mt19937_64& random) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int64_t> any_id(0, vocab_size - 1);
  std::vector<float> logits(static_cast<size_t>(vocab_size));
  for (float& logit : logits) logit = normal(random);
  switch (shape) {
    case Shape::kNormal:
      break;
    case Shape::kPeaked:
      // A few strong candidates above a flat tail, as language models give.
      for (float& logit : logits) logit = logit * 0.5f - 4.0f;
      for (int i = 0; i < 6; ++i) logits[any_id(random)] = 12.0f + static_cast<float>(i) * 0.7f;
      break;
    case Shape::kTies:
      // Few distinct values: thousands of equal logits per value, and a tie at the top.
      for (float& logit : logits) logit = std::round(logit);
      for (int i = 0; i < 3; ++i) logits[any_id(random)] = 11.0f;
      break;
    case Shape::kSpecials:
      for (float& logit : logits) {
        const uint64_t kind = random() % 100;
        if (kind < 10) logit = -kInfinity;
        if (kind == 10) logit = kNaN;
        if (kind == 11) logit = -0.0f;
        if (kind == 12) logit = 0.0f;
      }
      break;
  }
  return logits;
}

// Sampling parameters of every kind the API offers, `logprobs` 0, 1, 5 and 20 among them.
std::vector<std::pair<std::string, SamplingParams>> ParameterKinds() {
  std::vector<std::pair<std::string, SamplingParams>> kinds;
  auto add = [&](std::string name, double temperature, int64_t top_k, double top_p, double min_p,
                 int32_t logprobs) {
    SamplingParams params;
    params.temperature = temperature;
    params.top_k = top_k;
    params.top_p = top_p;
    params.min_p = min_p;
    params.logprobs = logprobs;
    kinds.emplace_back(std::move(name), params);
  };
  add("greedy", 0.0, 0, 1.0, 0.0, 0);
  add("greedy logprobs 5", 0.0, 0, 1.0, 0.0, 5);
  add("greedy logprobs 20", 0.0, 0, 1.0, 0.0, 20);
  add("temperature 0.7 top-k 50", 0.7, 50, 1.0, 0.0, 1);
  add("top-p 0.9", 1.0, 0, 0.9, 0.0, 5);
  add("min-p 0.05", 0.8, 0, 1.0, 0.05, 20);
  add("top-k 200 top-p 0.9 min-p 0.02", 0.7, 200, 0.9, 0.02, 5);
  add("temperature only", 1.0, 0, 1.0, 0.0, 0);
  add("top-k beyond the vocabulary, top-p 0.5", 1.3, 1'000'000, 0.5, 0.0, 20);
  add("top-k 1", 0.6, 1, 1.0, 0.0, 2);
  add("min-p 1", 1.0, 0, 1.0, 1.0, 5);
  add("top-k 3000", 1.0, 3000, 1.0, 0.0, 20);
  // Penalties, with a greedy twin.
  add("penalties", 0.9, 0, 0.95, 0.0, 3);
  add("greedy penalties", 0.0, 0, 1.0, 0.0, 20);
  for (auto& [name, params] : kinds) {
    if (name.find("penalties") == std::string::npos) continue;
    params.repetition_penalty = 1.3;
    params.frequency_penalty = 0.5;
    params.presence_penalty = -0.4;
  }
  return kinds;
}

// Every parameter kind on every logit shape, plus whole rows of equal, -inf and +inf logits.
std::vector<RowCase> MakeCases(int64_t vocab_size, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<int32_t> any_id(0, static_cast<int32_t>(vocab_size) - 1);
  std::vector<RowCase> cases;
  auto add = [&](std::string name, std::vector<float> logits, SamplingParams params) {
    RowCase row_case;
    row_case.name = std::move(name);
    row_case.logits = std::move(logits);
    row_case.params = params;
    row_case.params.seed = random();
    row_case.position = static_cast<int64_t>(random() % 100'000);
    if (params.repetition_penalty != 1.0) {
      // Repeats, ids out of range (ignored), and the top tokens among them.
      for (int i = 0; i < 40; ++i) row_case.prompt_ids.push_back(any_id(random));
      row_case.prompt_ids.push_back(-1);
      row_case.prompt_ids.push_back(static_cast<int32_t>(vocab_size) + 5);
      for (int i = 0; i < 30; ++i) row_case.generated_ids.push_back(any_id(random) % 50);
      const auto top = std::max_element(row_case.logits.begin(), row_case.logits.end());
      row_case.generated_ids.push_back(static_cast<int32_t>(top - row_case.logits.begin()));
    }
    cases.push_back(std::move(row_case));
  };
  const std::pair<Shape, const char*> shapes[] = {{Shape::kNormal, "normal"},
                                                  {Shape::kPeaked, "peaked"},
                                                  {Shape::kTies, "ties"},
                                                  {Shape::kSpecials, "specials"}};
  for (const auto& [shape, shape_name] : shapes) {
    for (const auto& [kind_name, params] : ParameterKinds()) {
      add(absl::StrCat(kind_name, ", ", shape_name), MakeLogits(shape, vocab_size, random), params);
    }
  }
  const std::vector<std::pair<std::string, SamplingParams>> kinds = ParameterKinds();
  const SamplingParams& greedy = kinds[1].second;    // logprobs 5
  const SamplingParams& top_p = kinds[4].second;     // top-p 0.9, logprobs 5
  const SamplingParams& pure = kinds[7].second;      // temperature only
  const SamplingParams& filtered = kinds[6].second;  // top-k, top-p, min-p
  const std::vector<float> equal(static_cast<size_t>(vocab_size), 1.5f);
  add("all equal, temperature only", equal, pure);
  add("all equal, filtered", equal, filtered);
  add("all equal, greedy", equal, greedy);
  const std::vector<float> impossible(static_cast<size_t>(vocab_size), -kInfinity);
  add("all -inf", impossible, top_p);
  add("all -inf, greedy", impossible, greedy);
  std::vector<float> nan_first = impossible;
  nan_first[0] = kNaN;  // greedy never picks NaN: the first -inf wins
  add("NaN then -inf, greedy", nan_first, greedy);
  std::vector<float> infinite = MakeLogits(Shape::kNormal, vocab_size, random);
  infinite[static_cast<size_t>(vocab_size) / 2] = kInfinity;
  infinite[static_cast<size_t>(vocab_size) / 3] = kInfinity;
  add("+inf, sampled", infinite, top_p);
  add("+inf, greedy", infinite, greedy);
  return cases;
}

class CudaSamplerTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) {
      EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    }
  }
  cudaStream_t stream_ = nullptr;
};

TEST_P(CudaSamplerTest, AgreesWithTheHostSampler) {
  const int64_t vocab_size = GetParam();
  absl::StatusOr<CudaSampler> sampler = CudaSampler::Create(vocab_size);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  int boundary_rows = 0;
  int total_rows = 0;
  for (uint64_t seed : {1u, 2u, 3u}) {
    const std::vector<RowCase> cases = MakeCases(vocab_size, seed);
    boundary_rows += ExpectAgreement(cases, SampleOnDevice(*sampler, cases, vocab_size, stream_));
    total_rows += static_cast<int>(cases.size());
  }
  // Boundaries within 1e-5 are rare (the device's masses are within ~1e-9 of the host's).
  EXPECT_LE(boundary_rows, 2) << "of " << total_rows << " rows";
}

TEST_P(CudaSamplerTest, ARowSamplesTheSameAloneAndInABatch) {
  const int64_t vocab_size = GetParam();
  absl::StatusOr<CudaSampler> sampler = CudaSampler::Create(vocab_size);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  const std::vector<RowCase> cases = MakeCases(vocab_size, 9);
  const std::vector<SampledToken> batched = SampleOnDevice(*sampler, cases, vocab_size, stream_);
  ASSERT_EQ(batched.size(), cases.size());
  for (size_t index = 0; index < cases.size(); ++index) {
    const std::vector<SampledToken> alone =
        SampleOnDevice(*sampler, {cases[index]}, vocab_size, stream_);
    ASSERT_EQ(alone.size(), 1u);
    const std::string what = absl::StrCat("row ", index, " (", cases[index].name, ")");
    EXPECT_EQ(alone[0].token_id, batched[index].token_id) << what;
    // Bit for bit (NaN included): integer masses make the result independent of the batch.
    EXPECT_EQ(std::bit_cast<uint32_t>(alone[0].logprob),
              std::bit_cast<uint32_t>(batched[index].logprob))
        << what;
    ASSERT_EQ(alone[0].top_logprobs.size(), batched[index].top_logprobs.size()) << what;
    for (size_t rank = 0; rank < alone[0].top_logprobs.size(); ++rank) {
      EXPECT_EQ(alone[0].top_logprobs[rank].token_id, batched[index].top_logprobs[rank].token_id);
      EXPECT_EQ(alone[0].top_logprobs[rank].logprob, batched[index].top_logprobs[rank].logprob);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, CudaSamplerTest, ::testing::Values(128256, 1003),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return absl::StrCat("Vocabulary", info.param);
                         });

TEST(CudaSamplerArgumentsTest, RefusesTooManyLogprobsAndMissingParams) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  absl::StatusOr<CudaSampler> sampler = CudaSampler::Create(1003);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  float* logits = nullptr;
  ASSERT_EQ(cudaMalloc(&logits, 1003 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemset(logits, 0, 1003 * sizeof(float)), cudaSuccess);
  SamplingParams params;
  params.logprobs = kMaxLogprobs + 1;
  std::vector<SampledToken> tokens;
  SamplingRow too_many;
  too_many.sequence_id = 1;
  too_many.params = &params;
  EXPECT_EQ(sampler->Sample(logits, {&too_many, 1}, tokens, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  SamplingRow missing;
  missing.sequence_id = 2;
  EXPECT_EQ(sampler->Sample(logits, {&missing, 1}, tokens, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  params.logprobs = kMaxLogprobs;
  EXPECT_TRUE(sampler->Sample(logits, {&too_many, 1}, tokens, nullptr).ok());
  EXPECT_EQ(cudaFree(logits), cudaSuccess);
  EXPECT_EQ(CudaSampler::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace reflect::cuda

#else

TEST(CudaSamplerTest, BuiltWithoutCuda) { GTEST_SKIP() << "built without CUDA"; }

#endif
