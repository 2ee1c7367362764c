#include "router/router_metrics.h"

#include <array>
#include <cctype>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "router/request_router.h"

namespace reflect {
namespace {

constexpr std::array<std::string_view, 5> kRejectionReasons = {
    "queue_full", "no_replica", "invalid_request", "unauthenticated", "not_found"};

// "ok" or the status code in snake case ("deadline_exceeded").
std::string OutcomeLabel(const absl::Status& status) {
  if (status.ok()) return "ok";
  std::string label = absl::StatusCodeToString(status.code());
  for (char& character : label) {
    character = static_cast<char>(std::tolower(static_cast<unsigned char>(character)));
  }
  return label;
}

}  // namespace

// The registered families and the series resolved once, so the per-token and per-request paths
// are atomic adds with no label lookup.
struct RouterMetrics::Families {
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Counter>* rejected = nullptr;
  // The series of every foreseen outcome and reason; filled in the constructor and only read
  // afterwards, so lookups need no lock.
  std::map<std::string, prometheus::Counter*, std::less<>> requests_by_outcome;
  std::map<std::string, prometheus::Counter*, std::less<>> rejected_by_reason;
  prometheus::Counter* prompt_tokens = nullptr;
  prometheus::Counter* thinking_tokens = nullptr;
  prometheus::Counter* reflection_tokens = nullptr;
  prometheus::Counter* output_tokens = nullptr;
  prometheus::Gauge* running = nullptr;
  prometheus::Gauge* waiting = nullptr;
  prometheus::Histogram* time_to_first_token = nullptr;
  prometheus::Histogram* time_to_first_output_token = nullptr;
  prometheus::Histogram* inter_token_latency = nullptr;
  prometheus::Histogram* e2e_latency = nullptr;
  prometheus::Histogram* queue_time = nullptr;
  prometheus::Histogram* reflections = nullptr;
};

RouterMetrics::RouterMetrics(std::string model_name)
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<Families>()),
      model_name_(std::move(model_name)) {
  const prometheus::Labels model = {{kModelNameLabel, model_name_}};
  prometheus::Registry& registry = *registry_;
  Families& families = *families_;

  families.requests = &prometheus::BuildCounter()
                           .Name("reflect_requests_total")
                           .Help(
                               "Requests that reached a replica and ended, by outcome (ok or "
                               "the status code in snake case).")
                           .Register(registry);
  for (absl::StatusCode code :
       {absl::StatusCode::kOk, absl::StatusCode::kCancelled, absl::StatusCode::kDeadlineExceeded,
        absl::StatusCode::kUnavailable, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kInvalidArgument, absl::StatusCode::kInternal}) {
    const std::string outcome = OutcomeLabel(absl::Status(code, ""));
    prometheus::Labels labels = model;
    labels["outcome"] = outcome;
    families.requests_by_outcome[outcome] = &families.requests->Add(labels);
  }

  families.rejected = &prometheus::BuildCounter()
                           .Name("reflect_requests_rejected_total")
                           .Help("Requests refused before they reached a replica, by reason.")
                           .Register(registry);
  for (std::string_view reason : kRejectionReasons) {
    prometheus::Labels labels = model;
    labels["reason"] = std::string(reason);
    families.rejected_by_reason[std::string(reason)] = &families.rejected->Add(labels);
  }

  families.prompt_tokens = &prometheus::BuildCounter()
                                .Name("reflect_prompt_tokens_total")
                                .Help("Prompt tokens of requests that ended normally.")
                                .Register(registry)
                                .Add(model);

  auto& generation_tokens =
      prometheus::BuildCounter()
          .Name("reflect_generation_tokens_total")
          .Help("Generated tokens of requests that ended normally, by reflection section.")
          .Register(registry);
  auto section_series = [&](std::string_view section) {
    prometheus::Labels labels = model;
    labels["section"] = std::string(section);
    return &generation_tokens.Add(labels);
  };
  families.thinking_tokens = section_series(SectionName(Section::kThinking));
  families.reflection_tokens = section_series(SectionName(Section::kReflection));
  families.output_tokens = section_series(SectionName(Section::kOutput));

  families.running = &prometheus::BuildGauge()
                          .Name("reflect_num_requests_running")
                          .Help(
                              "Requests of this router that have received their first token "
                              "and not yet ended.")
                          .Register(registry)
                          .Add(model);
  families.waiting = &prometheus::BuildGauge()
                          .Name("reflect_num_requests_waiting")
                          .Help(
                              "Requests of this router admitted but still without a first token "
                              "(router and replica queues).")
                          .Register(registry)
                          .Add(model);

  auto histogram = [&](const char* name, const char* help, std::vector<double> buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(
        model, std::move(buckets));
  };
  families.time_to_first_token =
      histogram("reflect_time_to_first_token_seconds",
                "Seconds from the router's receipt of a request to its first generated token.",
                RequestLatencyBuckets());
  families.time_to_first_output_token = histogram(
      "reflect_time_to_first_output_token_seconds",
      "Seconds from the router's receipt of a request to its first OUTPUT-section token (what a "
      "user of a reflection model waits for); requests without output are not observed.",
      RequestLatencyBuckets());
  families.inter_token_latency =
      histogram("reflect_inter_token_latency_seconds",
                "Seconds between two consecutive tokens of one request, as the router received "
                "them.",
                TokenLatencyBuckets());
  families.e2e_latency = histogram(
      "reflect_e2e_request_latency_seconds",
      "Seconds from the router's receipt of a request to its normal end.", RequestLatencyBuckets());
  families.queue_time =
      histogram("reflect_request_queue_time_seconds",
                "Seconds from the router's receipt of a request until a replica first scheduled "
                "it (router and replica queues).",
                RequestLatencyBuckets());
  families.reflections =
      histogram("reflect_reflections_per_request",
                "<reflection> sections per request that ended normally.", SmallCountBuckets());
}

RouterMetrics::~RouterMetrics() = default;

void RouterMetrics::RequestRejected(std::string_view reason) {
  if (auto found = families_->rejected_by_reason.find(reason);
      found != families_->rejected_by_reason.end()) {
    found->second->Increment();
    return;
  }
  // An unforeseen reason gets its own series (Family::Add locks, and returns the existing series
  // on a repeat).
  families_->rejected->Add({{kModelNameLabel, model_name_}, {"reason", std::string(reason)}})
      .Increment();
}

void RouterMetrics::RequestFinished(const absl::StatusOr<GenerationOutcome>& outcome) {
  Families& families = *families_;
  const std::string outcome_label = OutcomeLabel(outcome.status());
  if (auto found = families.requests_by_outcome.find(outcome_label);
      found != families.requests_by_outcome.end()) {
    found->second->Increment();
  } else {
    families.requests->Add({{kModelNameLabel, model_name_}, {"outcome", outcome_label}})
        .Increment();
  }
  if (!outcome.ok()) return;

  const GenerationUsage& usage = outcome->usage;
  families.prompt_tokens->Increment(static_cast<double>(usage.prompt_tokens));
  families.thinking_tokens->Increment(static_cast<double>(usage.sections.thinking_tokens));
  families.reflection_tokens->Increment(static_cast<double>(usage.sections.reflection_tokens));
  families.output_tokens->Increment(static_cast<double>(usage.sections.output_tokens));
  families.reflections->Observe(static_cast<double>(usage.sections.reflections));

  const GenerationTimings& timings = outcome->timings;
  families.queue_time->Observe(timings.queue_seconds);
  families.time_to_first_token->Observe(timings.time_to_first_token_seconds);
  if (timings.time_to_first_output_token_seconds.has_value()) {
    families.time_to_first_output_token->Observe(*timings.time_to_first_output_token_seconds);
  }
  families.e2e_latency->Observe(timings.e2e_seconds);
}

void RouterMetrics::ObserveInterTokenLatency(double seconds) {
  families_->inter_token_latency->Observe(seconds);
}

void RouterMetrics::SetLoad(const RouterLoad& load) {
  families_->running->Set(static_cast<double>(load.running_requests));
  families_->waiting->Set(static_cast<double>(load.queued_requests));
}

std::string RouterMetrics::Serialize() const { return SerializeMetrics(*registry_); }

prometheus::Registry& RouterMetrics::registry() { return *registry_; }

}  // namespace reflect
