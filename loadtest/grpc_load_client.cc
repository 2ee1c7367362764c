#include "loadtest/grpc_load_client.h"

#include <chrono>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/client_callback.h"

namespace reflect::loadtest {
namespace {

// The router's retry hint on RESOURCE_EXHAUSTED (reflect.v1 inference.proto).
constexpr char kRetryAfterMetadata[] = "retry-after-ms";
// A channel argument of our own: channels that differ in it never share a connection.
constexpr char kConnectionIndexArgument[] = "reflect.loadtest.connection_index";

v1::ChatRequest ChatRequestFor(const PlannedRequest& planned, const std::string& model) {
  v1::ChatRequest request;
  request.set_model(model);
  request.set_add_reflection_system_prompt(planned.add_reflection_system_prompt);
  request.set_priority(planned.priority);
  request.set_request_id(absl::StrCat("loadtest-", planned.index));
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(planned.user_message);
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(planned.temperature);
  sampling->set_seed(planned.seed);
  sampling->set_max_tokens(planned.max_tokens);
  sampling->set_ignore_eos(planned.ignore_eos);
  return request;
}

std::optional<absl::Duration> RetryAfterFromTrailers(
    const std::multimap<grpc::string_ref, grpc::string_ref>& trailers) {
  const auto found = trailers.find(kRetryAfterMetadata);
  if (found == trailers.end()) return std::nullopt;
  int64_t milliseconds = 0;
  if (!absl::SimpleAtoi(absl::string_view(found->second.data(), found->second.size()),
                        &milliseconds)) {
    return std::nullopt;
  }
  return absl::Milliseconds(milliseconds);
}

}  // namespace

// One Chat stream. Reactions run one at a time (gRPC guarantees reads complete in order and
// OnDone comes last), so the measurement state needs no lock. Owned by the client's in_flight_
// calls; OnDone hands itself back through InFlightCalls::Finish, its last act.
class GrpcLoadClient::ChatCall final : public grpc::ClientReadReactor<v1::GenerationChunk> {
 public:
  ChatCall(GrpcLoadClient& owner, int64_t call_id, const PlannedRequest& planned,
           absl::Time run_start, RecordCallback done)
      : owner_(owner),
        call_id_(call_id),
        request_(ChatRequestFor(planned, owner.options_.model)),
        done_(std::move(done)),
        clock_(absl::Now()) {
    record_.index = planned.index;
    record_.sent = clock_.sent() - run_start;
    context_.set_deadline(absl::ToChronoTime(clock_.sent() + owner.options_.request_timeout));
    if (!owner.options_.api_key.empty()) {
      context_.AddMetadata("authorization", "Bearer " + owner.options_.api_key);
    }
  }

  void Start(v1::Inference::Stub& stub) {
    stub.async()->Chat(&context_, &request_, this);
    StartRead(&chunk_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows with the status
    clock_.OnTokens(absl::Now(), chunk_.token_ids_size(), chunk_.section() == v1::SECTION_OUTPUT);
    if (chunk_.has_finish()) {
      const v1::Usage& usage = chunk_.finish().usage();
      record_.prompt_tokens = usage.prompt_tokens();
      record_.thinking_tokens = usage.thinking_tokens();
      record_.reflection_tokens = usage.reflection_tokens();
    }
    StartRead(&chunk_);
  }

  void OnDone(const grpc::Status& status) override {
    clock_.Fill(absl::Now(), record_);
    switch (status.error_code()) {
      case grpc::StatusCode::OK:
        record_.outcome = RequestOutcome::kOk;
        break;
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        record_.outcome = RequestOutcome::kRejected;
        record_.retry_after = RetryAfterFromTrailers(context_.GetServerTrailingMetadata());
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        record_.outcome = RequestOutcome::kTimeout;
        break;
      default:
        record_.outcome = RequestOutcome::kError;
        break;
    }
    if (!status.ok()) {
      record_.error =
          absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                       ": ", status.error_message());
    }
    done_(std::move(record_));
    owner_.in_flight_.Finish(call_id_);  // may destroy this
  }

 private:
  GrpcLoadClient& owner_;
  const int64_t call_id_;
  grpc::ClientContext context_;
  const v1::ChatRequest request_;
  RecordCallback done_;
  v1::GenerationChunk chunk_;  // the read in flight writes here
  TokenClock clock_;
  RequestRecord record_;
};

absl::StatusOr<std::unique_ptr<GrpcLoadClient>> GrpcLoadClient::Create(LoadClientOptions options) {
  if (options.address.empty()) return absl::InvalidArgumentError("no address to load");
  if (options.connections < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("connections must be at least 1, got ", options.connections));
  }
  if (options.request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("request_timeout must be positive");
  }
  return std::unique_ptr<GrpcLoadClient>(new GrpcLoadClient(std::move(options)));
}

GrpcLoadClient::GrpcLoadClient(LoadClientOptions options) : options_(std::move(options)) {
  for (int index = 0; index < options_.connections; ++index) {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    arguments.SetInt(kConnectionIndexArgument, index);
    stubs_.push_back(v1::Inference::NewStub(grpc::CreateCustomChannel(
        options_.address, grpc::InsecureChannelCredentials(), arguments)));
  }
}

GrpcLoadClient::~GrpcLoadClient() {
  for (const std::shared_ptr<ChatCall>& call : in_flight_.Close()) call->Cancel();
  in_flight_.Drain();
}

void GrpcLoadClient::Send(const PlannedRequest& request, absl::Time run_start,
                          RecordCallback done) {
  std::shared_ptr<ChatCall> call = in_flight_.Add([&](int64_t call_id) {
    return std::make_shared<ChatCall>(*this, call_id, request, run_start, std::move(done));
  });
  if (call == nullptr) {
    done(ClosingClientRecord(request, run_start));
    return;
  }
  const uint64_t stub_index = next_stub_.fetch_add(1, std::memory_order_relaxed) % stubs_.size();
  call->Start(*stubs_[stub_index]);
}

void GrpcLoadClient::Drain() { in_flight_.Drain(); }

}  // namespace reflect::loadtest
