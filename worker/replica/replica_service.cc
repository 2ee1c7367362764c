#include "worker/replica/replica_service.h"

#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "worker/replica/replica_proto_conversion.h"

namespace reflect {
namespace {

using internal::v1::GenerateRequest;
using internal::v1::GenerateResponse;

// What a replica with a full queue suggests the router wait before retrying it.
constexpr char kRetryAfterMilliseconds[] = "1000";

class GenerateReactor;

// The engine's handle on one stream: forwards events to the reactor while it lives. Shared by
// the engine (until OnFinished) and the reactor (until OnDone), so either may go first.
class StreamSink final : public GenerationSink {
 public:
  explicit StreamSink(GenerateReactor* reactor) : reactor_(reactor) {}
  void OnToken(const GeneratedToken& token) override;
  void OnFinished(const absl::Status& status, const GenerationSummary& summary) override;
  // After this returns, no event reaches the reactor.
  void Detach() {
    const std::lock_guard lock(mutex_);
    reactor_ = nullptr;
  }

 private:
  std::mutex mutex_;
  GenerateReactor* reactor_;  // guarded by mutex_
};

// One Generate stream. Lifecycle: reading the start message → submitted (reading control
// messages, writing tokens) → Finish called → OnDone deletes it. Every reaction and engine
// event takes mutex_ briefly; Start* calls never run reactions inline (the reactor is not
// inlineable), so they are made under the lock.
class GenerateReactor final : public grpc::ServerBidiReactor<GenerateRequest, GenerateResponse> {
 public:
  GenerateReactor(grpc::CallbackServerContext* context, EngineLoop* engine)
      : context_(context), engine_(engine), sink_(std::make_shared<StreamSink>(this)) {
    const std::lock_guard lock(mutex_);
    if (engine_ == nullptr) {
      FinishLocked(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "the replica is loading its weights"));
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // Half-close ("no more control messages") or a broken stream (OnCancel follows).
      const std::lock_guard lock(mutex_);
      if (!submitted_) {
        FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "the stream ended before its start message"));
      }
      return;
    }
    if (!submitted_) {
      Start();
    } else {
      Control();
    }
  }

  void OnWriteDone(bool ok) override {
    const std::lock_guard lock(mutex_);
    write_in_flight_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
    } else if (final_message_written_) {
      FinishLocked(grpc::Status::OK);
    } else {
      WriteLocked();
    }
  }

  void OnCancel() override {
    const std::lock_guard lock(mutex_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }

  void OnDone() override {
    sink_->Detach();
    // Whatever ended the stream, the sequence must not outlive it.
    if (submitted_ && !outcome_.has_value()) engine_->Cancel(handle_);
    delete this;
  }

  // Engine thread, through StreamSink.
  void OnEngineToken(const GeneratedToken& token) {
    const std::lock_guard lock(mutex_);
    pending_.push_back(token);
    WriteLocked();
  }
  void OnEngineFinished(const absl::Status& status, const GenerationSummary& summary) {
    const std::lock_guard lock(mutex_);
    outcome_ = status;
    summary_ = summary;
    std::fprintf(stderr, "reflect-worker: request_id=%s event=finished status=%s reason=%s\n",
                 request_id_.c_str(), std::string(absl::StatusCodeToString(status.code())).c_str(),
                 status.ok() ? std::string(StopReasonName(summary.reason)).c_str() : "-");
    WriteLocked();
  }

 private:
  void Start() {
    if (request_.message_case() != GenerateRequest::kStart) {
      const std::lock_guard lock(mutex_);
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the first message of a Generate stream must carry `start`"));
      return;
    }
    absl::StatusOr<EngineRequest> engine_request =
        EngineRequestFromProto(request_.start(), absl::Now());
    std::unique_lock lock(mutex_);
    if (finish_called_) return;  // cancelled meanwhile
    request_id_ = request_.start().request_id();
    with_logprobs_ = request_.start().sampling().logprobs() > 0;
    if (!engine_request.ok()) {
      FinishLocked(ToGrpcStatus(engine_request.status()));
      return;
    }
    // Submit outside the lock: the engine may deliver events before it returns.
    submitted_ = true;
    lock.unlock();
    absl::StatusOr<int64_t> handle = engine_->Submit(std::move(*engine_request), sink_);
    lock.lock();
    if (!handle.ok()) {
      outcome_ = handle.status();
      if (absl::IsResourceExhausted(handle.status())) {
        context_->AddTrailingMetadata("retry-after-ms", kRetryAfterMilliseconds);
      }
      FinishLocked(ToGrpcStatus(handle.status()));
      return;
    }
    handle_ = *handle;
    if (finish_called_) {
      engine_->Cancel(handle_);
      return;
    }
    StartRead(&request_);
  }

  // A message after `start`.
  void Control() {
    const std::lock_guard lock(mutex_);
    if (finish_called_) return;
    if (request_.message_case() != GenerateRequest::kForce) {
      engine_->Cancel(handle_);
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "only the first message of a Generate stream may carry `start`"));
      return;
    }
    const internal::v1::ForceTokens& force = request_.force();
    engine_->Force(handle_, force.at_index(),
                   std::vector<int32_t>(force.token_ids().begin(), force.token_ids().end()));
    StartRead(&request_);
  }

  // Writes what is pending, one Write at a time: consecutive tokens go in one message (a Force
  // rewind starts a new one), and the finish rides on the message with the last tokens.
  void WriteLocked() {
    if (write_in_flight_ || finish_called_) return;
    response_.Clear();
    while (!pending_.empty()) {
      const GeneratedToken& token = pending_.front();
      if (response_.token_ids_size() > 0 &&
          token.index != response_.first_index() + response_.token_ids_size()) {
        break;
      }
      AppendToken(token, with_logprobs_, response_);
      pending_.pop_front();
    }
    if (response_.token_ids_size() > 0) {
      next_index_ = response_.first_index() + response_.token_ids_size();
    }
    if (pending_.empty() && outcome_.has_value()) {
      if (outcome_->ok()) {
        if (response_.token_ids_size() == 0) response_.set_first_index(next_index_);
        SetFinish(summary_, response_);
        final_message_written_ = true;
      } else if (response_.token_ids_size() == 0) {
        FinishLocked(ToGrpcStatus(*outcome_));
        return;
      }
    }
    if (response_.token_ids_size() == 0 && !final_message_written_) return;
    write_in_flight_ = true;
    StartWrite(&response_);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finish_called_) return;
    finish_called_ = true;
    Finish(status);
  }

  grpc::CallbackServerContext* const context_;
  EngineLoop* const engine_;
  const std::shared_ptr<StreamSink> sink_;
  GenerateRequest request_;  // the read in flight writes here

  std::mutex mutex_;
  bool submitted_ = false;  // Submit was called (it may have failed: see outcome_)
  int64_t handle_ = 0;
  std::string request_id_;
  bool with_logprobs_ = false;
  std::deque<GeneratedToken> pending_;   // engine events not yet written
  int32_t next_index_ = 0;               // after the last token written
  std::optional<absl::Status> outcome_;  // the engine's final status
  GenerationSummary summary_;            // with an OK outcome_
  GenerateResponse response_;            // the write in flight reads here
  bool write_in_flight_ = false;
  bool final_message_written_ = false;
  bool finish_called_ = false;
};

void StreamSink::OnToken(const GeneratedToken& token) {
  const std::lock_guard lock(mutex_);
  if (reactor_ != nullptr) reactor_->OnEngineToken(token);
}

void StreamSink::OnFinished(const absl::Status& status, const GenerationSummary& summary) {
  const std::lock_guard lock(mutex_);
  if (reactor_ != nullptr) reactor_->OnEngineFinished(status, summary);
}

}  // namespace

grpc::ServerBidiReactor<GenerateRequest, GenerateResponse>* ReplicaService::Generate(
    grpc::CallbackServerContext* context) {
  return new GenerateReactor(context, engine_.load());
}

void ReplicaService::SetEngine(EngineLoop* engine, std::string replica_id) {
  {
    const std::lock_guard lock(mutex_);
    replica_id_ = std::move(replica_id);
  }
  engine_.store(engine);
}

grpc::ServerUnaryReactor* ReplicaService::GetLoad(grpc::CallbackServerContext* context,
                                                  const internal::v1::GetLoadRequest* request,
                                                  internal::v1::LoadReport* report) {
  EngineLoop* engine = engine_.load();
  std::string replica_id;
  {
    const std::lock_guard lock(mutex_);
    replica_id = replica_id_;
  }
  *report =
      LoadReportFromEngine(engine != nullptr ? engine->Load() : EngineLoad{}, replica_id, model_);
  // A pointer copy under the engine's mutex; the filter itself is copied here, on the gRPC
  // thread, never on the engine's.
  if (const std::shared_ptr<const PrefixSummary> summary =
          engine != nullptr ? engine->PrefixCacheSummary() : nullptr;
      summary != nullptr) {
    PrefixCacheSummaryToProto(*summary, *report->mutable_prefix_cache());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace reflect
