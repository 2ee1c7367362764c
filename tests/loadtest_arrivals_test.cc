// Open-loop send times (loadtest/arrivals.h): counts and burstiness match the rate profile and
// the gamma renewal process, checked against moments computed here; fixed seeds make every run
// the same, and tolerances are stated in standard errors derived from the sample sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "loadtest/arrivals.h"

namespace reflect::loadtest {
namespace {

std::vector<absl::Duration> Times(const ArrivalPattern& pattern, absl::Duration run_length,
                                  uint64_t seed) {
  absl::StatusOr<std::vector<absl::Duration>> times = ArrivalTimes(pattern, run_length, seed);
  EXPECT_TRUE(times.ok()) << times.status();
  return times.ok() ? *times : std::vector<absl::Duration>();
}

ArrivalPattern Constant(double rate, double burstiness) {
  ArrivalPattern pattern;
  pattern.rate.requests_per_second = rate;
  pattern.burstiness = burstiness;
  return pattern;
}

int64_t CountIn(const std::vector<absl::Duration>& times, double from_seconds, double to_seconds) {
  return std::count_if(times.begin(), times.end(), [&](absl::Duration t) {
    return t >= absl::Seconds(from_seconds) && t < absl::Seconds(to_seconds);
  });
}

// Sample coefficient of variation of the gaps between consecutive times.
double GapCoefficientOfVariation(const std::vector<absl::Duration>& times) {
  std::vector<double> gaps;
  for (size_t i = 1; i < times.size(); ++i) {
    gaps.push_back(absl::ToDoubleSeconds(times[i] - times[i - 1]));
  }
  double mean = 0;
  for (double gap : gaps) mean += gap;
  mean /= static_cast<double>(gaps.size());
  double variance = 0;
  for (double gap : gaps) variance += (gap - mean) * (gap - mean);
  variance /= static_cast<double>(gaps.size() - 1);
  return std::sqrt(variance) / mean;
}

// Expects `count` within 4 standard deviations of a renewal process's count over a window with
// `expected` arrivals: for gaps with coefficient of variation c the count's variance is about
// expected·c² (Cox's renewal central limit theorem). The chance of a false failure is < 1e-4.
void ExpectCountNear(int64_t count, double expected, double burstiness) {
  const double deviation = std::sqrt(expected / burstiness);
  EXPECT_NEAR(static_cast<double>(count), expected, 4 * deviation)
      << "expected " << expected << " ± " << 4 * deviation;
}

TEST(ArrivalsTest, PoissonCountMatchesRateTimesLength) {
  const std::vector<absl::Duration> times =
      Times(Constant(50, 1.0), absl::Seconds(100), /*seed=*/7);
  ExpectCountNear(static_cast<int64_t>(times.size()), 50 * 100, 1.0);
}

TEST(ArrivalsTest, TimesAreSortedAndInsideTheRun) {
  const absl::Duration run_length = absl::Seconds(30);
  const std::vector<absl::Duration> times = Times(Constant(100, 0.3), run_length, 3);
  ASSERT_FALSE(times.empty());
  EXPECT_TRUE(std::is_sorted(times.begin(), times.end()));
  EXPECT_GE(times.front(), absl::ZeroDuration());
  EXPECT_LT(times.back(), run_length);
}

// The gap CV of a unit-mean gamma with shape b is 1/sqrt(b). Its sample estimate from n gaps
// has standard error about (sqrt((μ4 − σ⁴)/n) / (2σ) + CV·σ/sqrt(n)) / mean (the spread of the
// sample SD plus that of the sample mean, added as a bound), with μ4 = 3(b+2)/b³ and σ² = 1/b
// the gamma's central moments; the test allows 5 of those.
TEST(ArrivalsTest, BurstinessSetsTheGapCoefficientOfVariation) {
  for (double burstiness : {1.0, 0.25, 4.0}) {
    SCOPED_TRACE(burstiness);
    const double rate = 400;
    const std::vector<absl::Duration> times =
        Times(Constant(rate, burstiness), absl::Seconds(100), /*seed=*/11);
    const double gaps = static_cast<double>(times.size() - 1);
    const double variance = 1 / burstiness;
    const double sigma = std::sqrt(variance);
    const double fourth_moment = 3 * (burstiness + 2) / std::pow(burstiness, 3);
    const double expected_cv = 1 / std::sqrt(burstiness);
    const double standard_error =
        std::sqrt((fourth_moment - variance * variance) / gaps) / (2 * sigma) +
        expected_cv * sigma / std::sqrt(gaps);
    EXPECT_NEAR(GapCoefficientOfVariation(times), expected_cv, 5 * standard_error);
  }
}

TEST(ArrivalsTest, EvenSpacingSendsExactlyOneGapApartAtEveryRate) {
  ArrivalPattern pattern = Constant(4, 1.0);
  pattern.even_spacing = true;
  const std::vector<absl::Duration> times = Times(pattern, absl::Seconds(10), /*seed=*/3);
  ASSERT_EQ(times.size(), 40u);  // 0 s, 0.25 s, ... 9.75 s
  for (size_t i = 0; i < times.size(); ++i) {
    EXPECT_NEAR(absl::ToDoubleSeconds(times[i]), 0.25 * static_cast<double>(i), 1e-9);
  }
  EXPECT_EQ(Times(pattern, absl::Seconds(10), /*seed=*/4), times);  // no randomness

  // Under a spike, the gaps follow the rate: 1 s, then 0.25 s, then 1 s again.
  pattern = Constant(1, 1.0);
  pattern.even_spacing = true;
  pattern.rate.kind = RateProfile::Kind::kStepSpike;
  pattern.rate.spike_multiplier = 4;
  pattern.rate.spike_start = absl::Seconds(10);
  pattern.rate.spike_duration = absl::Seconds(5);
  const std::vector<absl::Duration> spiked = Times(pattern, absl::Seconds(30), /*seed=*/3);
  EXPECT_EQ(CountIn(spiked, 0, 10), 10);   // 0 s ... 9 s
  EXPECT_EQ(CountIn(spiked, 10, 15), 20);  // 10 s, 10.25 s ... 14.75 s
  EXPECT_EQ(CountIn(spiked, 15, 30), 15);  // 15 s ... 29 s
}

TEST(ArrivalsTest, StepSpikeMultipliesTheRateDuringTheSpike) {
  for (double burstiness : {1.0, 0.5}) {
    SCOPED_TRACE(burstiness);
    ArrivalPattern pattern = Constant(20, burstiness);
    pattern.rate.kind = RateProfile::Kind::kStepSpike;
    pattern.rate.spike_multiplier = 5;
    pattern.rate.spike_start = absl::Seconds(20);
    pattern.rate.spike_duration = absl::Seconds(20);
    const std::vector<absl::Duration> times = Times(pattern, absl::Seconds(60), 5);
    ExpectCountNear(CountIn(times, 0, 20), 20 * 20, burstiness);
    ExpectCountNear(CountIn(times, 20, 40), 20 * 5 * 20, burstiness);
    ExpectCountNear(CountIn(times, 40, 60), 20 * 20, burstiness);
  }
}

// Expected counts are the integral of the linear rate over each tenth, computed here.
TEST(ArrivalsTest, LinearRampFollowsTheRateUpAndDown) {
  const double length = 100;
  for (auto [start_rate, end_rate] : {std::pair{10.0, 100.0}, std::pair{100.0, 0.0}}) {
    SCOPED_TRACE(start_rate);
    ArrivalPattern pattern = Constant(start_rate, 1.0);
    pattern.rate.kind = RateProfile::Kind::kLinearRamp;
    pattern.rate.end_requests_per_second = end_rate;
    const std::vector<absl::Duration> times = Times(pattern, absl::Seconds(length), 9);
    auto expected_between = [&](double from, double to) {
      auto rate = [&](double t) { return start_rate + (end_rate - start_rate) * t / length; };
      return (to - from) * (rate(from) + rate(to)) / 2;
    };
    ExpectCountNear(CountIn(times, 0, 10), expected_between(0, 10), 1.0);
    ExpectCountNear(CountIn(times, 90, 100), expected_between(90, 100), 1.0);
    ExpectCountNear(static_cast<int64_t>(times.size()), expected_between(0, length), 1.0);
  }
}

TEST(ArrivalsTest, ScheduleRateAndIntensityAgreeWithTheProfile) {
  RateProfile spike{.kind = RateProfile::Kind::kStepSpike,
                    .requests_per_second = 2,
                    .end_requests_per_second = 0,
                    .spike_multiplier = 10,
                    .spike_start = absl::Seconds(60),
                    .spike_duration = absl::Seconds(60)};
  absl::StatusOr<RateSchedule> schedule = RateSchedule::Create(spike, absl::Seconds(180));
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  EXPECT_DOUBLE_EQ(schedule->RateAt(absl::Seconds(30)), 2);
  EXPECT_DOUBLE_EQ(schedule->RateAt(absl::Seconds(90)), 20);
  EXPECT_DOUBLE_EQ(schedule->RateAt(absl::Seconds(150)), 2);
  EXPECT_DOUBLE_EQ(schedule->RateAt(absl::Seconds(200)), 0);
  EXPECT_DOUBLE_EQ(schedule->CumulativeIntensity(absl::Seconds(90)), 2 * 60 + 20 * 30);
  EXPECT_DOUBLE_EQ(schedule->CumulativeIntensity(absl::Seconds(180)), 2 * 120 + 20 * 60);
  // The inverse undoes the intensity, inside the spike and after it.
  for (double seconds : {10.0, 75.0, 150.0}) {
    const double arrivals = schedule->CumulativeIntensity(absl::Seconds(seconds));
    EXPECT_NEAR(schedule->InverseCumulativeIntensitySeconds(arrivals), seconds, 1e-9);
  }
}

TEST(ArrivalsTest, ScaleRatesMultipliesRatesOnly) {
  RateProfile ramp{.kind = RateProfile::Kind::kLinearRamp,
                   .requests_per_second = 2,
                   .end_requests_per_second = 8,
                   .spike_multiplier = 3,
                   .spike_start = absl::Seconds(1),
                   .spike_duration = absl::Seconds(2)};
  const RateProfile scaled = ScaleRates(ramp, 0.5);
  EXPECT_EQ(scaled.requests_per_second, 1);
  EXPECT_EQ(scaled.end_requests_per_second, 4);
  EXPECT_EQ(scaled.spike_multiplier, 3);
  EXPECT_EQ(scaled.spike_start, absl::Seconds(1));
  EXPECT_EQ(scaled.spike_duration, absl::Seconds(2));
}

TEST(ArrivalsTest, ZeroRateSendsNothing) {
  EXPECT_TRUE(Times(Constant(0, 1.0), absl::Seconds(10), 1).empty());
}

TEST(ArrivalsTest, SameSeedSameTimesOtherSeedOtherTimes) {
  const ArrivalPattern pattern = Constant(30, 0.5);
  const std::vector<absl::Duration> first = Times(pattern, absl::Seconds(20), 42);
  EXPECT_EQ(first, Times(pattern, absl::Seconds(20), 42));
  EXPECT_NE(first, Times(pattern, absl::Seconds(20), 43));
}

TEST(ArrivalsTest, BadInputsAreRefusedNamingTheField) {
  struct BadCase {
    std::string field;
    ArrivalPattern pattern;
    absl::Duration run_length = absl::Seconds(60);
  };
  ArrivalPattern spike = Constant(1, 1.0);
  spike.rate.kind = RateProfile::Kind::kStepSpike;
  spike.rate.spike_multiplier = 10;
  spike.rate.spike_start = absl::Seconds(10);
  spike.rate.spike_duration = absl::Seconds(10);
  ArrivalPattern ramp = Constant(1, 1.0);
  ramp.rate.kind = RateProfile::Kind::kLinearRamp;
  ramp.rate.end_requests_per_second = 5;
  std::vector<BadCase> cases = {
      {.field = "requests_per_second", .pattern = Constant(-1, 1.0)},
      {.field = "requests_per_second", .pattern = Constant(std::nan(""), 1.0)},
      {.field = "requests_per_second", .pattern = Constant(1e9, 1.0)},
      {.field = "burstiness", .pattern = Constant(1, 0)},
      {.field = "burstiness", .pattern = Constant(1, -2)},
      {.field = "run_length", .pattern = Constant(1, 1.0), .run_length = absl::ZeroDuration()},
  };
  cases.push_back({.field = "spike_multiplier", .pattern = spike});
  cases.back().pattern.rate.spike_multiplier = 0;
  cases.push_back({.field = "spike_start", .pattern = spike});
  cases.back().pattern.rate.spike_start = absl::Seconds(60);
  cases.push_back({.field = "spike_start", .pattern = spike});
  cases.back().pattern.rate.spike_start = absl::Seconds(-1);
  cases.push_back({.field = "spike_duration", .pattern = spike});
  cases.back().pattern.rate.spike_duration = absl::Seconds(51);
  cases.push_back({.field = "spike_duration", .pattern = spike});
  cases.back().pattern.rate.spike_duration = absl::ZeroDuration();
  cases.push_back({.field = "end_requests_per_second", .pattern = ramp});
  cases.back().pattern.rate.end_requests_per_second = -3;
  for (const BadCase& bad : cases) {
    SCOPED_TRACE(bad.field);
    const absl::Status status = ArrivalTimes(bad.pattern, bad.run_length, 1).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_NE(status.message().find(bad.field), absl::string_view::npos) << status;
  }
  // The untouched spike and ramp are valid.
  EXPECT_TRUE(ArrivalTimes(spike, absl::Seconds(60), 1).ok());
  EXPECT_TRUE(ArrivalTimes(ramp, absl::Seconds(60), 1).ok());
}

}  // namespace
}  // namespace reflect::loadtest
