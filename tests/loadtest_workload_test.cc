// Request plans (loadtest/workload.h): length distributions against their analytic quantiles,
// determinism per index, distinct user messages, and token counts checked with the real Llama 3.1
// tokenizer. Fixed seeds; tolerances are stated in standard errors derived from sample sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/tokenizer.h"
#include "loadtest/workload.h"
#include "tests/support/test_paths.h"

namespace reflect::loadtest {
namespace {

// P(Z > z) for a standard normal Z.
double UpperTail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

std::vector<int32_t> Draws(const LengthDistribution& distribution, int count, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::vector<int32_t> draws(static_cast<size_t>(count));
  for (int32_t& draw : draws) draw = DrawLength(distribution, generator);
  return draws;
}

double FractionAbove(const std::vector<int32_t>& draws, int32_t threshold) {
  return static_cast<double>(std::count_if(draws.begin(), draws.end(),
                                           [&](int32_t draw) { return draw > threshold; })) /
         static_cast<double>(draws.size());
}

RequestGenerator Generator(const WorkloadSpec& spec, uint64_t seed) {
  absl::StatusOr<RequestGenerator> generator = RequestGenerator::Create(spec, seed);
  EXPECT_TRUE(generator.ok()) << generator.status();
  return *std::move(generator);
}

// Small fixed prompts keep tests that need many requests fast.
WorkloadSpec ShortPromptSpec() {
  WorkloadSpec spec;
  spec.prompt_tokens = {.kind = LengthDistribution::Kind::kFixed,
                        .tokens = 32,
                        .minimum = 1,
                        .maximum = 1,
                        .median = 1,
                        .sigma = 0};
  return spec;
}

TEST(WorkloadTest, DefaultOutputLengthsHaveMedian1500AndATailToTheCap) {
  const LengthDistribution output = DefaultOutputLengths();
  ASSERT_TRUE(ValidateLengthDistribution(output, "output_tokens").ok());
  constexpr int kCount = 20000;
  std::vector<int32_t> draws = Draws(output, kCount, /*seed=*/1);
  EXPECT_GE(*std::min_element(draws.begin(), draws.end()), 1);
  EXPECT_EQ(*std::max_element(draws.begin(), draws.end()), 16384);

  // The sample median's standard error is 1 / (2 f(m) sqrt(n)), with the lognormal density at
  // its median f(m) = 1 / (m σ sqrt(2π)); 4 of those, plus 1 for rounding draws to integers.
  std::nth_element(draws.begin(), draws.begin() + kCount / 2, draws.end());
  const double median_error = 1500 * output.sigma * std::sqrt(2 * M_PI) / (2 * std::sqrt(kCount));
  EXPECT_NEAR(draws[kCount / 2], 1500, 4 * median_error + 1);

  // Tail fractions P(Z > ln(x / 1500) / σ), within 4 binomial standard errors.
  for (int32_t threshold : {8192, 16383}) {
    SCOPED_TRACE(threshold);
    const double expected = UpperTail(std::log(threshold / 1500.0) / output.sigma);
    const double fraction = FractionAbove(draws, threshold);
    EXPECT_GT(fraction, 0);
    EXPECT_NEAR(fraction, expected, 4 * std::sqrt(expected * (1 - expected) / kCount));
  }
}

TEST(WorkloadTest, UniformAndFixedLengths) {
  const LengthDistribution uniform = {.kind = LengthDistribution::Kind::kUniform,
                                      .tokens = 1,
                                      .minimum = 100,
                                      .maximum = 300,
                                      .median = 1,
                                      .sigma = 0};
  constexpr int kCount = 10000;
  const std::vector<int32_t> draws = Draws(uniform, kCount, 2);
  EXPECT_EQ(*std::min_element(draws.begin(), draws.end()), 100);
  EXPECT_EQ(*std::max_element(draws.begin(), draws.end()), 300);
  double mean = 0;
  for (int32_t draw : draws) mean += draw;
  mean /= kCount;
  // A discrete uniform on 201 values has variance (201² − 1) / 12; 4 standard errors.
  EXPECT_NEAR(mean, 200, 4 * std::sqrt((201.0 * 201.0 - 1) / 12 / kCount));

  const LengthDistribution fixed = {.kind = LengthDistribution::Kind::kFixed,
                                    .tokens = 77,
                                    .minimum = 1,
                                    .maximum = 1,
                                    .median = 1,
                                    .sigma = 0};
  for (int32_t draw : Draws(fixed, 100, 3)) EXPECT_EQ(draw, 77);
}

TEST(WorkloadTest, RequestsCarryTheSpecAndForceTheirLength) {
  WorkloadSpec spec = ShortPromptSpec();
  spec.temperature = 0.7;
  spec.sampling_seed = 1000;
  spec.add_reflection_system_prompt = false;
  const RequestGenerator generator = Generator(spec, 5);
  for (int64_t index : {0, 1, 99}) {
    const PlannedRequest request = generator.NextRequest(index);
    EXPECT_EQ(request.index, index);
    EXPECT_EQ(request.prompt_tokens, 32);
    EXPECT_GE(request.max_tokens, spec.output_tokens.minimum);
    EXPECT_LE(request.max_tokens, spec.output_tokens.maximum);
    EXPECT_TRUE(request.ignore_eos);
    EXPECT_FALSE(request.add_reflection_system_prompt);
    EXPECT_EQ(request.temperature, 0.7);
    EXPECT_EQ(request.seed, 1000 + static_cast<uint64_t>(index));
    EXPECT_EQ(request.send_at, absl::ZeroDuration());
  }
}

TEST(WorkloadTest, RequestsAreDeterministicPerIndex) {
  const WorkloadSpec spec;
  const RequestGenerator first = Generator(spec, 9);
  const RequestGenerator second = Generator(spec, 9);
  // Asked in another order, by another generator: the same requests.
  for (int64_t index : {5, 3, 0, 1000}) {
    const PlannedRequest a = first.NextRequest(index);
    const PlannedRequest b = second.NextRequest(index);
    EXPECT_EQ(a.user_message, b.user_message);
    EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
    EXPECT_EQ(a.max_tokens, b.max_tokens);
    EXPECT_EQ(a.priority, b.priority);
  }
  EXPECT_NE(first.NextRequest(3).user_message, Generator(spec, 10).NextRequest(3).user_message);
}

TEST(WorkloadTest, PlanRequestsSendsRequestIAtTimeI) {
  const WorkloadSpec spec = ShortPromptSpec();
  const std::vector<absl::Duration> send_times = {absl::Milliseconds(10), absl::Milliseconds(20),
                                                  absl::Seconds(3)};
  absl::StatusOr<std::vector<PlannedRequest>> plan = PlanRequests(spec, send_times, 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->size(), send_times.size());
  const RequestGenerator generator = Generator(spec, 4);
  for (size_t i = 0; i < send_times.size(); ++i) {
    EXPECT_EQ((*plan)[i].send_at, send_times[i]);
    EXPECT_EQ((*plan)[i].user_message, generator.NextRequest(static_cast<int64_t>(i)).user_message);
  }
}

TEST(WorkloadTest, UserMessagesAreDistinct) {
  const RequestGenerator generator = Generator(ShortPromptSpec(), 6);
  std::set<std::string> messages;
  constexpr int kCount = 5000;
  for (int64_t index = 0; index < kCount; ++index) {
    messages.insert(generator.NextRequest(index).user_message);
  }
  EXPECT_EQ(messages.size(), static_cast<size_t>(kCount));
}

TEST(WorkloadTest, HighPriorityFractionIsHonoured) {
  WorkloadSpec spec = ShortPromptSpec();
  spec.high_priority_fraction = 0.3;
  spec.high_priority = 7;
  const RequestGenerator generator = Generator(spec, 8);
  constexpr int kCount = 10000;
  int high = 0;
  for (int64_t index = 0; index < kCount; ++index) {
    const int32_t priority = generator.NextRequest(index).priority;
    ASSERT_TRUE(priority == 0 || priority == 7) << priority;
    high += priority == 7;
  }
  // 4 binomial standard errors.
  EXPECT_NEAR(high / static_cast<double>(kCount), 0.3, 4 * std::sqrt(0.3 * 0.7 / kCount));
}

TEST(WorkloadTest, UserMessagesHaveAboutTheDrawnTokenCount) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::Load(testing::TokenizerDirectory());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  WorkloadSpec spec;
  spec.prompt_tokens = {.kind = LengthDistribution::Kind::kUniform,
                        .tokens = 1,
                        .minimum = 16,
                        .maximum = 4000,
                        .median = 1,
                        .sigma = 0};
  const RequestGenerator generator = Generator(spec, 12);
  // Small and large indices: the index's digits are part of the text.
  for (int64_t index :
       std::vector<int64_t>{0, 1, 42, 999, 123456, 9876543210, 3, 4, 5, 6, 7, 8, 9, 10}) {
    const PlannedRequest request = generator.NextRequest(index);
    const double tokens = static_cast<double>((*tokenizer)->Encode(request.user_message).size());
    EXPECT_NEAR(tokens, request.prompt_tokens, 0.1 * request.prompt_tokens)
        << "index " << index << ": " << request.user_message.substr(0, 80);
  }
  std::mt19937_64 words(1);
  for (int32_t target : {16, 100, 1000}) {
    const std::string text = UserMessageText(77, target, words);
    EXPECT_NEAR(static_cast<double>((*tokenizer)->Encode(text).size()), target, 0.1 * target);
  }
}

TEST(WorkloadTest, BadSpecsAreRefusedNamingTheField) {
  struct BadCase {
    std::string field;
    WorkloadSpec spec;
  };
  std::vector<BadCase> cases(7);
  cases[0].field = "prompt_tokens.median";
  cases[0].spec.prompt_tokens.median = 0;
  cases[1].field = "output_tokens.sigma";
  cases[1].spec.output_tokens.sigma = -1;
  cases[2].field = "output_tokens.maximum";
  cases[2].spec.output_tokens.maximum = kMaxLengthTokens + 1;
  cases[3].field = "prompt_tokens.maximum";
  cases[3].spec.prompt_tokens.minimum = 100;
  cases[3].spec.prompt_tokens.maximum = 50;
  cases[4].field = "temperature";
  cases[4].spec.temperature = -0.1;
  cases[5].field = "high_priority_fraction";
  cases[5].spec.high_priority_fraction = 1.5;
  cases[6].field = "high_priority";
  cases[6].spec.high_priority = 101;
  cases.push_back({.field = "prompt_tokens.tokens", .spec = ShortPromptSpec()});
  cases.back().spec.prompt_tokens.tokens = 0;
  for (const BadCase& bad : cases) {
    SCOPED_TRACE(bad.field);
    const absl::Status status = RequestGenerator::Create(bad.spec, 1).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_NE(status.message().find(bad.field + ":"), absl::string_view::npos) << status;
    EXPECT_FALSE(PlanRequests(bad.spec, {absl::ZeroDuration()}, 1).ok());
  }
}

}  // namespace
}  // namespace reflect::loadtest
