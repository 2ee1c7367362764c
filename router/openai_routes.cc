#include "router/openai_routes.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/chat_template.h"
#include "router/http_errors.h"
#include "router/inference_proto_conversion.h"
#include "router/openai_responses.h"
#include "router/router_metrics.h"

namespace reflect {
namespace {

// What every exchange of the API routes shares.
struct FrontEnd {
  RequestRouter& router;
  const Tokenizer& tokenizer;
  OpenAiRoutesOptions options;
  RouterMetrics* metrics;
};

void CountRejected(const FrontEnd& front_end, const absl::Status& status) {
  if (front_end.metrics == nullptr) return;
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    front_end.metrics->RequestRejected("invalid_request");
  } else if (status.code() == absl::StatusCode::kNotFound) {
    front_end.metrics->RequestRejected("not_found");
  }
}

FinishReason ToOpenAiFinishReason(GenerationStopReason reason) {
  switch (reason) {
    case GenerationStopReason::kEos:
    case GenerationStopReason::kStopToken:
    case GenerationStopReason::kStopString:
      return FinishReason::kStop;
    case GenerationStopReason::kLength:
    case GenerationStopReason::kContextLength:
      return FinishReason::kLength;
  }
  return FinishReason::kStop;
}

// One choice of an exchange, as the exchange tracks it.
struct ChoiceState {
  int32_t prompt_index = 0;
  bool first_chunk_sent = false;  // streaming: the chat role chunk went out
  int64_t text_length = 0;        // completions: bytes of text so far (for text_offset)
  int64_t streamed_tokens = 0;    // streaming: tokens received so far
  ChoiceResult result;            // non-streaming: everything so far
  std::optional<GenerationOutcome> outcome;
};

// One HTTP request of /v1/chat/completions or /v1/completions: its routed requests (one per
// choice), the merge of their output, and the response.
//
// Lifecycle: handlers Submit every choice, then call AllSubmitted. Streaming output that arrives
// before then is buffered, so a Submit refused with 429 can still be answered with that status
// instead of a started stream. The exchange answers once: the complete response (or stream end),
// or the first error, after which every other choice is cancelled and its output ignored.
//
// Ownership: shared by the handler, each choice's sink (until the router's OnFinished) and
// nothing else (the writer's cancel callback holds it weakly). Thread-safety: every method locks
// mutex_; RequestHandle::Cancel may call a sink synchronously, so it is never called with mutex_
// held.
class CompletionExchange : public std::enable_shared_from_this<CompletionExchange> {
 public:
  CompletionExchange(std::shared_ptr<HttpResponseWriter> writer, const Tokenizer& tokenizer,
                     const CompletionRequest& request, CompletionIdentity identity,
                     std::vector<int64_t> prompt_tokens, int32_t choices)
      : writer_(std::move(writer)),
        tokenizer_(tokenizer),
        chat_(request.endpoint == CompletionEndpoint::kChatCompletions),
        stream_(request.stream),
        include_usage_(request.include_usage),
        continuous_usage_(request.include_usage && request.continuous_usage),
        trace_mode_(request.trace_mode),
        top_logprobs_(request.logprobs),
        identity_(std::move(identity)),
        prompt_tokens_(std::move(prompt_tokens)),
        choices_(static_cast<size_t>(choices)) {
    const int32_t per_prompt = choices / static_cast<int32_t>(prompt_tokens_.size());
    for (int32_t index = 0; index < choices; ++index) {
      ChoiceState& choice = choices_[static_cast<size_t>(index)];
      choice.prompt_index = index / per_prompt;
      choice.result.index = index;
      choice.result.logprobs_requested = top_logprobs_.has_value();
    }
  }

  // A choice's request was accepted by the router.
  void AddHandle(std::unique_ptr<RequestHandle> handle) {
    RequestHandle* cancel = nullptr;
    {
      const std::lock_guard lock(mutex_);
      handles_.push_back(std::move(handle));
      if (answered_) cancel = handles_.back().get();  // failed or cancelled meanwhile
    }
    if (cancel != nullptr) cancel->Cancel();
  }

  // Submit refused a choice: the whole exchange fails with `status`.
  void FailSubmit(const absl::Status& status) { Fail(status); }

  // Every choice was submitted: start the stream and flush what arrived meanwhile.
  void AllSubmitted() {
    const std::lock_guard lock(mutex_);
    all_submitted_ = true;
    if (answered_) return;
    if (stream_) {
      if (!writer_->StartEventStream().ok()) {
        answered_ = true;  // the client is gone; its cancel callback cancels the choices
        return;
      }
      while (!buffered_events_.empty()) {
        (void)writer_->SendEvent(buffered_events_.front());
        buffered_events_.pop_front();
      }
    }
    CompleteIfDoneLocked();
  }

  // The client went away: cancel every choice.
  void CancelAll() {
    std::vector<RequestHandle*> to_cancel;
    {
      const std::lock_guard lock(mutex_);
      answered_ = true;
      for (const std::unique_ptr<RequestHandle>& handle : handles_) {
        to_cancel.push_back(handle.get());
      }
    }
    // The handles live as long as the exchange, which the caller holds.
    for (RequestHandle* handle : to_cancel) handle->Cancel();
  }

  void OnPieces(int32_t choice_index, std::vector<OutputPiece> pieces) {
    const std::lock_guard lock(mutex_);
    if (answered_) return;
    ChoiceState& choice = choices_[static_cast<size_t>(choice_index)];
    if (!stream_) {
      for (const OutputPiece& piece : pieces) AppendPiece(piece, choice.result);
      return;
    }
    // One chunk per run of pieces going to the same field, so a delta never mixes the answer
    // with the reasoning.
    ChoiceResult delta;
    bool delta_is_reasoning = false;
    bool has_delta = false;
    for (const OutputPiece& piece : pieces) {
      choice.streamed_tokens += std::ssize(piece.token_ids);
      const bool reasoning = IsReasoning(piece.section);
      if (has_delta && reasoning != delta_is_reasoning) {
        EmitDeltaLocked(choice, std::move(delta));
        delta = ChoiceResult();
      }
      delta_is_reasoning = reasoning;
      has_delta = true;
      AppendPiece(piece, delta);
    }
    if (has_delta) EmitDeltaLocked(choice, std::move(delta));
  }

  void OnFinished(int32_t choice_index, const absl::StatusOr<GenerationOutcome>& outcome) {
    if (!outcome.ok()) {
      Fail(outcome.status());
      return;
    }
    const std::lock_guard lock(mutex_);
    if (answered_) return;
    ChoiceState& choice = choices_[static_cast<size_t>(choice_index)];
    choice.outcome = *outcome;
    const FinishReason reason = ToOpenAiFinishReason(outcome->reason);
    if (stream_) {
      ChoiceResult last;
      last.index = choice_index;
      last.logprobs_requested = top_logprobs_.has_value();
      last.text_offset = choice.text_length;
      last.finish_reason = reason;
      EmitChunkLocked(choice, last);
    } else {
      choice.result.finish_reason = reason;
    }
    CompleteIfDoneLocked();
  }

 private:
  bool IsReasoning(Section section) const {
    return chat_ && trace_mode_ == TraceMode::kFull && section != Section::kOutput;
  }

  // Adds `piece` to `result`: its text to the reasoning or the answer, its logprobs.
  void AppendPiece(const OutputPiece& piece, ChoiceResult& result) const {
    (IsReasoning(piece.section) ? result.reasoning : result.content).append(piece.text);
    if (!top_logprobs_.has_value()) return;
    for (const TokenLogprobs& token : piece.logprobs) {
      TokenLogprob converted;
      converted.token = TokenText(token.token_id);
      converted.logprob = token.logprob;
      // The replica was asked for at least one alternative (to get logprobs at all); OpenAI's
      // top_logprobs = 0 shows none.
      const size_t shown = std::min(token.top.size(), static_cast<size_t>(*top_logprobs_));
      for (size_t index = 0; index < shown; ++index) {
        converted.top.push_back(
            TopLogprob{TokenText(token.top[index].token_id), token.top[index].logprob});
      }
      result.logprobs.push_back(std::move(converted));
    }
  }

  std::string TokenText(int32_t token_id) const {
    absl::StatusOr<std::string> bytes = tokenizer_.TokenBytes(token_id);
    return bytes.ok() ? *std::move(bytes) : std::string();
  }

  void EmitDeltaLocked(ChoiceState& choice, ChoiceResult delta) {
    // Pieces with ids but no text (a held tag, a special token) say nothing to an OpenAI client
    // unless they carry logprobs.
    if (delta.content.empty() && delta.reasoning.empty() && delta.logprobs.empty()) return;
    delta.index = choice.result.index;
    delta.logprobs_requested = top_logprobs_.has_value();
    delta.text_offset = choice.text_length;
    choice.text_length += static_cast<int64_t>(delta.content.size());
    EmitChunkLocked(choice, delta);
  }

  void EmitChunkLocked(ChoiceState& choice, const ChoiceResult& piece) {
    std::optional<CompletionUsage> running;
    if (continuous_usage_) {
      running.emplace();
      for (const int64_t tokens : prompt_tokens_) running->prompt_tokens += tokens;
      for (const ChoiceState& each : choices_) running->completion_tokens += each.streamed_tokens;
    }
    EmitLocked(CompletionChunkJson(identity_, piece, !choice.first_chunk_sent, include_usage_,
                                   running.has_value() ? &*running : nullptr));
    choice.first_chunk_sent = true;
  }

  void EmitLocked(std::string event) {
    if (!all_submitted_) {
      buffered_events_.push_back(std::move(event));
      return;
    }
    // CANCELLED: the client is gone and the writer's cancel callback cancels the choices.
    (void)writer_->SendEvent(event);
  }

  CompletionUsage UsageLocked() const {
    CompletionUsage usage;
    for (const int64_t tokens : prompt_tokens_) usage.prompt_tokens += tokens;
    std::vector<bool> cached_counted(prompt_tokens_.size(), false);
    for (const ChoiceState& choice : choices_) {
      if (!choice.outcome.has_value()) continue;
      const GenerationUsage& generated = choice.outcome->usage;
      // The prompt is counted once per prompt, as OpenAI does for n > 1.
      if (!cached_counted[static_cast<size_t>(choice.prompt_index)]) {
        cached_counted[static_cast<size_t>(choice.prompt_index)] = true;
        usage.cached_prompt_tokens += generated.cached_prompt_tokens;
      }
      usage.completion_tokens += generated.completion_tokens;
      usage.sections.thinking_tokens += generated.sections.thinking_tokens;
      usage.sections.reflection_tokens += generated.sections.reflection_tokens;
      usage.sections.output_tokens += generated.sections.output_tokens;
      usage.sections.reflections += generated.sections.reflections;
    }
    return usage;
  }

  void CompleteIfDoneLocked() {
    if (answered_ || !all_submitted_) return;
    for (const ChoiceState& choice : choices_) {
      if (!choice.outcome.has_value()) return;
    }
    answered_ = true;
    if (stream_) {
      if (include_usage_) (void)writer_->SendEvent(UsageChunkJson(identity_, UsageLocked()));
      (void)writer_->FinishEventStream();
      return;
    }
    std::vector<ChoiceResult> results;
    results.reserve(choices_.size());
    for (const ChoiceState& choice : choices_) results.push_back(choice.result);
    HttpResponse response;
    response.body = CompletionResponseJson(identity_, results, UsageLocked());
    (void)writer_->Send(std::move(response));
  }

  // Answers with `status` (once) and cancels every choice.
  void Fail(const absl::Status& status) {
    std::vector<RequestHandle*> to_cancel;
    {
      const std::lock_guard lock(mutex_);
      if (answered_) return;
      answered_ = true;
      if (stream_ && all_submitted_) {
        // The stream has started: the error is one event, then the end of the stream.
        (void)writer_->SendEvent(ErrorBody(status));
        (void)writer_->FinishEventStream();
      } else {
        (void)writer_->SendError(status);
      }
      for (const std::unique_ptr<RequestHandle>& handle : handles_) {
        to_cancel.push_back(handle.get());
      }
    }
    for (RequestHandle* handle : to_cancel) handle->Cancel();
  }

  const std::shared_ptr<HttpResponseWriter> writer_;
  const Tokenizer& tokenizer_;
  const bool chat_;
  const bool stream_;
  const bool include_usage_;
  const bool continuous_usage_;
  const TraceMode trace_mode_;
  const std::optional<int32_t> top_logprobs_;  // unset: no logprobs
  const CompletionIdentity identity_;
  const std::vector<int64_t> prompt_tokens_;  // per prompt

  std::mutex mutex_;
  std::vector<ChoiceState> choices_;
  std::vector<std::unique_ptr<RequestHandle>> handles_;
  std::deque<std::string> buffered_events_;  // streaming output before AllSubmitted
  bool all_submitted_ = false;
  bool answered_ = false;  // the response is complete, failed, or the client left
};

// The router's handle on one choice.
class ChoiceSink final : public ResponseSink {
 public:
  ChoiceSink(std::shared_ptr<CompletionExchange> exchange, int32_t choice_index)
      : exchange_(std::move(exchange)), choice_index_(choice_index) {}
  void OnPieces(std::vector<OutputPiece> pieces) override {
    exchange_->OnPieces(choice_index_, std::move(pieces));
  }
  void OnFinished(const absl::StatusOr<GenerationOutcome>& outcome) override {
    exchange_->OnFinished(choice_index_, outcome);
  }

 private:
  const std::shared_ptr<CompletionExchange> exchange_;
  const int32_t choice_index_;
};

// The token ids of every prompt of `request`: the rendered conversation, or each prompt.
absl::StatusOr<std::vector<std::vector<int32_t>>> TokenizePrompts(const CompletionRequest& request,
                                                                  const Tokenizer& tokenizer) {
  std::vector<std::vector<int32_t>> prompts;
  if (request.endpoint == CompletionEndpoint::kChatCompletions) {
    prompts.push_back(
        tokenizer.Encode(RenderLlama31Chat(request.messages, /*add_generation_prompt=*/true)));
    return prompts;
  }
  for (const CompletionPrompt& prompt : request.prompts) {
    if (const std::string* text = std::get_if<std::string>(&prompt)) {
      prompts.push_back(tokenizer.Encode(*text));
    } else {
      prompts.push_back(std::get<std::vector<int32_t>>(prompt));
    }
    if (prompts.back().empty()) {
      return InvalidFieldError("prompt", "every prompt must have at least one token");
    }
  }
  return prompts;
}

void HandleCompletion(const std::shared_ptr<const FrontEnd>& front_end, CompletionEndpoint endpoint,
                      const HttpRequest& http_request,
                      const std::shared_ptr<HttpResponseWriter>& writer) {
  const absl::Time received_time = absl::Now();
  const OpenAiLimits& limits = front_end->options.limits;
  absl::StatusOr<CompletionRequest> request =
      ParseCompletionRequest(endpoint, http_request.body, limits);
  absl::StatusOr<std::vector<std::vector<int32_t>>> prompts =
      request.ok() ? TokenizePrompts(*request, front_end->tokenizer)
                   : absl::StatusOr<std::vector<std::vector<int32_t>>>(request.status());
  std::vector<SamplingParams> sampling;  // per prompt
  if (prompts.ok()) {
    const uint64_t server_seed = NewSeed();
    for (const std::vector<int32_t>& prompt : *prompts) {
      absl::StatusOr<SamplingParams> resolved =
          ResolveSampling(*request, static_cast<int64_t>(prompt.size()), limits, server_seed);
      if (!resolved.ok()) {
        prompts = resolved.status();
        break;
      }
      // The replica returns logprobs only when asked for alternatives; OpenAI's logprobs
      // without top_logprobs still wants the sampled token's, so ask for one and hide it.
      if (request->logprobs.has_value()) resolved->logprobs = std::max(1, *request->logprobs);
      sampling.push_back(*std::move(resolved));
    }
  }
  if (!prompts.ok()) {
    CountRejected(*front_end, prompts.status());
    (void)writer->SendError(prompts.status());
    return;
  }

  const std::string request_id = NewRequestId();
  CompletionIdentity identity;
  identity.endpoint = endpoint;
  identity.id = CompletionId(endpoint, request_id);
  identity.created_unix_seconds = UnixSeconds();
  identity.model = request->model;
  std::vector<int64_t> prompt_tokens;
  for (const std::vector<int32_t>& prompt : *prompts) {
    prompt_tokens.push_back(static_cast<int64_t>(prompt.size()));
  }
  const int32_t choices = request->n * static_cast<int32_t>(prompts->size());
  auto exchange =
      std::make_shared<CompletionExchange>(writer, front_end->tokenizer, *request,
                                           std::move(identity), std::move(prompt_tokens), choices);
  writer->OnCancel([weak = std::weak_ptr<CompletionExchange>(exchange)] {
    if (std::shared_ptr<CompletionExchange> alive = weak.lock()) alive->CancelAll();
  });

  for (int32_t index = 0; index < choices; ++index) {
    const size_t prompt_index = static_cast<size_t>(index / request->n);
    RoutedRequest routed;
    routed.request_id = choices == 1 ? request_id : absl::StrCat(request_id, "-", index);
    routed.prompt_token_ids = (*prompts)[prompt_index];
    routed.sampling = sampling[prompt_index];
    routed.sampling.seed += static_cast<uint64_t>(index % request->n);
    routed.trace_mode = request->trace_mode;
    routed.thinking_budget_tokens = request->thinking_budget_tokens;
    routed.priority = request->priority;
    routed.received_time = received_time;
    absl::StatusOr<std::unique_ptr<RequestHandle>> handle =
        front_end->router.Submit(std::move(routed), std::make_shared<ChoiceSink>(exchange, index));
    if (!handle.ok()) {
      exchange->FailSubmit(handle.status());
      return;
    }
    exchange->AddHandle(*std::move(handle));
  }
  exchange->AllSubmitted();
}

void HandleModels(const FrontEnd& front_end, const std::shared_ptr<HttpResponseWriter>& writer) {
  std::vector<ServedModel> models;
  for (const std::string& name : front_end.options.limits.served_model_names) {
    models.push_back(ServedModel{name, front_end.options.created_unix_seconds,
                                 front_end.options.limits.context_length_tokens});
  }
  HttpResponse response;
  response.body = ModelListJson(models);
  (void)writer->Send(std::move(response));
}

}  // namespace

void RegisterOpenAiRoutes(HttpServer& server, RequestRouter& router, const Tokenizer& tokenizer,
                          OpenAiRoutesOptions options, RouterMetrics* metrics) {
  auto front_end =
      std::make_shared<const FrontEnd>(FrontEnd{router, tokenizer, std::move(options), metrics});
  for (const CompletionEndpoint endpoint :
       {CompletionEndpoint::kChatCompletions, CompletionEndpoint::kCompletions}) {
    server.AddRoute(
        "POST",
        endpoint == CompletionEndpoint::kChatCompletions ? "/v1/chat/completions"
                                                         : "/v1/completions",
        [front_end, endpoint](HttpRequest request, std::shared_ptr<HttpResponseWriter> writer) {
          HandleCompletion(front_end, endpoint, request, writer);
        });
  }
  server.AddRoute("GET", "/v1/models",
                  [front_end](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
                    HandleModels(*front_end, writer);
                  });
}

void RegisterHealthRoutes(HttpServer& server, RequestRouter& router) {
  server.AddRoute(
      "GET", "/healthz",
      [](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
        HttpResponse response;
        response.content_type = "text/plain";
        response.body = "ok\n";
        (void)writer->Send(std::move(response));
      },
      RouteAccess::kPublic);
  server.AddRoute(
      "GET", "/readyz",
      [&router](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
        HttpResponse response;
        response.content_type = "text/plain";
        const bool ready = router.ready();
        response.status = ready ? 200 : 503;
        response.body = ready ? "ready\n" : "no replica is ready\n";
        (void)writer->Send(std::move(response));
      },
      RouteAccess::kPublic);
}

}  // namespace reflect
