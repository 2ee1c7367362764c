#include "loadtest/workload.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/splitmix64.h"
#include "common/status_macros.h"

namespace reflect::loadtest {
namespace {

// Each word, with a leading space, is one token of the Llama 3 vocabulary, so the token count
// of the filler text is the number of words it holds.
constexpr std::array<absl::string_view, 128> kWords = {
    "time",   "person",   "year",    "way",     "day",     "thing",  "man",      "world",
    "life",   "hand",     "part",    "child",   "eye",     "woman",  "place",    "work",
    "week",   "case",     "point",   "company", "number",  "group",  "problem",  "fact",
    "river",  "mountain", "garden",  "window",  "table",   "letter", "music",    "story",
    "water",  "light",    "house",   "paper",   "market",  "field",  "city",     "road",
    "bridge", "forest",   "ocean",   "island",  "valley",  "winter", "summer",   "autumn",
    "spring", "morning",  "evening", "night",   "kitchen", "doctor", "teacher",  "student",
    "friend", "family",   "history", "science", "nature",  "animal", "flower",   "stone",
    "metal",  "glass",    "cloud",   "storm",   "rain",    "wind",   "fire",     "earth",
    "silver", "golden",   "quiet",   "gentle",  "bright",  "simple", "careful",  "ancient",
    "modern", "early",    "late",    "small",   "large",   "green",  "blue",     "yellow",
    "purple", "orange",   "red",     "white",   "black",   "warm",   "cold",     "soft",
    "hard",   "fast",     "slow",    "young",   "old",     "happy",  "calm",     "brave",
    "clever", "honest",   "strong",  "open",    "round",   "deep",   "wide",     "narrow",
    "heavy",  "sharp",    "sweet",   "bitter",  "fresh",   "clean",  "plain",    "rich",
    "walk",   "read",     "write",   "build",   "carry",   "follow", "remember", "explain",
};

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status ValidateLength(const std::string& field, int64_t tokens) {
  if (tokens < 1 || tokens > kMaxLengthTokens) {
    return FieldError(field, absl::StrCat("must be in [1, ", kMaxLengthTokens, "], got ", tokens));
  }
  return absl::OkStatus();
}

// The tokens of "Request <index>:": "Request", " ", the digits in groups of up to three (the
// Llama 3 pre-tokenizer splits numbers so), and ":".
int32_t PrefixTokens(const std::string& digits) {
  return 3 + static_cast<int32_t>((digits.size() + 2) / 3);
}

}  // namespace

LengthDistribution DefaultPromptLengths() {
  return {.kind = LengthDistribution::Kind::kLogNormal,
          .tokens = 1,
          .minimum = 16,
          .maximum = 2048,
          .median = 256,
          .sigma = 0.5};
}

LengthDistribution DefaultOutputLengths() {
  return {.kind = LengthDistribution::Kind::kLogNormal,
          .tokens = 1,
          .minimum = 1,
          .maximum = 16384,
          .median = 1500,
          .sigma = 1.0};
}

absl::Status ValidateLengthDistribution(const LengthDistribution& distribution,
                                        const std::string& field) {
  switch (distribution.kind) {
    case LengthDistribution::Kind::kFixed:
      return ValidateLength(field + ".tokens", distribution.tokens);
    case LengthDistribution::Kind::kLogNormal:
      if (!std::isfinite(distribution.median) || distribution.median <= 0) {
        return FieldError(field + ".median",
                          absl::StrCat("must be > 0, got ", distribution.median));
      }
      if (!std::isfinite(distribution.sigma) || distribution.sigma < 0) {
        return FieldError(field + ".sigma", absl::StrCat("must be >= 0, got ", distribution.sigma));
      }
      [[fallthrough]];
    case LengthDistribution::Kind::kUniform:
      REFLECT_RETURN_IF_ERROR(ValidateLength(field + ".minimum", distribution.minimum));
      REFLECT_RETURN_IF_ERROR(ValidateLength(field + ".maximum", distribution.maximum));
      if (distribution.minimum > distribution.maximum) {
        return FieldError(field + ".maximum", "must be >= minimum");
      }
      return absl::OkStatus();
  }
  return FieldError(field, "unknown distribution kind");
}

int32_t DrawLength(const LengthDistribution& distribution, std::mt19937_64& generator) {
  switch (distribution.kind) {
    case LengthDistribution::Kind::kFixed:
      return distribution.tokens;
    case LengthDistribution::Kind::kUniform:
      return std::uniform_int_distribution<int32_t>(distribution.minimum,
                                                    distribution.maximum)(generator);
    case LengthDistribution::Kind::kLogNormal: {
      const double length = std::round(
          std::exp(std::log(distribution.median) +
                   distribution.sigma * std::normal_distribution<double>(0, 1)(generator)));
      // Clamp in double: the draw may exceed what an int32_t holds.
      return static_cast<int32_t>(std::clamp(length, static_cast<double>(distribution.minimum),
                                             static_cast<double>(distribution.maximum)));
    }
  }
  return distribution.minimum;
}

absl::Status ValidateWorkloadSpec(const WorkloadSpec& spec) {
  REFLECT_RETURN_IF_ERROR(ValidateLengthDistribution(spec.prompt_tokens, "prompt_tokens"));
  REFLECT_RETURN_IF_ERROR(ValidateLengthDistribution(spec.output_tokens, "output_tokens"));
  if (!std::isfinite(spec.temperature) || spec.temperature < 0) {
    return FieldError("temperature", absl::StrCat("must be >= 0, got ", spec.temperature));
  }
  if (!(spec.high_priority_fraction >= 0 && spec.high_priority_fraction <= 1)) {
    return FieldError("high_priority_fraction",
                      absl::StrCat("must be in [0, 1], got ", spec.high_priority_fraction));
  }
  if (spec.high_priority < -100 || spec.high_priority > 100) {
    return FieldError("high_priority",
                      absl::StrCat("must be in [-100, 100], got ", spec.high_priority));
  }
  return absl::OkStatus();
}

std::string UserMessageText(int64_t index, int32_t tokens, std::mt19937_64& generator) {
  const std::string digits = absl::StrCat(index);
  std::string text = absl::StrCat("Request ", digits, ":");
  const int32_t words = std::max(0, tokens - PrefixTokens(digits));
  text.reserve(text.size() + static_cast<size_t>(words) * 8);
  std::uniform_int_distribution<size_t> pick(0, kWords.size() - 1);
  for (int32_t i = 0; i < words; ++i) absl::StrAppend(&text, " ", kWords[pick(generator)]);
  return text;
}

absl::StatusOr<RequestGenerator> RequestGenerator::Create(const WorkloadSpec& spec, uint64_t seed) {
  REFLECT_RETURN_IF_ERROR(ValidateWorkloadSpec(spec));
  return RequestGenerator(spec, seed);
}

PlannedRequest RequestGenerator::NextRequest(int64_t index) const {
  // One generator per request, seeded from (seed, index), so a request does not depend on which
  // others were planned before it.
  std::mt19937_64 generator(
      SplitMix64Mix(seed_ + static_cast<uint64_t>(index + 1) * kSplitMix64Gamma));
  PlannedRequest request;
  request.index = index;
  request.add_reflection_system_prompt = spec_.add_reflection_system_prompt;
  request.prompt_tokens = DrawLength(spec_.prompt_tokens, generator);
  request.max_tokens = DrawLength(spec_.output_tokens, generator);
  request.ignore_eos = true;
  request.temperature = spec_.temperature;
  request.seed = spec_.sampling_seed + static_cast<uint64_t>(index);
  const bool high_priority =
      std::uniform_real_distribution<double>(0, 1)(generator) < spec_.high_priority_fraction;
  request.priority = high_priority ? spec_.high_priority : 0;
  request.user_message = UserMessageText(index, request.prompt_tokens, generator);
  return request;
}

absl::StatusOr<std::vector<PlannedRequest>> PlanRequests(
    const WorkloadSpec& spec, const std::vector<absl::Duration>& send_times, uint64_t seed) {
  absl::StatusOr<RequestGenerator> generator = RequestGenerator::Create(spec, seed);
  if (!generator.ok()) return generator.status();
  std::vector<PlannedRequest> requests;
  requests.reserve(send_times.size());
  for (size_t i = 0; i < send_times.size(); ++i) {
    requests.push_back(generator->NextRequest(static_cast<int64_t>(i)));
    requests.back().send_at = send_times[i];
  }
  return requests;
}

}  // namespace reflect::loadtest
