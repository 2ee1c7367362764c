// Open-loop send times: a rate profile (how many requests per second, over the run) times an
// arrival process (how bursty they come at a given rate).
//
// The process is a renewal process with unit-mean gamma inter-arrival times of shape
// `burstiness` (vLLM's benchmark convention: 1 is Poisson; below 1 is burstier, with coefficient
// of variation 1/sqrt(burstiness); the first arrival is one gap after the start), or, with
// `even_spacing`, exactly one unit apart from the start on (the limit of burstiness → ∞, as
// guidellm's "constant" profile: rate r for T s sends at 0, 1/r, ... r·T requests). Its unit-rate
// arrival times are mapped through the inverse of the profile's cumulative intensity (time
// rescaling), so every profile works with every process.
// Everything here is pure computation: no I/O, no clocks, no shared state.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace reflect::loadtest {

// The arrival rate over the run, in requests per second. Plain data; see RateSchedule.
struct RateProfile {
  enum class Kind {
    kConstant,    // requests_per_second throughout
    kStepSpike,   // requests_per_second, times spike_multiplier during the spike
    kLinearRamp,  // from requests_per_second at 0 to end_requests_per_second at the run's end
  };
  Kind kind = Kind::kConstant;
  double requests_per_second = 0;      // ≥ 0: the rate, the spike's baseline, the ramp's start
  double end_requests_per_second = 0;  // kLinearRamp: ≥ 0
  double spike_multiplier = 1;         // kStepSpike: > 0
  absl::Duration spike_start = absl::ZeroDuration();     // kStepSpike: ≥ 0
  absl::Duration spike_duration = absl::ZeroDuration();  // kStepSpike: > 0, ends within the run
};

// The profile with every rate multiplied by `factor` (the load tester's --rate-scale); times and
// the spike multiplier are unchanged.
RateProfile ScaleRates(const RateProfile& profile, double factor);

struct ArrivalPattern {
  RateProfile rate;
  double burstiness = 1.0;    // > 0: gamma shape; 1 is Poisson (ignored with even_spacing)
  bool even_spacing = false;  // unit gaps exactly, no randomness
};

// A validated rate profile over a run of known length. Immutable; cheap to copy.
class RateSchedule {
 public:
  // InvalidArgument naming the offending field (e.g. "spike_multiplier") when a rate is negative
  // or not finite, the multiplier is not positive, the spike does not lie inside the run, or
  // run_length is not positive.
  static absl::StatusOr<RateSchedule> Create(const RateProfile& profile, absl::Duration run_length);

  // The rate at offset t, in requests per second (0 outside [0, run_length)).
  double RateAt(absl::Duration t) const;
  // The expected number of arrivals in [0, t): the integral of RateAt from 0 to min(t, run_length).
  double CumulativeIntensity(absl::Duration t) const;
  // The t, in seconds, at which CumulativeIntensity reaches expected_arrivals; requires
  // 0 ≤ expected_arrivals < CumulativeIntensity(run_length).
  double InverseCumulativeIntensitySeconds(double expected_arrivals) const;

  absl::Duration run_length() const { return absl::Seconds(run_seconds_); }

 private:
  // A piece of the run over which the rate changes linearly (constant when the ends are equal).
  struct Segment {
    double start_seconds;
    double end_seconds;
    double start_rate;
    double end_rate;
    double arrivals_before;  // the cumulative intensity at start_seconds
  };

  RateSchedule(std::vector<Segment> segments, double run_seconds)
      : segments_(std::move(segments)), run_seconds_(run_seconds) {}

  std::vector<Segment> segments_;  // in time order, covering [0, run_seconds_)
  double run_seconds_;
};

// InvalidArgument naming "burstiness" when it is not a positive finite number.
absl::Status ValidateBurstiness(double burstiness);

// Send times for one run: sorted, each in [0, run_length), the same for the same arguments.
// Errors as RateSchedule::Create and ValidateBurstiness.
absl::StatusOr<std::vector<absl::Duration>> ArrivalTimes(const ArrivalPattern& pattern,
                                                         absl::Duration run_length, uint64_t seed);

}  // namespace reflect::loadtest
