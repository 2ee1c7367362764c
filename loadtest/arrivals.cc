#include "loadtest/arrivals.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reflect::loadtest {
namespace {

// Guards against a typo in a rate planning more requests than a run could ever send.
constexpr double kMaxExpectedArrivals = 1e7;

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status ValidateRate(const std::string& field, double rate) {
  if (!std::isfinite(rate) || rate < 0) {
    return FieldError(field, absl::StrCat("must be a finite rate >= 0, got ", rate));
  }
  return absl::OkStatus();
}

}  // namespace

RateProfile ScaleRates(const RateProfile& profile, double factor) {
  RateProfile scaled = profile;
  scaled.requests_per_second *= factor;
  scaled.end_requests_per_second *= factor;
  return scaled;
}

absl::StatusOr<RateSchedule> RateSchedule::Create(const RateProfile& profile,
                                                  absl::Duration run_length) {
  if (run_length <= absl::ZeroDuration() || run_length == absl::InfiniteDuration()) {
    return FieldError("run_length", "must be positive and finite");
  }
  REFLECT_RETURN_IF_ERROR(ValidateRate("requests_per_second", profile.requests_per_second));
  const double run_seconds = absl::ToDoubleSeconds(run_length);
  const double rate = profile.requests_per_second;
  std::vector<Segment> segments;
  auto add_segment = [&segments](double start, double end, double start_rate, double end_rate) {
    if (end <= start) return;  // a spike at the very start or end leaves an empty piece
    segments.push_back({start, end, start_rate, end_rate, 0});
  };
  switch (profile.kind) {
    case RateProfile::Kind::kConstant:
      add_segment(0, run_seconds, rate, rate);
      break;
    case RateProfile::Kind::kStepSpike: {
      const double multiplier = profile.spike_multiplier;
      if (!std::isfinite(multiplier) || multiplier <= 0) {
        return FieldError("spike_multiplier", absl::StrCat("must be > 0, got ", multiplier));
      }
      if (profile.spike_start < absl::ZeroDuration() || profile.spike_start >= run_length) {
        return FieldError("spike_start", "must lie in [0, run_length)");
      }
      if (profile.spike_duration <= absl::ZeroDuration() ||
          profile.spike_start + profile.spike_duration > run_length) {
        return FieldError("spike_duration", "must be > 0 and end within run_length");
      }
      const double spike_start = absl::ToDoubleSeconds(profile.spike_start);
      const double spike_end = absl::ToDoubleSeconds(profile.spike_start + profile.spike_duration);
      add_segment(0, spike_start, rate, rate);
      add_segment(spike_start, spike_end, rate * multiplier, rate * multiplier);
      add_segment(spike_end, run_seconds, rate, rate);
      break;
    }
    case RateProfile::Kind::kLinearRamp:
      REFLECT_RETURN_IF_ERROR(
          ValidateRate("end_requests_per_second", profile.end_requests_per_second));
      add_segment(0, run_seconds, rate, profile.end_requests_per_second);
      break;
  }
  double arrivals = 0;
  for (Segment& segment : segments) {
    segment.arrivals_before = arrivals;
    arrivals += 0.5 * (segment.start_rate + segment.end_rate) *
                (segment.end_seconds - segment.start_seconds);
  }
  if (!(arrivals <= kMaxExpectedArrivals)) {
    return FieldError("requests_per_second",
                      absl::StrCat("plans ", arrivals, " requests, more than ",
                                   kMaxExpectedArrivals, " in one run"));
  }
  return RateSchedule(std::move(segments), run_seconds);
}

double RateSchedule::RateAt(absl::Duration t) const {
  const double seconds = absl::ToDoubleSeconds(t);
  for (const Segment& segment : segments_) {
    if (seconds >= segment.start_seconds && seconds < segment.end_seconds) {
      const double fraction =
          (seconds - segment.start_seconds) / (segment.end_seconds - segment.start_seconds);
      return segment.start_rate + fraction * (segment.end_rate - segment.start_rate);
    }
  }
  return 0;
}

double RateSchedule::CumulativeIntensity(absl::Duration t) const {
  const double seconds = absl::ToDoubleSeconds(t);
  double arrivals = 0;
  for (const Segment& segment : segments_) {
    if (seconds <= segment.start_seconds) break;
    const double length = segment.end_seconds - segment.start_seconds;
    const double covered = std::min(seconds, segment.end_seconds) - segment.start_seconds;
    const double slope = (segment.end_rate - segment.start_rate) / length;
    arrivals =
        segment.arrivals_before + segment.start_rate * covered + 0.5 * slope * covered * covered;
  }
  return arrivals;
}

double RateSchedule::InverseCumulativeIntensitySeconds(double expected_arrivals) const {
  // The last segment that starts at or before the target holds it: the intensity is
  // nondecreasing, and a segment with rate 0 throughout adds nothing to cross.
  const Segment* holder = &segments_.front();
  for (const Segment& segment : segments_) {
    if (segment.arrivals_before > expected_arrivals) break;
    holder = &segment;
  }
  // Solve start_rate·s + slope·s²/2 = remaining for s ≥ 0 in the form that stays exact when the
  // slope is 0 or negative.
  const double remaining = expected_arrivals - holder->arrivals_before;
  if (remaining <= 0) return holder->start_seconds;
  const double slope =
      (holder->end_rate - holder->start_rate) / (holder->end_seconds - holder->start_seconds);
  const double discriminant =
      std::max(0.0, holder->start_rate * holder->start_rate + 2 * slope * remaining);
  return holder->start_seconds + 2 * remaining / (holder->start_rate + std::sqrt(discriminant));
}

absl::Status ValidateBurstiness(double burstiness) {
  if (!std::isfinite(burstiness) || burstiness <= 0) {
    return FieldError("burstiness", absl::StrCat("must be > 0, got ", burstiness));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<absl::Duration>> ArrivalTimes(const ArrivalPattern& pattern,
                                                         absl::Duration run_length, uint64_t seed) {
  REFLECT_RETURN_IF_ERROR(ValidateBurstiness(pattern.burstiness));
  absl::StatusOr<RateSchedule> schedule = RateSchedule::Create(pattern.rate, run_length);
  if (!schedule.ok()) return schedule.status();
  const double total_arrivals = schedule->CumulativeIntensity(run_length);
  std::mt19937_64 generator(seed);
  // Unit mean: shape b, scale 1/b.
  std::gamma_distribution<double> random_gap(pattern.burstiness, 1.0 / pattern.burstiness);
  const auto gap = [&] { return pattern.even_spacing ? 1.0 : random_gap(generator); };
  std::vector<absl::Duration> times;
  times.reserve(static_cast<size_t>(total_arrivals * 1.1) + 16);
  for (double unit_time = pattern.even_spacing ? 0.0 : gap(); unit_time < total_arrivals;
       unit_time += gap()) {
    const absl::Duration at = absl::Seconds(schedule->InverseCumulativeIntensitySeconds(unit_time));
    if (at >= run_length) break;  // rounding at the very end of the run
    times.push_back(at);
  }
  return times;
}

}  // namespace reflect::loadtest
