#include "router/replica_client.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/strings/numbers.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "reflect/internal/v1/replica.grpc.pb.h"
#include "router/http_errors.h"

namespace reflect {
namespace {

namespace v1 = internal::v1;

// Reconnect backoff: gRPC's default grows to two minutes, far too slow to notice that a replica
// came back; a replica on loopback or in the same cluster is cheap to retry every second.
constexpr int kMinReconnectBackoffMilliseconds = 100;
constexpr int kMaxReconnectBackoffMilliseconds = 1000;
// HTTP/2 keepalive: a replica that stops answering (hung, stopped, cut off) without closing its
// connection is detected by an unanswered PING within kKeepalive{Time,Timeout} (4 s at most),
// which fails every stream on the connection with UNAVAILABLE instead of leaving them waiting.
// The replica's server permits pings this frequent (worker_main.cc).
constexpr int kKeepaliveTimeMilliseconds = 2000;
constexpr int kKeepaliveTimeoutMilliseconds = 2000;

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

v1::SamplingParams SamplingToProto(const SamplingParams& sampling) {
  v1::SamplingParams proto;
  proto.set_temperature(sampling.temperature);
  proto.set_top_p(sampling.top_p);
  proto.set_top_k(static_cast<int32_t>(sampling.top_k));
  proto.set_min_p(sampling.min_p);
  proto.set_repetition_penalty(sampling.repetition_penalty);
  proto.set_frequency_penalty(sampling.frequency_penalty);
  proto.set_presence_penalty(sampling.presence_penalty);
  proto.set_seed(sampling.seed);
  proto.set_max_tokens(static_cast<int32_t>(sampling.max_tokens));
  proto.set_ignore_eos(sampling.ignore_eos);
  for (const int32_t id : sampling.stop_token_ids) proto.add_stop_token_ids(id);
  proto.set_logprobs(sampling.logprobs);
  return proto;
}

GenerationStopReason StopReasonFromProto(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_EOS:
      return GenerationStopReason::kEos;
    case v1::FINISH_REASON_STOP_TOKEN:
      return GenerationStopReason::kStopToken;
    case v1::FINISH_REASON_CONTEXT_LENGTH:
      return GenerationStopReason::kContextLength;
    default:
      return GenerationStopReason::kLength;
  }
}

ReplicaMessage MessageFromProto(const v1::GenerateResponse& response) {
  ReplicaMessage message;
  message.first_index = response.first_index();
  message.tokens.reserve(static_cast<size_t>(response.token_ids_size()));
  for (int position = 0; position < response.token_ids_size(); ++position) {
    ReplicaToken token;
    token.index = response.first_index() + position;
    token.token_id = response.token_ids(position);
    if (position < response.logprobs_size()) token.logprob = response.logprobs(position);
    if (position < response.top_logprobs_size()) {
      const v1::TopLogprobs& top = response.top_logprobs(position);
      for (int alternative = 0;
           alternative < top.token_ids_size() && alternative < top.logprobs_size(); ++alternative) {
        token.top.push_back(TopTokenLogprob{.token_id = top.token_ids(alternative),
                                            .logprob = top.logprobs(alternative)});
      }
    }
    message.tokens.push_back(std::move(token));
  }
  if (response.has_finish()) {
    const v1::Finish& finish = response.finish();
    message.finish = ReplicaFinish{.reason = StopReasonFromProto(finish.reason()),
                                   .cached_prompt_tokens = finish.cached_prompt_tokens(),
                                   .queue_seconds = finish.queue_seconds(),
                                   .preemptions = finish.preemptions()};
  }
  return message;
}

ReplicaLoadReport LoadReportFromProto(const v1::LoadReport& report) {
  ReplicaLoadReport load{.replica_id = report.replica_id(),
                         .model = report.model(),
                         .accepting = report.accepting(),
                         .running_requests = report.running_requests(),
                         .waiting_requests = report.waiting_requests(),
                         .waiting_prompt_tokens = report.waiting_prompt_tokens(),
                         .kv_cache_usage_ratio = report.kv_cache_usage_ratio(),
                         .kv_cache_free_blocks = report.kv_cache_free_blocks(),
                         .kv_cache_total_blocks = report.kv_cache_total_blocks(),
                         .prefix_summary = nullptr};
  const v1::PrefixCacheSummary& summary = report.prefix_cache();
  if (summary.hash_function() == v1::BLOCK_HASH_FUNCTION_FNV1A_64_CHAINED &&
      summary.block_size_tokens() > 0 && summary.probe_count() > 0 && !summary.bits().empty()) {
    load.prefix_summary = std::make_shared<const PrefixSummary>(
        PrefixSummary{.block_size_tokens = summary.block_size_tokens(),
                      .probe_count = summary.probe_count(),
                      .bits = summary.bits(),
                      .inserted_blocks = summary.inserted_blocks()});
  }
  return load;
}

// Counts a client's calls until their ClientContexts are destroyed. A ClientContext holds a
// reference to its channel, and gRPC's callback threads destroy contexts (ours, in OnDone and
// after unary callbacks). Were that the channel's last reference, ~Channel would run on a
// callback thread and release the shared callback completion queue there, which joins that very
// thread (a double free in gRPC 1.51). So ~ReplicaClient waits for every call to be gone, and the
// channel's last reference always drops on the destroying thread.
struct CallCount {
  std::mutex mutex;
  std::condition_variable none_left;
  int64_t calls = 0;  // guarded by mutex
};

// Held by each call, declared before its ClientContext so that it is destroyed after it.
class CallToken {
 public:
  explicit CallToken(std::shared_ptr<CallCount> count) : count_(std::move(count)) {
    const std::lock_guard lock(count_->mutex);
    ++count_->calls;
  }
  ~CallToken() {
    const std::lock_guard lock(count_->mutex);
    if (--count_->calls == 0) count_->none_left.notify_all();
  }
  CallToken(const CallToken&) = delete;
  CallToken& operator=(const CallToken&) = delete;

 private:
  std::shared_ptr<CallCount> count_;
};

// One Generate stream. Lifecycle: opened (nothing sent) → Start (start message written, first read
// posted, one hold taken so ForceTokens may write later) → reading → the read side ends (hold
// removed, no more writes) → OnDone (observer told, self-reference dropped). The handle and the
// self-reference share ownership, so the object outlives both the caller's interest and gRPC's last
// reaction. Start* calls are made under mutex_ only where no reaction can run inline (client
// reactors are not inlineable); RemoveHold, which may run OnDone, is called without it.
class GenerateCall final
    : public grpc::ClientBidiReactor<v1::GenerateRequest, v1::GenerateResponse>,
      public ReplicaStream,
      public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(v1::Replica::Stub& stub, std::shared_ptr<CallCount> count,
               std::shared_ptr<ReplicaStreamObserver> observer)
      : token_(std::move(count)), stub_(stub), observer_(std::move(observer)) {}

  void Start(const RoutedRequest& request) override {
    self_ = shared_from_this();
    v1::GenerateRequest message;
    v1::StartGeneration& start = *message.mutable_start();
    start.set_request_id(request.request_id);
    start.mutable_prompt_token_ids()->Add(request.prompt_token_ids.begin(),
                                          request.prompt_token_ids.end());
    *start.mutable_sampling() = SamplingToProto(request.sampling);
    start.set_priority(request.priority);
    if (request.deadline != absl::InfiniteFuture()) {
      const absl::Duration timeout = std::max(request.deadline - absl::Now(), absl::ZeroDuration());
      start.mutable_timeout()->set_seconds(absl::ToInt64Seconds(timeout));
      start.mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(timeout % absl::Seconds(1))));
      context_.set_deadline(absl::ToChronoTime(request.deadline));
    }
    stub_.async()->Generate(&context_, this);
    {
      const std::lock_guard lock(mutex_);
      writes_.push_back(std::move(message));
      writing_ = true;
      StartWrite(&writes_.front());
      StartRead(&response_);
      AddHold();
      StartCall();
    }
    // Either Cancel sees started_ or this sees cancelled_ (both sequentially consistent).
    started_.store(true);
    if (cancelled_.load()) context_.TryCancel();
  }

  void ForceTokens(const ForcedTokens& forced) override {
    v1::GenerateRequest message;
    message.mutable_force()->set_at_index(static_cast<int32_t>(forced.at_index));
    message.mutable_force()->mutable_token_ids()->Add(forced.token_ids.begin(),
                                                      forced.token_ids.end());
    const std::lock_guard lock(mutex_);
    if (read_side_closed_) return;
    writes_.push_back(std::move(message));
    if (!writing_) {
      writing_ = true;
      StartWrite(&writes_.front());
    }
  }

  void Cancel() override {
    cancelled_.store(true);
    if (started_.load()) context_.TryCancel();
  }

  void OnWriteDone(bool ok) override {
    const std::lock_guard lock(mutex_);
    writes_.pop_front();
    writing_ = false;
    // A failed write means the stream is over; the read side reports how.
    if (!ok || read_side_closed_ || writes_.empty()) return;
    writing_ = true;
    StartWrite(&writes_.front());
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      observer_->OnMessage(MessageFromProto(response_));
      StartRead(&response_);
      return;
    }
    {
      const std::lock_guard lock(mutex_);
      read_side_closed_ = true;
    }
    RemoveHold();
  }

  void OnDone(const grpc::Status& status) override {
    absl::Status result = FromGrpcStatus(status);
    if (absl::IsResourceExhausted(result)) {
      const auto& trailers = context_.GetServerTrailingMetadata();
      if (const auto found = trailers.find("retry-after-ms"); found != trailers.end()) {
        int64_t milliseconds = 0;
        if (absl::SimpleAtoi(absl::string_view(found->second.data(), found->second.size()),
                             &milliseconds)) {
          SetRetryAfter(std::chrono::milliseconds(milliseconds), result);
        }
      }
    }
    {
      // Released before this call is: the observer goes before the client may be destroyed.
      const std::shared_ptr<ReplicaStreamObserver> observer = std::move(observer_);
      observer->OnClosed(result);
    }
    // May destroy this object (when the handle is gone already): nothing after it.
    self_.reset();
  }

 private:
  const CallToken token_;  // first: destroyed after context_
  v1::Replica::Stub& stub_;
  std::shared_ptr<ReplicaStreamObserver> observer_;  // until OnDone
  std::shared_ptr<GenerateCall> self_;               // until OnDone
  grpc::ClientContext context_;
  v1::GenerateResponse response_;  // the read in flight writes here

  std::atomic<bool> started_{false};
  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::deque<v1::GenerateRequest> writes_;  // guarded; the front one is being written
  bool writing_ = false;                    // guarded
  bool read_side_closed_ = false;           // guarded: no more writes
};

// The state of one GetLoad call, alive until its callback ran.
struct LoadCall {
  explicit LoadCall(std::shared_ptr<CallCount> count) : token(std::move(count)) {}
  const CallToken token;  // first: destroyed after context
  grpc::ClientContext context;
  v1::GetLoadRequest request;
  v1::LoadReport report;
};

}  // namespace

struct ReplicaClient::Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Replica::Stub> stub;
  std::shared_ptr<CallCount> calls = std::make_shared<CallCount>();
};

ReplicaClient::ReplicaClient(std::string address)
    : address_(std::move(address)), connection_(std::make_unique<Connection>()) {
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kMinReconnectBackoffMilliseconds);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kMinReconnectBackoffMilliseconds);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMilliseconds);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMilliseconds);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMilliseconds);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Token streams are many small messages; the default limit (4 MiB) is plenty, except for a
  // LoadReport with a large prefix summary.
  arguments.SetMaxReceiveMessageSize(64 << 20);
  connection_->channel =
      grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), arguments);
  connection_->stub = v1::Replica::NewStub(connection_->channel);
}

ReplicaClient::~ReplicaClient() {
  CallCount& count = *connection_->calls;
  std::unique_lock lock(count.mutex);
  count.none_left.wait(lock, [&count] { return count.calls == 0; });
}

std::shared_ptr<ReplicaStream> ReplicaClient::OpenStream(
    std::shared_ptr<ReplicaStreamObserver> observer) {
  return std::make_shared<GenerateCall>(*connection_->stub, connection_->calls,
                                        std::move(observer));
}

void ReplicaClient::GetLoad(absl::Duration timeout,
                            std::function<void(absl::StatusOr<ReplicaLoadReport>)> done) {
  auto call = std::make_shared<LoadCall>(connection_->calls);
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  LoadCall* const raw = call.get();
  connection_->stub->async()->GetLoad(
      &raw->context, &raw->request, &raw->report,
      [call = std::move(call), done = std::move(done)](grpc::Status status) {
        if (!status.ok()) {
          done(FromGrpcStatus(status));
          return;
        }
        done(LoadReportFromProto(call->report));
      });
}

bool IsReplicaAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return false;
  }
  const std::string host = address.substr(0, colon);
  if (host.front() == '[') return host.size() > 2 && host.back() == ']';
  return host.find(':') == std::string::npos;
}

}  // namespace reflect
