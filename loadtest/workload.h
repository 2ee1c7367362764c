// Request plans: what each request of a load test asks for. Lengths come from configurable
// distributions; the user message is filler text of about the drawn number of Llama 3 tokens,
// distinct per request so that prefix caching shares only the reflection system prompt; output
// length is forced with max_tokens and ignore_eos, so random-weight models produce it too.
// Pure computation: no I/O, no clocks.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loadtest/load_types.h"

namespace reflect::loadtest {

// A distribution of token counts. Plain data; validate with ValidateLengthDistribution.
struct LengthDistribution {
  enum class Kind {
    kFixed,      // always `tokens`
    kUniform,    // uniform on the integers [minimum, maximum]
    kLogNormal,  // round(exp(N(ln median, sigma²))), clamped to [minimum, maximum]
  };
  Kind kind = Kind::kFixed;
  int32_t tokens = 1;   // kFixed
  int32_t minimum = 1;  // kUniform, kLogNormal
  int32_t maximum = 1;  // kUniform, kLogNormal
  double median = 1;    // kLogNormal: > 0
  double sigma = 0;     // kLogNormal: standard deviation of ln(length), ≥ 0
};

// The largest length any distribution may produce; a guard against typos.
inline constexpr int32_t kMaxLengthTokens = 1 << 20;

// User messages: lognormal, median 256 tokens, sigma 0.5, within [16, 2048].
LengthDistribution DefaultPromptLengths();
// Outputs: lognormal, median 1,500 tokens, sigma 1.0, within [1, 16384]. With sigma 1 about 4.5%
// of requests ask for more than 8k tokens and 0.84% reach the 16k cap (P(Z > ln(16384/1500))),
// a tail to 16k that leaves the median request typical; the mean is about 2,400 tokens.
LengthDistribution DefaultOutputLengths();

// InvalidArgument naming `field` (e.g. "output_tokens.sigma") when a parameter is out of range:
// lengths outside [1, kMaxLengthTokens], minimum > maximum, median ≤ 0, sigma < 0 or not finite.
absl::Status ValidateLengthDistribution(const LengthDistribution& distribution,
                                        const std::string& field);

// One draw from a validated distribution.
int32_t DrawLength(const LengthDistribution& distribution, std::mt19937_64& generator);

struct WorkloadSpec {
  LengthDistribution prompt_tokens = DefaultPromptLengths();  // of the user message
  LengthDistribution output_tokens = DefaultOutputLengths();  // becomes max_tokens
  bool add_reflection_system_prompt = true;
  double temperature = 0.0;  // ≥ 0
  // The sampling seed sent with request i is sampling_seed + i, so that runs at temperature > 0
  // are reproducible on the server's side too.
  uint64_t sampling_seed = 0;
  double high_priority_fraction = 0;  // in [0, 1]: share of requests sent with high_priority
  int32_t high_priority = 10;         // in [-100, 100]; the other requests use priority 0
};

// InvalidArgument naming the offending field ("temperature", "prompt_tokens.median", ...).
absl::Status ValidateWorkloadSpec(const WorkloadSpec& spec);

// Plans requests one index at a time, for closed loops that send as long as the run lasts.
// Immutable after Create; NextRequest may be called concurrently.
class RequestGenerator {
 public:
  // Errors as ValidateWorkloadSpec.
  static absl::StatusOr<RequestGenerator> Create(const WorkloadSpec& spec, uint64_t seed);

  // Request `index` (≥ 0), with send_at zero. The same (spec, seed, index) always gives the same
  // request, independent of other calls; different indices give different user messages.
  PlannedRequest NextRequest(int64_t index) const;

 private:
  RequestGenerator(const WorkloadSpec& spec, uint64_t seed) : spec_(spec), seed_(seed) {}

  WorkloadSpec spec_;
  uint64_t seed_;
};

// Open loop: request i is NextRequest(i) sent at send_times[i]. Errors as ValidateWorkloadSpec.
absl::StatusOr<std::vector<PlannedRequest>> PlanRequests(
    const WorkloadSpec& spec, const std::vector<absl::Duration>& send_times, uint64_t seed);

// About `tokens` Llama 3 tokens of text: "Request <index>:" and then common English words drawn
// from `generator` (each one token with its leading space). Distinct for distinct indices.
std::string UserMessageText(int64_t index, int32_t tokens, std::mt19937_64& generator);

}  // namespace reflect::loadtest
