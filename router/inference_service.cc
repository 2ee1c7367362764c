#include "router/inference_service.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/chat_template.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "router/http_errors.h"
#include "router/inference_proto_conversion.h"
#include "router/router_metrics.h"

namespace reflect {
namespace {

class GenerationStreamReactor;

// The router's handle on one stream: forwards output to the reactor while the call lives. Shared
// by the router (until OnFinished) and the reactor (until OnDone), so either may go first.
class ReactorSink final : public ResponseSink {
 public:
  explicit ReactorSink(GenerationStreamReactor* reactor) : reactor_(reactor) {}
  void OnPieces(std::vector<OutputPiece> pieces) override;
  void OnFinished(const absl::StatusOr<GenerationOutcome>& outcome) override;
  // After this returns, nothing reaches the reactor.
  void Detach() {
    const std::lock_guard lock(mutex_);
    reactor_ = nullptr;
  }

 private:
  std::mutex mutex_;
  GenerationStreamReactor* reactor_;  // guarded by mutex_
};

// One Generate or Chat stream. Lifecycle: created by the method handler, which calls Start
// (Submit) before returning it, so no reaction (OnDone above all) can run before Start returns;
// then router output is queued and written one chunk at a time; Finish is called once (the
// final chunk written, an error, or cancellation); OnDone deletes it.
//
// Locking: every reaction and router callback takes mutex_ briefly. RequestHandle::Cancel and
// RequestRouter::Submit may call the sink synchronously, so they are never called with mutex_
// held.
class GenerationStreamReactor final : public grpc::ServerWriteReactor<v1::GenerationChunk> {
 public:
  GenerationStreamReactor(grpc::CallbackServerContext* context, const Tokenizer& tokenizer)
      : context_(context), tokenizer_(tokenizer), sink_(std::make_shared<ReactorSink>(this)) {}

  // Submits `request`, or ends the call with its error.
  void Start(RequestRouter& router, absl::StatusOr<RoutedRequest> request) {
    if (!request.ok()) {
      const std::lock_guard lock(mutex_);
      FinishWithErrorLocked(request.status());
      return;
    }
    {
      const std::lock_guard lock(mutex_);
      request_id_ = request->request_id;
    }
    absl::StatusOr<std::unique_ptr<RequestHandle>> handle =
        router.Submit(*std::move(request), sink_);
    bool cancel = false;
    {
      const std::lock_guard lock(mutex_);
      if (!handle.ok()) {
        FinishWithErrorLocked(handle.status());
        return;
      }
      handle_ = *std::move(handle);
      // The call was cancelled while Submit ran: the handle did not exist yet to cancel.
      cancel = cancel_requested_ && !outcome_.has_value();
    }
    if (cancel) handle_->Cancel();
  }

  // Router threads, through ReactorSink.
  void OnRouterPieces(std::vector<OutputPiece> pieces) {
    const std::lock_guard lock(mutex_);
    for (OutputPiece& piece : pieces) pending_.push_back(std::move(piece));
    WriteLocked();
  }
  void OnRouterFinished(const absl::StatusOr<GenerationOutcome>& outcome) {
    const std::lock_guard lock(mutex_);
    outcome_ = outcome;
    WriteLocked();
  }

  void OnWriteDone(bool ok) override {
    bool cancel = false;
    {
      const std::lock_guard lock(mutex_);
      write_in_flight_ = false;
      if (!ok) {
        // The client is gone (or the deadline passed): nobody reads what follows.
        cancel = RequestCancelLocked();
        FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
      } else {
        WriteLocked();
      }
    }
    if (cancel) handle_->Cancel();
  }

  void OnCancel() override {
    bool cancel = false;
    {
      const std::lock_guard lock(mutex_);
      cancel = RequestCancelLocked();
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
    }
    if (cancel) handle_->Cancel();
  }

  void OnDone() override {
    sink_->Detach();
    // Whatever ended the call, the request must not outlive it.
    if (handle_ != nullptr && !outcome_.has_value()) handle_->Cancel();
    delete this;
  }

 private:
  // Marks the request cancelled; true when the caller must call handle_->Cancel() (after
  // unlocking): a handle exists and the request has not ended.
  bool RequestCancelLocked() {
    if (cancel_requested_) return false;
    cancel_requested_ = true;
    return handle_ != nullptr && !outcome_.has_value();
  }

  // Writes what is pending, one Write at a time: consecutive pieces of one section go in one
  // chunk; the finish rides on the chunk with the last pieces.
  void WriteLocked() {
    if (write_in_flight_ || finish_called_) return;
    chunk_.Clear();
    bool has_pieces = false;
    while (!pending_.empty()) {
      const OutputPiece& piece = pending_.front();
      if (has_pieces && SectionToProto(piece.section) != chunk_.section()) break;
      AppendPieceToChunk(piece, tokenizer_, chunk_);
      has_pieces = true;
      pending_.pop_front();
    }
    const bool last = pending_.empty() && outcome_.has_value();
    if (last && !outcome_->ok()) {
      if (!has_pieces) {
        FinishWithErrorLocked(outcome_->status());
        return;
      }
    } else if (last) {
      // A chunk always names a section: a finish with no new text keeps the last one.
      if (!has_pieces) chunk_.set_section(last_section_);
      FinishToProto(**outcome_, *chunk_.mutable_finish());
    } else if (!has_pieces) {
      return;
    }
    if (!first_chunk_written_) chunk_.set_request_id(request_id_);
    first_chunk_written_ = true;
    last_section_ = chunk_.section();
    write_in_flight_ = true;
    if (last && outcome_->ok()) {
      finish_called_ = true;
      StartWriteAndFinish(&chunk_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&chunk_);
    }
  }

  void FinishWithErrorLocked(const absl::Status& status) {
    if (finish_called_) return;
    if (const std::optional<std::chrono::milliseconds> retry_after = RetryAfter(status);
        retry_after.has_value()) {
      context_->AddTrailingMetadata("retry-after-ms", std::to_string(retry_after->count()));
    }
    FinishLocked(GrpcStatusWithDetails(status));
  }

  void FinishLocked(const grpc::Status& status) {
    if (finish_called_) return;
    finish_called_ = true;
    Finish(status);
  }

  grpc::CallbackServerContext* const context_;
  const Tokenizer& tokenizer_;
  const std::shared_ptr<ReactorSink> sink_;
  // Set in Start before any reaction can read it, then only read.
  std::unique_ptr<RequestHandle> handle_;

  std::mutex mutex_;
  std::string request_id_;
  std::deque<OutputPiece> pending_;  // router output not yet written
  std::optional<absl::StatusOr<GenerationOutcome>> outcome_;
  v1::GenerationChunk chunk_;  // the write in flight reads here
  v1::Section last_section_ = v1::SECTION_OUTPUT;
  bool first_chunk_written_ = false;
  bool write_in_flight_ = false;
  bool cancel_requested_ = false;
  bool finish_called_ = false;
};

void ReactorSink::OnPieces(std::vector<OutputPiece> pieces) {
  const std::lock_guard lock(mutex_);
  if (reactor_ != nullptr) reactor_->OnRouterPieces(std::move(pieces));
}

void ReactorSink::OnFinished(const absl::StatusOr<GenerationOutcome>& outcome) {
  const std::lock_guard lock(mutex_);
  if (reactor_ != nullptr) reactor_->OnRouterFinished(outcome);
}

// A unary reactor that is already finished with `status`.
grpc::ServerUnaryReactor* FinishedUnary(grpc::CallbackServerContext* context,
                                        const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(GrpcStatusWithDetails(status));
  return reactor;
}

// `status` (from InvalidFieldError) with its field moved under `prefix` ("chat." + "messages").
absl::Status UnderField(std::string_view prefix, const absl::Status& status) {
  const std::optional<std::string> field = ErrorField(status);
  if (!field.has_value()) return status;
  std::string_view reason(status.message().data(), status.message().size());
  if (reason.starts_with(*field + ": ")) reason.remove_prefix(field->size() + 2);
  return InvalidFieldError(std::string(prefix) + *field, reason);
}

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

}  // namespace

grpc::Status GrpcStatusWithDetails(const absl::Status& status) {
  const std::optional<std::chrono::milliseconds> retry_after = RetryAfter(status);
  if (status.ok() || !retry_after.has_value()) return GrpcStatusFromAbsl(status);
  google::rpc::RetryInfo retry_info;
  const int64_t milliseconds = std::max<int64_t>(retry_after->count(), 0);
  retry_info.mutable_retry_delay()->set_seconds(milliseconds / 1000);
  retry_info.mutable_retry_delay()->set_nanos(static_cast<int32_t>(milliseconds % 1000) *
                                              1'000'000);
  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(status.code()));
  details.set_message(std::string(status.message()));
  // PackFrom writes the type URL "type.googleapis.com/google.rpc.RetryInfo".
  details.add_details()->PackFrom(retry_info);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      details.SerializeAsString());
}

InferenceService::InferenceService(RequestRouter& router, const Tokenizer& tokenizer,
                                   InferenceServiceOptions options, RouterMetrics* metrics)
    : router_(router), tokenizer_(tokenizer), options_(std::move(options)), metrics_(metrics) {}

absl::Status InferenceService::Authorize(const grpc::CallbackServerContext& context) const {
  if (!options_.api_keys.enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  std::optional<std::string_view> authorization;
  if (found != metadata.end()) {
    authorization = std::string_view(found->second.data(), found->second.size());
  }
  return options_.api_keys.CheckAuthorization(authorization);
}

void InferenceService::CountRejected(const absl::Status& status) const {
  if (metrics_ == nullptr || status.ok()) return;
  switch (status.code()) {
    case absl::StatusCode::kUnauthenticated:
      metrics_->RequestRejected("unauthenticated");
      return;
    case absl::StatusCode::kNotFound:
      metrics_->RequestRejected("not_found");
      return;
    case absl::StatusCode::kInvalidArgument:
      metrics_->RequestRejected("invalid_request");
      return;
    default:
      return;  // the router counts its own refusals
  }
}

absl::StatusOr<RoutedRequest> InferenceService::CommonRequest(
    const grpc::CallbackServerContext& context, std::string_view model, std::string_view request_id,
    int32_t priority, const v1::ReflectionOptions& reflection,
    const v1::SamplingParams& sampling) const {
  if (absl::Status authorized = Authorize(context); !authorized.ok()) return authorized;
  if (absl::StatusOr<std::string> resolved = ResolveModelName(model, options_.limits);
      !resolved.ok()) {
    return resolved.status();
  }
  RoutedRequest routed;
  absl::StatusOr<std::string> id = ResolveRequestId(request_id);
  if (!id.ok()) return id.status();
  routed.request_id = *std::move(id);
  if (absl::Status status = ValidatePriority(priority); !status.ok()) return status;
  routed.priority = priority;
  absl::StatusOr<ReflectionSettings> settings = ReflectionFromProto(reflection, options_.limits);
  if (!settings.ok()) return settings.status();
  routed.trace_mode = settings->trace_mode;
  routed.thinking_budget_tokens = settings->thinking_budget_tokens;
  absl::StatusOr<SamplingParams> params = SamplingFromProto(sampling, options_.limits);
  if (!params.ok()) return params.status();
  routed.sampling = *std::move(params);
  return routed;
}

grpc::ServerWriteReactor<v1::GenerationChunk>* InferenceService::StartStream(
    grpc::CallbackServerContext* context, absl::Time received_time,
    absl::StatusOr<RoutedRequest> request, std::string_view prompt_field,
    const v1::SamplingParams& sampling) {
  if (request.ok()) {
    if (absl::Status status =
            ResolvePromptAndSampling(prompt_field, request->prompt_token_ids, sampling,
                                     options_.limits, NewSeed(), request->sampling);
        !status.ok()) {
      request = status;
    }
  }
  if (request.ok()) {
    request->received_time = received_time;
    request->deadline = DeadlineOf(*context);
  } else {
    CountRejected(request.status());
  }
  auto* reactor = new GenerationStreamReactor(context, tokenizer_);
  reactor->Start(router_, std::move(request));
  return reactor;
}

grpc::ServerWriteReactor<v1::GenerationChunk>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  const absl::Time received_time = absl::Now();
  std::string_view prompt_field = "prompt";
  absl::StatusOr<RoutedRequest> routed =
      CommonRequest(*context, request->model(), request->request_id(), request->priority(),
                    request->reflection(), request->sampling());
  if (routed.ok()) {
    switch (request->prompt_case()) {
      case v1::GenerateRequest::kText:
        prompt_field = "text";
        routed->prompt_token_ids = tokenizer_.Encode(request->text());
        break;
      case v1::GenerateRequest::kTokenIds:
        prompt_field = "token_ids.ids";
        routed->prompt_token_ids = TokenIdsFromProto(request->token_ids());
        break;
      default:
        routed = InvalidFieldError("prompt", "required: set text or token_ids");
        break;
    }
  }
  return StartStream(context, received_time, std::move(routed), prompt_field, request->sampling());
}

grpc::ServerWriteReactor<v1::GenerationChunk>* InferenceService::Chat(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  const absl::Time received_time = absl::Now();
  absl::StatusOr<RoutedRequest> routed =
      CommonRequest(*context, request->model(), request->request_id(), request->priority(),
                    request->reflection(), request->sampling());
  if (routed.ok()) {
    absl::StatusOr<std::vector<ChatMessage>> messages = ChatMessagesFromProto(
        request->messages(), request->add_reflection_system_prompt(), options_.limits);
    if (messages.ok()) {
      routed->prompt_token_ids =
          tokenizer_.Encode(RenderLlama31Chat(*messages, /*add_generation_prompt=*/true));
    } else {
      routed = messages.status();
    }
  }
  return StartStream(context, received_time, std::move(routed), "messages", request->sampling());
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  absl::Status status = Authorize(*context);
  if (status.ok()) status = ResolveModelName(request->model(), options_.limits).status();
  std::vector<int32_t> ids;
  if (status.ok()) {
    switch (request->input_case()) {
      case v1::TokenizeRequest::kText:
        ids = tokenizer_.Encode(request->text());
        break;
      case v1::TokenizeRequest::kChat: {
        absl::StatusOr<std::vector<ChatMessage>> messages = ChatMessagesFromProto(
            request->chat().messages(), request->add_reflection_system_prompt(), options_.limits);
        if (!messages.ok()) {
          // The same field names as Chat, under the oneof member.
          status = UnderField("chat.", messages.status());
          break;
        }
        response->set_rendered_prompt(RenderLlama31Chat(*messages, true));
        ids = tokenizer_.Encode(response->rendered_prompt());
        break;
      }
      default:
        status = InvalidFieldError("input", "required: set text or chat");
        break;
    }
  }
  if (!status.ok()) {
    CountRejected(status);
    return FinishedUnary(context, status);
  }
  for (const int32_t id : ids) {
    response->add_token_ids(id);
    absl::StatusOr<std::string> bytes = tokenizer_.TokenBytes(id);
    response->add_token_bytes(bytes.ok() ? *std::move(bytes) : std::string());
  }
  return FinishedUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest* request,
                                                       v1::ListModelsResponse* response) {
  if (absl::Status status = Authorize(*context); !status.ok()) {
    CountRejected(status);
    return FinishedUnary(context, status);
  }
  int32_t ready_replicas = 0;
  for (const ReplicaStatus& replica : router_.Replicas()) {
    if (replica.in_rotation) ++ready_replicas;
  }
  // One model per router: every served name is an alias of it.
  for (const std::string& name : options_.limits.served_model_names) {
    v1::Model& model = *response->add_models();
    model.set_name(name);
    model.set_context_length_tokens(static_cast<int32_t>(options_.limits.context_length_tokens));
    model.set_ready_replicas(ready_replicas);
  }
  return FinishedUnary(context, absl::OkStatus());
}

}  // namespace reflect
