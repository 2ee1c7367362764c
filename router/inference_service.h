// InferenceService: the public gRPC API reflect.v1.Inference (proto/reflect/v1/inference.proto,
// docs/api.md) on gRPC's callback API, in front of the RequestRouter (DESIGN §1, §8).
//
// Generate and Chat check the API key, validate (INVALID_ARGUMENT naming the field, NOT_FOUND for
// a model), tokenize (Chat renders the Llama 3.1 template first), resolve the sampling defaults
// and submit a RoutedRequest; the stream's reactor is the request's ResponseSink. Pieces arrive on
// router threads and are queued in the reactor, which keeps one Write outstanding and packs the
// pieces that piled up meanwhile (consecutive pieces of one section) into one chunk; the finish
// rides on the last chunk. The call being cancelled (client gone, deadline) cancels the request;
// the gRPC deadline is the request's deadline. Tokenize and ListModels answer inline.
//
// Errors from the router end the stream with the same canonical code and message. A status with a
// retry hint (RetryAfter(status), set on every RESOURCE_EXHAUSTED overload refusal) carries it
// twice: as trailing metadata "retry-after-ms" (decimal milliseconds; what existing clients read)
// and in gRPC's standard rich error model, trailer "grpc-status-details-bin" = a serialized
// google.rpc.Status {code, message, details: [Any(google.rpc.RetryInfo{retry_delay})]} whose
// retry_delay equals retry-after-ms (see GrpcStatusWithDetails).
//
// Ownership: holds references to the router and tokenizer, which must outlive the server's
// shutdown. Thread-safety: every method may be called from any thread; no reaction blocks (each
// is a queue push or a short locked update). Cost per request: one tokenization, one Submit; per
// streamed chunk, one Write.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"
#include "reflect/v1/inference.grpc.pb.h"
#include "router/api_keys.h"
#include "router/openai_protocol.h"
#include "router/request_router.h"

namespace reflect {

class RouterMetrics;

// `status` as a grpc::Status with the same code and message. When `status` carries a retry hint
// (RetryAfter), error_details() is a serialized google.rpc.Status with the same code and message
// and one detail, Any(google.rpc.RetryInfo) whose retry_delay is the hint to the millisecond; gRPC
// sends it as trailer "grpc-status-details-bin". Without a hint, error_details() is empty.
grpc::Status GrpcStatusWithDetails(const absl::Status& status);

struct InferenceServiceOptions {
  // Served model names (the first is the default), context length, vocabulary size and the
  // bounds requests are validated against (shared with the OpenAI front end).
  OpenAiLimits limits;
  ApiKeys api_keys;  // empty: no authentication
};

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // `metrics` may be null.
  InferenceService(RequestRouter& router, const Tokenizer& tokenizer,
                   InferenceServiceOptions options, RouterMetrics* metrics);

  grpc::ServerWriteReactor<v1::GenerationChunk>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerationChunk>* Chat(grpc::CallbackServerContext* context,
                                                      const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;

 private:
  // The API key, then validation of model, request id, priority, reflection options and
  // sampling: what Generate and Chat share; the prompt is set by the caller.
  absl::StatusOr<RoutedRequest> CommonRequest(const grpc::CallbackServerContext& context,
                                              std::string_view model, std::string_view request_id,
                                              int32_t priority,
                                              const v1::ReflectionOptions& reflection,
                                              const v1::SamplingParams& sampling) const;
  // Resolves max_tokens and seed for the prompt, sets the times, then submits; `request` may be
  // an error, which ends the call.
  grpc::ServerWriteReactor<v1::GenerationChunk>* StartStream(grpc::CallbackServerContext* context,
                                                             absl::Time received_time,
                                                             absl::StatusOr<RoutedRequest> request,
                                                             std::string_view prompt_field,
                                                             const v1::SamplingParams& sampling);
  // The `authorization` metadata checked against the keys.
  absl::Status Authorize(const grpc::CallbackServerContext& context) const;
  // Counts a request refused before it reached the router.
  void CountRejected(const absl::Status& status) const;

  RequestRouter& router_;
  const Tokenizer& tokenizer_;
  const InferenceServiceOptions options_;
  RouterMetrics* const metrics_;
};

}  // namespace reflect
