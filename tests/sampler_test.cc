#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflect {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::Pointwise;
using ::testing::SizeIs;

// Logits whose softmax is exactly `probabilities` (up to rounding).
std::vector<float> LogitsOf(const std::vector<double>& probabilities) {
  std::vector<float> logits;
  for (double probability : probabilities)
    logits.push_back(static_cast<float>(std::log(probability)));
  return logits;
}

SampledToken Sample(std::vector<float> logits, const SamplingParams& params, int64_t position) {
  return SampleToken(logits, params, {}, {}, position);
}

// Every token drawn over `num_draws` positions, with the logprob reported for it.
std::map<int32_t, float> DrawnTokens(const std::vector<float>& logits, const SamplingParams& params,
                                     int num_draws) {
  std::map<int32_t, float> drawn;
  for (int position = 0; position < num_draws; ++position) {
    const SampledToken token = Sample(logits, params, position);
    drawn[token.token_id] = token.logprob;
  }
  return drawn;
}

std::set<int32_t> Keys(const std::map<int32_t, float>& drawn) {
  std::set<int32_t> keys;
  for (const auto& [id, logprob] : drawn) keys.insert(id);
  return keys;
}

// Checks each drawn token's logprob against `probabilities` renormalized over `kept`.
void ExpectRenormalized(const std::map<int32_t, float>& drawn,
                        const std::vector<double>& probabilities, const std::set<int32_t>& kept) {
  double kept_mass = 0.0;
  for (int32_t id : kept) kept_mass += probabilities[static_cast<size_t>(id)];
  for (const auto& [id, logprob] : drawn) {
    EXPECT_NEAR(logprob, std::log(probabilities[static_cast<size_t>(id)] / kept_mass), 1e-5)
        << "token " << id;
  }
}

TEST(SamplerTest, GreedyPicksLowestIdAmongLargestLogits) {
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f};
  const SampledToken token = SampleToken(logits, SamplingParams{}, {}, {}, 0);
  EXPECT_EQ(token.token_id, 1);
  const double normalizer = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(token.logprob, 3.0 - std::log(normalizer), 1e-6);
}

TEST(SamplerTest, GreedyIgnoresSeedAndPosition) {
  SamplingParams params;
  params.seed = 77;
  for (int64_t position = 0; position < 50; ++position) {
    EXPECT_EQ(Sample({0.5f, -1.0f, 4.0f, 3.9f}, params, position).token_id, 2);
  }
}

TEST(SamplerTest, TemperatureDrawsFollowTheSoftmax) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f};
  SamplingParams params;
  params.temperature = 0.7;
  params.seed = 12345;
  std::vector<double> expected(logits.size());
  for (size_t id = 0; id < logits.size(); ++id) expected[id] = std::exp(logits[id] / 0.7);
  const double sum = std::accumulate(expected.begin(), expected.end(), 0.0);
  constexpr int kDraws = 20000;
  std::vector<int> counts(logits.size(), 0);
  for (int position = 0; position < kDraws; ++position) {
    ++counts[static_cast<size_t>(Sample(logits, params, position).token_id)];
  }
  double chi_square = 0.0;
  for (size_t id = 0; id < logits.size(); ++id) {
    const double expected_count = kDraws * expected[id] / sum;
    chi_square += std::pow(counts[id] - expected_count, 2) / expected_count;
  }
  // 4 degrees of freedom: P(chi2 > 25) is about 5e-5. The draws are a fixed function of the
  // seed, so this passes or fails the same way every run.
  EXPECT_LT(chi_square, 25.0);
}

TEST(SamplerTest, TopKKeepsExactlyTheKBestTokens) {
  const std::vector<double> probabilities = {0.1, 0.4, 0.2, 0.3};
  SamplingParams params;
  params.temperature = 1.0;
  params.top_k = 2;
  const auto drawn = DrawnTokens(LogitsOf(probabilities), params, 2000);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{1, 3}));
  ExpectRenormalized(drawn, probabilities, {1, 3});
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<double> probabilities = {0.15, 0.5, 0.1, 0.25};
  SamplingParams params;
  params.temperature = 1.0;
  params.top_p = 0.7;  // 0.5 < 0.7 <= 0.5 + 0.25
  auto drawn = DrawnTokens(LogitsOf(probabilities), params, 2000);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{1, 3}));
  ExpectRenormalized(drawn, probabilities, {1, 3});

  params.top_p = 0.8;  // 0.75 < 0.8 <= 0.9
  drawn = DrawnTokens(LogitsOf(probabilities), params, 2000);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{0, 1, 3}));

  params.top_p = 0.01;  // the top token alone
  drawn = DrawnTokens(LogitsOf(probabilities), params, 200);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{1}));
  EXPECT_NEAR(drawn.at(1), 0.0, 1e-6);
}

TEST(SamplerTest, TopPIsMeasuredAfterTopK) {
  // Renormalized over the top 3: 0.5/0.9, 0.25/0.9, 0.15/0.9 = 0.556, 0.278, 0.167, so two
  // tokens reach 0.8; without top-k it would take three (0.5, 0.75, 0.9).
  const std::vector<double> probabilities = {0.5, 0.25, 0.15, 0.1};
  SamplingParams params;
  params.temperature = 1.0;
  params.top_p = 0.8;
  EXPECT_EQ(Keys(DrawnTokens(LogitsOf(probabilities), params, 2000)), (std::set<int32_t>{0, 1, 2}));
  params.top_k = 3;
  const auto drawn = DrawnTokens(LogitsOf(probabilities), params, 2000);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{0, 1}));
  ExpectRenormalized(drawn, probabilities, {0, 1});
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheTopProbability) {
  const std::vector<double> probabilities = {0.25, 0.1, 0.5, 0.15};
  SamplingParams params;
  params.temperature = 1.0;
  params.min_p = 0.25;  // threshold 0.125: 0.1 goes
  auto drawn = DrawnTokens(LogitsOf(probabilities), params, 2000);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{0, 2, 3}));
  ExpectRenormalized(drawn, probabilities, {0, 2, 3});

  params.min_p = 0.45;  // threshold 0.225
  drawn = DrawnTokens(LogitsOf(probabilities), params, 2000);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{0, 2}));
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f};
  SamplingParams params;
  params.repetition_penalty = 2.0;
  const std::vector<int32_t> prompt = {0, 1, 1};
  const std::vector<int32_t> generated = {1, 4, 4};
  ApplyPenalties(logits, params, prompt, generated);
  // Once per distinct token, however often it was seen.
  EXPECT_THAT(logits, ElementsAre(1.0f, -2.0f, 0.5f, 3.0f, -4.0f));
}

TEST(SamplerTest, FrequencyAndPresencePenaltiesCountGeneratedTokensOnly) {
  std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  SamplingParams params;
  params.frequency_penalty = 0.5;
  params.presence_penalty = 1.0;
  const std::vector<int32_t> prompt = {0, 0, 0};
  const std::vector<int32_t> generated = {2, 2, 3, 2};
  ApplyPenalties(logits, params, prompt, generated);
  // token 2: 3 * 0.5 + 1; token 3: 1 * 0.5 + 1; token 0 is only in the prompt.
  EXPECT_THAT(logits, Pointwise(FloatNear(1e-6), std::vector<float>{1.0f, 1.0f, -1.5f, -0.5f}));
}

TEST(SamplerTest, PenaltiesRunBeforeGreedy) {
  std::vector<float> logits = {3.0f, 2.0f};
  SamplingParams params;
  params.repetition_penalty = 2.0;
  const std::vector<int32_t> prompt = {0};
  EXPECT_EQ(SampleToken(logits, params, prompt, {}, 1).token_id, 1);
}

TEST(SamplerTest, SameSeedAndPositionGiveTheSameToken) {
  std::vector<float> logits(1000);
  std::mt19937 generator(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& logit : logits) logit = normal(generator);
  SamplingParams params;
  params.temperature = 1.0;
  params.seed = 99;
  std::set<int32_t> distinct;
  for (int64_t position = 0; position < 100; ++position) {
    const SampledToken first = Sample(logits, params, position);
    const SampledToken again = Sample(logits, params, position);
    EXPECT_EQ(first.token_id, again.token_id);
    EXPECT_EQ(first.logprob, again.logprob);
    distinct.insert(first.token_id);
  }
  // A nearly flat distribution over 1000 tokens: 100 positions draw many different tokens.
  EXPECT_GT(distinct.size(), 50u);
}

TEST(SamplerTest, DifferentSeedsGiveDifferentDraws) {
  int differences = 0;
  for (int64_t position = 0; position < 100; ++position) {
    if (SamplingUniform(1, position) != SamplingUniform(2, position)) ++differences;
    EXPECT_NE(SamplingUniform(1, position), SamplingUniform(1, position + 1));
  }
  EXPECT_EQ(differences, 100);
}

TEST(SamplerTest, SamplingUniformIsUniformOverPositionsAndSeeds) {
  constexpr int kDraws = 100000;
  constexpr int kBins = 20;
  for (const bool vary_seed : {false, true}) {
    std::vector<int> bins(kBins, 0);
    double sum = 0.0;
    double sum_of_squares = 0.0;
    for (int draw = 0; draw < kDraws; ++draw) {
      const double value = vary_seed ? SamplingUniform(static_cast<uint64_t>(draw), 17)
                                     : SamplingUniform(2024, draw);
      ASSERT_GE(value, 0.0);
      ASSERT_LT(value, 1.0);
      ++bins[static_cast<size_t>(value * kBins)];
      sum += value;
      sum_of_squares += value * value;
    }
    const double mean = sum / kDraws;
    EXPECT_NEAR(mean, 0.5, 0.005);
    EXPECT_NEAR(sum_of_squares / kDraws - mean * mean, 1.0 / 12.0, 0.003);
    double chi_square = 0.0;
    const double expected = static_cast<double>(kDraws) / kBins;
    for (int count : bins) chi_square += (count - expected) * (count - expected) / expected;
    EXPECT_LT(chi_square, 50.0);  // 19 degrees of freedom: P(chi2 > 50) is about 1e-4
  }
}

// The pipeline written the slow, obvious way: a full sort, then each filter in turn.
// Returns the tokens drawn at positions 0 .. num_positions - 1.
std::vector<int32_t> ReferenceSamples(std::vector<float> logits, const SamplingParams& params,
                                      int64_t num_positions) {
  const float inverse_temperature = static_cast<float>(1.0 / params.temperature);
  for (float& logit : logits) logit *= inverse_temperature;
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t left, int32_t right) {
    return logits[left] != logits[right] ? logits[left] > logits[right] : left < right;
  });
  const float max_logit = logits[order[0]];
  std::vector<double> weights;
  for (int32_t id : order) weights.push_back(std::exp(logits[id] - max_logit));
  size_t kept = params.top_k > 0 ? std::min<size_t>(params.top_k, order.size()) : order.size();
  const double top_k_mass = std::accumulate(weights.begin(), weights.begin() + kept, 0.0);
  if (params.top_p < 1.0) {
    double cumulative = 0.0;
    for (size_t rank = 0; rank < kept; ++rank) {
      cumulative += weights[rank];
      if (cumulative >= params.top_p * top_k_mass) {
        kept = rank + 1;
        break;
      }
    }
  }
  while (kept > 1 && weights[kept - 1] < params.min_p) --kept;
  const double kept_mass = std::accumulate(weights.begin(), weights.begin() + kept, 0.0);
  std::vector<int32_t> tokens;
  for (int64_t position = 0; position < num_positions; ++position) {
    const double target = SamplingUniform(params.seed, position) * kept_mass;
    double cumulative = 0.0;
    size_t rank = 0;
    while (rank + 1 < kept && cumulative + weights[rank] <= target) cumulative += weights[rank++];
    tokens.push_back(order[rank]);
  }
  return tokens;
}

TEST(SamplerTest, FullVocabularyMatchesTheFullSortReference) {
  constexpr size_t kVocab = 128256;
  std::vector<float> logits(kVocab);
  std::mt19937 generator(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& logit : logits) logit = normal(generator);
  // Ties: equal logits must resolve by id, whatever their order in the row.
  logits[500] = logits[70000] = logits[12] = 14.0f;

  struct Case {
    double temperature, top_p;
    int64_t top_k;
    double min_p;
  };
  for (const Case& test_case :
       {Case{1.0, 1.0, 0, 0.0}, Case{0.7, 0.95, 0, 0.0}, Case{1.0, 1.0, 50, 0.0},
        Case{1.3, 0.9, 40, 0.0}, Case{1.0, 1.0, 0, 0.05}, Case{0.8, 0.5, 1000, 0.01}}) {
    SamplingParams params;
    params.temperature = test_case.temperature;
    params.top_p = test_case.top_p;
    params.top_k = test_case.top_k;
    params.min_p = test_case.min_p;
    params.seed = 5;
    const std::vector<int32_t> expected = ReferenceSamples(logits, params, 32);
    for (int64_t position = 0; position < 32; ++position) {
      std::vector<float> scratch = logits;
      EXPECT_EQ(SampleToken(scratch, params, {}, {}, position).token_id,
                expected[static_cast<size_t>(position)])
          << "temperature " << test_case.temperature << " top_p " << test_case.top_p << " top_k "
          << test_case.top_k << " min_p " << test_case.min_p << " position " << position;
    }
  }
}

// An independent reference for the processed distribution: presence and frequency penalties over
// `generated`, temperature (1 for greedy), then top-k, computed in double with a full sort.
// Returns every token's natural-log probability (-inf outside the kept set).
std::vector<double> ReferenceLogProbabilities(const std::vector<float>& logits,
                                              const SamplingParams& params,
                                              const std::vector<int32_t>& generated) {
  std::vector<double> processed(logits.begin(), logits.end());
  for (int32_t id : generated) {
    processed[static_cast<size_t>(id)] -= params.frequency_penalty;
  }
  for (int32_t id : std::set<int32_t>(generated.begin(), generated.end())) {
    processed[static_cast<size_t>(id)] -= params.presence_penalty;
  }
  const double temperature = params.temperature == 0.0 ? 1.0 : params.temperature;
  for (double& logit : processed) logit /= temperature;
  std::vector<size_t> order(processed.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t left, size_t right) {
    if (processed[left] != processed[right]) return processed[left] > processed[right];
    return left < right;
  });
  const size_t kept = params.temperature > 0.0 && params.top_k > 0
                          ? std::min(order.size(), static_cast<size_t>(params.top_k))
                          : order.size();
  const double max_logit = processed[order[0]];
  double sum = 0.0;
  for (size_t rank = 0; rank < kept; ++rank) sum += std::exp(processed[order[rank]] - max_logit);
  const double log_normalizer = max_logit + std::log(sum);
  std::vector<double> log_probabilities(processed.size(), -std::numeric_limits<double>::infinity());
  for (size_t rank = 0; rank < kept; ++rank) {
    log_probabilities[order[rank]] = processed[order[rank]] - log_normalizer;
  }
  return log_probabilities;
}

// The `count` most likely tokens of a reference distribution, best first, ties by lower id.
std::vector<TokenAlternative> ReferenceTop(const std::vector<double>& log_probabilities,
                                           size_t count) {
  std::vector<int32_t> ids(log_probabilities.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int32_t left, int32_t right) {
    const double left_value = log_probabilities[static_cast<size_t>(left)];
    const double right_value = log_probabilities[static_cast<size_t>(right)];
    if (left_value != right_value) return left_value > right_value;
    return left < right;
  });
  std::vector<TokenAlternative> top;
  for (int32_t id : ids) {
    const double value = log_probabilities[static_cast<size_t>(id)];
    if (top.size() == count || std::isinf(value)) break;
    top.push_back(TokenAlternative{.token_id = id, .logprob = static_cast<float>(value)});
  }
  return top;
}

TEST(SamplerTest, AlternativesAreTheMostLikelyTokensOfTheProcessedDistribution) {
  std::mt19937 random(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(2000);
  for (float& logit : logits) logit = normal(random);
  const std::vector<int32_t> generated = {3, 17, 17, 1999};

  struct Case {
    double temperature;
    int64_t top_k;
    int32_t logprobs;
    size_t expected_size;
  };
  for (const Case& test_case : {Case{0.7, 0, 5, 5}, Case{1.3, 0, 20, 20}, Case{1.0, 4, 6, 4},
                                Case{0.0, 0, 8, 8}, Case{2.0, 50, 1, 1}}) {
    SamplingParams params;
    params.temperature = test_case.temperature;
    params.top_k = test_case.top_k;
    params.logprobs = test_case.logprobs;
    params.presence_penalty = 0.5;
    params.frequency_penalty = 0.25;
    params.seed = 11;
    const std::vector<double> reference = ReferenceLogProbabilities(logits, params, generated);
    double total = 0.0;
    for (double value : reference) total += std::exp(value);
    EXPECT_NEAR(total, 1.0, 1e-9);
    const std::vector<TokenAlternative> expected =
        ReferenceTop(reference, static_cast<size_t>(test_case.logprobs));
    ASSERT_EQ(expected.size(), test_case.expected_size);

    const std::vector<int32_t> prompt = {1, 2, 3};
    bool chosen_seen = false;
    for (int64_t position = 0; position < 40; ++position) {
      std::vector<float> scratch = logits;
      const SampledToken token = SampleToken(scratch, params, prompt, generated, position);
      const std::string label = absl::StrCat("temperature ", test_case.temperature, " top_k ",
                                             test_case.top_k, " position ", position);
      ASSERT_EQ(token.top_logprobs.size(), expected.size()) << label;
      for (size_t rank = 0; rank < expected.size(); ++rank) {
        EXPECT_EQ(token.top_logprobs[rank].token_id, expected[rank].token_id)
            << label << " rank " << rank;
        EXPECT_NEAR(token.top_logprobs[rank].logprob, expected[rank].logprob, 1e-4)
            << label << " rank " << rank;
        if (rank > 0) {
          EXPECT_GE(token.top_logprobs[rank - 1].logprob, token.top_logprobs[rank].logprob)
              << label;
        }
        if (token.top_logprobs[rank].token_id == token.token_id) {
          chosen_seen = true;
          EXPECT_EQ(token.top_logprobs[rank].logprob, token.logprob) << label;
        }
      }
      EXPECT_NEAR(token.logprob, reference[static_cast<size_t>(token.token_id)], 1e-4) << label;
    }
    // With a single alternative and a hot, wide distribution the top token may never be drawn.
    if (test_case.logprobs > 1) {
      EXPECT_TRUE(chosen_seen) << "temperature " << test_case.temperature;
    }
  }
}

TEST(SamplerTest, GreedyAlternativesStartWithTheChosenTokenAndBreakTiesByLowerId) {
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, -std::numeric_limits<float>::infinity()};
  SamplingParams params;
  params.logprobs = 20;  // more than the tokens that are possible
  const SampledToken token = SampleToken(logits, params, {}, {}, 0);
  EXPECT_EQ(token.token_id, 1);
  const double log_normalizer = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0));
  ASSERT_THAT(token.top_logprobs, SizeIs(4));  // the -inf token has probability 0
  EXPECT_EQ(token.top_logprobs[0].token_id, token.token_id);
  EXPECT_EQ(token.top_logprobs[0].logprob, token.logprob);
  const std::vector<int32_t> expected_ids = {1, 2, 3, 0};
  const std::vector<double> expected_logits = {3.0, 3.0, 2.0, 1.0};
  for (size_t rank = 0; rank < expected_ids.size(); ++rank) {
    EXPECT_EQ(token.top_logprobs[rank].token_id, expected_ids[rank]);
    EXPECT_NEAR(token.top_logprobs[rank].logprob, expected_logits[rank] - log_normalizer, 1e-6);
  }
}

TEST(SamplerTest, GreedyOverAFullVocabularyMatchesADoubleLogSoftmax) {
  // 128,256 logits (Llama 3.1's vocabulary, not a multiple of the 16 lanes plus a ragged tail
  // of 3) against a log-softmax in double with std::exp: the vector exp is within 1e-6.
  std::mt19937 generator(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t vocab_size : {size_t{128256}, size_t{19}}) {
    std::vector<float> logits(vocab_size);
    for (float& logit : logits) logit = normal(generator);
    const size_t best =
        static_cast<size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    double normalizer = 0.0;
    for (float logit : logits) normalizer += std::exp(static_cast<double>(logit - logits[best]));
    SamplingParams params;
    params.logprobs = 3;
    const SampledToken token = Sample(logits, params, 0);
    EXPECT_EQ(token.token_id, static_cast<int32_t>(best));
    EXPECT_NEAR(token.logprob, -std::log(normalizer), 1e-6) << vocab_size;
    ASSERT_THAT(token.top_logprobs, SizeIs(3));
    for (const TokenAlternative& alternative : token.top_logprobs) {
      EXPECT_NEAR(
          alternative.logprob,
          logits[static_cast<size_t>(alternative.token_id)] - logits[best] - std::log(normalizer),
          1e-6);
    }
  }
}

TEST(SamplerTest, GreedyNeverPicksNaNAndLaterTiesLoseToTheFirst) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits(40, -1.0f);
  logits[0] = nan;  // the first lane: a scalar "first is best" scan would keep it
  logits[21] = 5.0f;
  logits[37] = 5.0f;  // in the ragged tail
  logits[38] = nan;
  const SampledToken token = Sample(logits, SamplingParams(), 0);
  EXPECT_EQ(token.token_id, 21);
  EXPECT_TRUE(std::isfinite(token.logprob)) << token.logprob;
}

TEST(SamplerTest, ImpossibleTokensAreNeverDrawnOrListedWithoutFilters) {
  // Temperature 1, no top-k / top-p / min-p: every finite logit is kept; -inf and NaN have
  // weight exactly 0 however small the vector exp's smallest result is.
  std::vector<float> logits(33, -std::numeric_limits<float>::infinity());
  logits[3] = 0.0f;
  logits[30] = 0.0f;
  logits[31] = std::numeric_limits<float>::quiet_NaN();
  SamplingParams params;
  params.temperature = 1.0;
  params.logprobs = 10;
  const std::map<int32_t, float> drawn = DrawnTokens(logits, params, 200);
  EXPECT_EQ(Keys(drawn), (std::set<int32_t>{3, 30}));
  const SampledToken token = Sample(logits, params, 0);
  ASSERT_THAT(token.top_logprobs, SizeIs(2));
  EXPECT_NEAR(token.top_logprobs[0].logprob, std::log(0.5), 1e-6);
  EXPECT_NEAR(token.top_logprobs[1].logprob, std::log(0.5), 1e-6);
}

TEST(SamplerTest, NoAlternativesWithoutLogprobs) {
  for (double temperature : {0.0, 1.0}) {
    SamplingParams params;
    params.temperature = temperature;
    EXPECT_TRUE(Sample({0.5f, -1.0f, 4.0f, 3.9f}, params, 3).top_logprobs.empty());
  }
}

}  // namespace
}  // namespace reflect
