#include "loadtest/scenario.h"

#include <fstream>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace reflect::loadtest {
namespace {

using Json = nlohmann::json;

// Longest duration a scenario may name (a week): larger values are typos, and absl::Seconds of
// a huge double would saturate to infinity.
constexpr double kMaxSeconds = 7 * 24 * 3600;
constexpr int64_t kMaxRequestsLimit = 1000000000;

// Reads the keys of one JSON object with their types checked, remembering which keys were read
// so that Finish can refuse the rest. Errors name the key as a path from the document's root.
class ObjectReader {
 public:
  ObjectReader(const Json& object, std::string source, std::string path)
      : object_(object), source_(std::move(source)), path_(std::move(path)) {}

  bool Has(const std::string& key) const { return object_.contains(key); }

  absl::Status Error(const std::string& key, const std::string& problem) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", path_, key, ": ", problem));
  }

  // A nested object; `*reader` reads it.
  absl::Status Object(const std::string& key, std::optional<ObjectReader>* reader) {
    absl::StatusOr<const Json*> value = Find(key, "an object", &Json::is_object);
    if (!value.ok()) return value.status();
    reader->emplace(**value, source_, absl::StrCat(path_, key, "."));
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const std::string& key,
                                     std::optional<std::string> fallback = std::nullopt) {
    if (fallback.has_value() && !Has(key)) return *fallback;
    absl::StatusOr<const Json*> value = Find(key, "a string", &Json::is_string);
    if (!value.ok()) return value.status();
    return (*value)->get<std::string>();
  }

  // The index in `choices` of the key's string value; `fallback` when the key is absent and a
  // fallback is given.
  absl::StatusOr<int> Choice(const std::string& key, std::initializer_list<const char*> choices,
                             std::optional<int> fallback = std::nullopt) {
    if (fallback.has_value() && !Has(key)) return *fallback;
    absl::StatusOr<std::string> value = String(key);
    if (!value.ok()) return value.status();
    std::string expected;
    int index = 0;
    for (const char* choice : choices) {
      if (*value == choice) return index;
      absl::StrAppend(&expected, index++ == 0 ? "" : " | ", "\"", choice, "\"");
    }
    return Error(key, absl::StrCat("expected ", expected, ", found \"", *value, "\""));
  }

  absl::StatusOr<bool> Boolean(const std::string& key, bool fallback) {
    if (!Has(key)) return fallback;
    absl::StatusOr<const Json*> value = Find(key, "true or false", &Json::is_boolean);
    if (!value.ok()) return value.status();
    return (*value)->get<bool>();
  }

  absl::StatusOr<int64_t> Integer(const std::string& key, int64_t minimum, int64_t maximum,
                                  std::optional<int64_t> fallback = std::nullopt) {
    if (fallback.has_value() && !Has(key)) return *fallback;
    absl::StatusOr<const Json*> value = Find(key, "an integer", &Json::is_number_integer);
    if (!value.ok()) return value.status();
    const bool too_large = (*value)->is_number_unsigned() &&
                           (*value)->get<uint64_t>() > static_cast<uint64_t>(maximum);
    const int64_t integer = too_large ? maximum : (*value)->get<int64_t>();
    if (too_large || integer < minimum || integer > maximum) {
      return Error(
          key, absl::StrCat("must be in [", minimum, ", ", maximum, "], found ", (*value)->dump()));
    }
    return integer;
  }

  absl::StatusOr<uint64_t> Seed(const std::string& key, uint64_t fallback) {
    if (!Has(key)) return fallback;
    absl::StatusOr<const Json*> value = Find(key, "an integer >= 0", &Json::is_number_unsigned);
    if (!value.ok()) return value.status();
    return (*value)->get<uint64_t>();
  }

  // A finite number in [minimum, maximum].
  absl::StatusOr<double> Number(const std::string& key, double minimum, double maximum,
                                std::optional<double> fallback = std::nullopt) {
    if (fallback.has_value() && !Has(key)) return *fallback;
    absl::StatusOr<const Json*> value = Find(key, "a number", &Json::is_number);
    if (!value.ok()) return value.status();
    const double number = (*value)->get<double>();
    if (!(number >= minimum && number <= maximum)) {
      return Error(key, absl::StrCat("must be in [", minimum, ", ", maximum, "], found ", number));
    }
    return number;
  }

  // A duration in seconds, > 0 (or ≥ 0 with `allow_zero`) and at most a week.
  absl::StatusOr<absl::Duration> Seconds(const std::string& key, bool allow_zero = false) {
    absl::StatusOr<double> seconds = Number(key, 0, kMaxSeconds);
    if (!seconds.ok()) return seconds.status();
    if (*seconds == 0 && !allow_zero) return Error(key, "must be > 0");
    return absl::Seconds(*seconds);
  }

  absl::StatusOr<std::optional<absl::Duration>> OptionalSeconds(const std::string& key) {
    if (!Has(key)) return std::nullopt;
    return Seconds(key);
  }

  // An error naming the first key of the object that nothing read.
  absl::Status Finish() const {
    for (const auto& [key, value] : object_.items()) {
      if (!read_.contains(key))
        return Error(key, "unknown key (or one this kind of object does not use)");
    }
    return absl::OkStatus();
  }

  // Prefixes an error from a validator, whose message starts with a field name, with this
  // object's path.
  absl::Status Qualify(const absl::Status& status) const {
    if (status.ok()) return status;
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", path_, status.message()));
  }

 private:
  absl::StatusOr<const Json*> Find(const std::string& key, const std::string& expected,
                                   bool (Json::*has_type)() const noexcept) {
    read_.insert(key);
    auto found = object_.find(key);
    if (found == object_.end()) return Error(key, absl::StrCat("missing (", expected, ")"));
    if (!((*found).*has_type)()) {
      std::string found_text = found->type_name();
      if (found->is_primitive() && !found->is_null()) {
        std::string text = found->dump();
        if (text.size() > 40) text = text.substr(0, 37) + "...";
        absl::StrAppend(&found_text, " ", text);
      }
      return Error(key, absl::StrCat("expected ", expected, ", found ", found_text));
    }
    return &*found;
  }

  const Json& object_;
  std::string source_;
  std::string path_;  // "" at the root, else "workload." and the like
  std::set<std::string> read_;
};

absl::Status ReadLengthDistribution(ObjectReader& reader, LengthDistribution* distribution) {
  int kind = 0;
  REFLECT_ASSIGN_OR_RETURN(kind, reader.Choice("kind", {"fixed", "uniform", "lognormal"}));
  distribution->kind = static_cast<LengthDistribution::Kind>(kind);
  if (distribution->kind == LengthDistribution::Kind::kFixed) {
    REFLECT_ASSIGN_OR_RETURN(distribution->tokens, reader.Integer("tokens", 1, kMaxLengthTokens));
  } else {
    REFLECT_ASSIGN_OR_RETURN(distribution->minimum, reader.Integer("minimum", 1, kMaxLengthTokens));
    REFLECT_ASSIGN_OR_RETURN(distribution->maximum, reader.Integer("maximum", 1, kMaxLengthTokens));
  }
  if (distribution->kind == LengthDistribution::Kind::kLogNormal) {
    REFLECT_ASSIGN_OR_RETURN(distribution->median, reader.Number("median", 0, kMaxLengthTokens));
    REFLECT_ASSIGN_OR_RETURN(distribution->sigma, reader.Number("sigma", 0, 10));
  }
  return reader.Finish();
}

absl::Status ReadWorkload(ObjectReader& reader, WorkloadSpec* workload) {
  for (auto [key, distribution] : {std::pair{"prompt_tokens", &workload->prompt_tokens},
                                   std::pair{"output_tokens", &workload->output_tokens}}) {
    if (!reader.Has(key)) continue;
    std::optional<ObjectReader> nested;
    REFLECT_RETURN_IF_ERROR(reader.Object(key, &nested));
    REFLECT_RETURN_IF_ERROR(ReadLengthDistribution(*nested, distribution));
  }
  REFLECT_ASSIGN_OR_RETURN(workload->add_reflection_system_prompt,
                           reader.Boolean("add_reflection_system_prompt", true));
  REFLECT_ASSIGN_OR_RETURN(workload->temperature, reader.Number("temperature", 0, 100, 0.0));
  REFLECT_ASSIGN_OR_RETURN(workload->sampling_seed, reader.Seed("sampling_seed", 0));
  REFLECT_ASSIGN_OR_RETURN(workload->high_priority_fraction,
                           reader.Number("high_priority_fraction", 0, 1, 0.0));
  REFLECT_ASSIGN_OR_RETURN(workload->high_priority, reader.Integer("high_priority", -100, 100, 10));
  REFLECT_RETURN_IF_ERROR(reader.Finish());
  return reader.Qualify(ValidateWorkloadSpec(*workload));
}

absl::Status ReadArrivals(ObjectReader& reader, absl::Duration run_length,
                          ArrivalPattern* arrivals) {
  RateProfile& rate = arrivals->rate;
  int profile = 0;
  REFLECT_ASSIGN_OR_RETURN(profile,
                           reader.Choice("profile", {"constant", "step_spike", "linear_ramp"}));
  rate.kind = static_cast<RateProfile::Kind>(profile);
  constexpr double kMaxRate = 1e6;
  REFLECT_ASSIGN_OR_RETURN(rate.requests_per_second,
                           reader.Number("requests_per_second", 0, kMaxRate));
  if (rate.kind == RateProfile::Kind::kStepSpike) {
    REFLECT_ASSIGN_OR_RETURN(rate.spike_multiplier, reader.Number("spike_multiplier", 0, 1e4));
    REFLECT_ASSIGN_OR_RETURN(rate.spike_start,
                             reader.Seconds("spike_start_seconds", /*allow_zero=*/true));
    REFLECT_ASSIGN_OR_RETURN(rate.spike_duration, reader.Seconds("spike_duration_seconds"));
  }
  if (rate.kind == RateProfile::Kind::kLinearRamp) {
    REFLECT_ASSIGN_OR_RETURN(rate.end_requests_per_second,
                             reader.Number("end_requests_per_second", 0, kMaxRate));
  }
  int spacing = 0;
  REFLECT_ASSIGN_OR_RETURN(spacing, reader.Choice("spacing", {"random", "even"}, 0));
  arrivals->even_spacing = spacing == 1;
  if (arrivals->even_spacing && reader.Has("burstiness")) {
    return reader.Error("burstiness", "only for spacing \"random\"");
  }
  REFLECT_ASSIGN_OR_RETURN(arrivals->burstiness, reader.Number("burstiness", 0, 1e3, 1.0));
  REFLECT_RETURN_IF_ERROR(reader.Finish());
  REFLECT_RETURN_IF_ERROR(reader.Qualify(ValidateBurstiness(arrivals->burstiness)));
  return reader.Qualify(RateSchedule::Create(rate, run_length).status());
}

absl::Status ReadSlo(ObjectReader& reader, ServiceLevelObjectives* slo) {
  REFLECT_ASSIGN_OR_RETURN(slo->time_to_first_token, reader.Seconds("ttft_seconds"));
  REFLECT_ASSIGN_OR_RETURN(slo->time_to_first_output_token,
                           reader.OptionalSeconds("time_to_first_output_token_seconds"));
  REFLECT_ASSIGN_OR_RETURN(slo->inter_token_latency_p99,
                           reader.Seconds("inter_token_latency_seconds"));
  REFLECT_ASSIGN_OR_RETURN(slo->end_to_end, reader.OptionalSeconds("e2e_seconds"));
  return reader.Finish();
}

absl::StatusOr<Scenario> ReadScenario(ObjectReader& root) {
  Scenario scenario;
  REFLECT_ASSIGN_OR_RETURN(scenario.name, root.String("name"));
  if (scenario.name.empty()) return root.Error("name", "must not be empty");
  REFLECT_ASSIGN_OR_RETURN(scenario.description, root.String("description"));
  REFLECT_ASSIGN_OR_RETURN(scenario.rate_scale_note, root.String("rate_scale_note", ""));
  int choice = 0;
  REFLECT_ASSIGN_OR_RETURN(choice, root.Choice("protocol", {"grpc", "http"}));
  scenario.protocol = static_cast<Protocol>(choice);
  REFLECT_ASSIGN_OR_RETURN(choice, root.Choice("mode", {"open", "closed"}));
  scenario.mode = static_cast<LoopMode>(choice);
  REFLECT_ASSIGN_OR_RETURN(scenario.run_length, root.Seconds("run_length_seconds"));
  if (root.Has("max_requests")) {
    REFLECT_ASSIGN_OR_RETURN(scenario.max_requests,
                             root.Integer("max_requests", 1, kMaxRequestsLimit));
  }
  REFLECT_ASSIGN_OR_RETURN(scenario.seed, root.Seed("seed", 1));
  std::optional<ObjectReader> nested;
  if (scenario.mode == LoopMode::kOpen) {
    if (root.Has("concurrency")) return root.Error("concurrency", "only for mode \"closed\"");
    REFLECT_RETURN_IF_ERROR(root.Object("arrivals", &nested));
    REFLECT_RETURN_IF_ERROR(ReadArrivals(*nested, scenario.run_length, &scenario.arrivals));
  } else {
    if (root.Has("arrivals")) return root.Error("arrivals", "only for mode \"open\"");
    REFLECT_ASSIGN_OR_RETURN(scenario.concurrency, root.Integer("concurrency", 1, 100000));
  }
  REFLECT_RETURN_IF_ERROR(root.Object("workload", &nested));
  REFLECT_RETURN_IF_ERROR(ReadWorkload(*nested, &scenario.workload));
  REFLECT_RETURN_IF_ERROR(root.Object("slo", &nested));
  REFLECT_RETURN_IF_ERROR(ReadSlo(*nested, &scenario.slo));
  REFLECT_ASSIGN_OR_RETURN(scenario.client_timeout, root.Seconds("client_timeout_seconds"));
  REFLECT_RETURN_IF_ERROR(root.Finish());
  return scenario;
}

}  // namespace

absl::StatusOr<Scenario> ParseScenario(absl::string_view json_text, absl::string_view source) {
  Json document;
  try {
    document = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::parse_error& error) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON: ", error.what()));
  }
  if (!document.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  ObjectReader root(document, std::string(source), "");
  return ReadScenario(root);
}

absl::StatusOr<Scenario> LoadScenario(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open file"));
  std::ostringstream contents;
  contents << stream.rdbuf();
  if (stream.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read failed"));
  return ParseScenario(contents.str(), path.string());
}

}  // namespace reflect::loadtest
