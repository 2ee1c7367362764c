#include "worker/replica/replica_proto_conversion.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace reflect {

absl::StatusOr<EngineRequest> EngineRequestFromProto(const internal::v1::StartGeneration& start,
                                                     absl::Time receipt_time) {
  const internal::v1::SamplingParams& sampling = start.sampling();
  if (sampling.max_tokens() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.max_tokens must be positive, got ", sampling.max_tokens()));
  }
  if (sampling.logprobs() < 0 || sampling.logprobs() > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.logprobs must be in [0, 20], got ", sampling.logprobs()));
  }
  EngineRequest request;
  request.prompt_token_ids.assign(start.prompt_token_ids().begin(), start.prompt_token_ids().end());
  request.generated_token_ids.assign(start.generated_token_ids().begin(),
                                     start.generated_token_ids().end());
  request.sampling.temperature = sampling.temperature();
  request.sampling.top_p = sampling.top_p();
  request.sampling.top_k = sampling.top_k();
  request.sampling.min_p = sampling.min_p();
  request.sampling.repetition_penalty = sampling.repetition_penalty();
  request.sampling.frequency_penalty = sampling.frequency_penalty();
  request.sampling.presence_penalty = sampling.presence_penalty();
  request.sampling.seed = sampling.seed();
  request.sampling.max_tokens = sampling.max_tokens();
  request.sampling.ignore_eos = sampling.ignore_eos();
  request.sampling.stop_token_ids.assign(sampling.stop_token_ids().begin(),
                                         sampling.stop_token_ids().end());
  request.sampling.logprobs = sampling.logprobs();
  request.priority = start.priority();
  if (start.has_timeout()) {
    const absl::Duration timeout =
        absl::Seconds(start.timeout().seconds()) + absl::Nanoseconds(start.timeout().nanos());
    if (timeout < absl::ZeroDuration()) {
      return absl::InvalidArgumentError("timeout must not be negative");
    }
    request.deadline = receipt_time + timeout;
  }
  return request;
}

internal::v1::FinishReason FinishReasonToProto(StopReason reason) {
  switch (reason) {
    case StopReason::kEos:
      return internal::v1::FINISH_REASON_EOS;
    case StopReason::kStopToken:
      return internal::v1::FINISH_REASON_STOP_TOKEN;
    case StopReason::kLength:
      return internal::v1::FINISH_REASON_LENGTH;
    case StopReason::kContextLength:
      return internal::v1::FINISH_REASON_CONTEXT_LENGTH;
  }
  return internal::v1::FINISH_REASON_UNSPECIFIED;
}

void AppendToken(const GeneratedToken& token, bool with_logprobs,
                 internal::v1::GenerateResponse& response) {
  if (response.token_ids_size() == 0) response.set_first_index(static_cast<int32_t>(token.index));
  response.add_token_ids(token.token_id);
  if (!with_logprobs) return;
  response.add_logprobs(token.logprob);
  internal::v1::TopLogprobs& top = *response.add_top_logprobs();
  top.mutable_token_ids()->Reserve(static_cast<int>(token.top_logprobs.size()));
  top.mutable_logprobs()->Reserve(static_cast<int>(token.top_logprobs.size()));
  for (const TokenAlternative& alternative : token.top_logprobs) {
    top.add_token_ids(alternative.token_id);
    top.add_logprobs(alternative.logprob);
  }
}

void SetFinish(const GenerationSummary& summary, internal::v1::GenerateResponse& response) {
  internal::v1::Finish& finish = *response.mutable_finish();
  finish.set_reason(FinishReasonToProto(summary.reason));
  finish.set_cached_prompt_tokens(static_cast<int32_t>(summary.cached_prompt_tokens));
  finish.set_queue_seconds(summary.queue_seconds);
  finish.set_preemptions(summary.preemptions);
}

internal::v1::LoadReport LoadReportFromEngine(const EngineLoad& load, std::string_view replica_id,
                                              std::string_view model) {
  internal::v1::LoadReport report;
  report.set_replica_id(std::string(replica_id));
  report.set_model(std::string(model));
  report.set_accepting(load.accepting);
  report.set_running_requests(static_cast<int32_t>(load.running_requests));
  report.set_waiting_requests(static_cast<int32_t>(load.waiting_requests));
  report.set_waiting_prompt_tokens(load.waiting_prompt_tokens);
  report.set_kv_cache_usage_ratio(load.kv_blocks_total > 0
                                      ? static_cast<double>(load.kv_blocks_used) /
                                            static_cast<double>(load.kv_blocks_total)
                                      : 0.0);
  report.set_kv_cache_free_blocks(load.kv_blocks_free + load.kv_blocks_cached);
  report.set_kv_cache_total_blocks(load.kv_blocks_total);
  return report;
}

void PrefixCacheSummaryToProto(const PrefixSummary& summary,
                               internal::v1::PrefixCacheSummary& proto) {
  proto.set_block_size_tokens(summary.block_size_tokens);
  proto.set_hash_function(internal::v1::BLOCK_HASH_FUNCTION_FNV1A_64_CHAINED);
  proto.set_probe_count(summary.probe_count);
  proto.set_bits(summary.bits);
  proto.set_inserted_blocks(summary.inserted_blocks);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace reflect
