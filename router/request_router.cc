#include "router/request_router.h"

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "router/admission.h"
#include "router/in_flight_request.h"
#include "router/replica_client.h"
#include "router/replica_pool.h"
#include "router/router_metrics.h"

namespace reflect {
namespace {

// The client's handle: a weak reference, so dropping it neither cancels nor keeps anything alive.
class InFlightRequestHandle final : public RequestHandle {
 public:
  explicit InFlightRequestHandle(std::weak_ptr<InFlightRequest> request)
      : request_(std::move(request)) {}
  void Cancel() override {
    if (const std::shared_ptr<InFlightRequest> request = request_.lock(); request != nullptr) {
      request->Cancel();
    }
  }

 private:
  std::weak_ptr<InFlightRequest> request_;
};

// The router: admission and replica choice in Submit, the rest in InFlightRequest.
// Member order matters: the pool outlives the services and requests that use it.
class RequestRouterImpl final : public RequestRouter {
 public:
  RequestRouterImpl(RequestRouterOptions options, const Tokenizer& tokenizer,
                    RouterMetrics* metrics)
      : pool_(ReplicaPoolOptions{.addresses = std::move(options.replica_addresses),
                                 .poll_interval = options.poll_interval,
                                 .poll_timeout = options.poll_timeout,
                                 .model = options.model}),
        admission_(options.admission),
        services_(pool_, admission_, tokenizer, metrics) {
    services_.request_done = [this](uint64_t request_number) { RequestDone(request_number); };
  }

  ~RequestRouterImpl() override {
    services_.shutting_down.store(true);
    std::vector<std::shared_ptr<InFlightRequest>> requests;
    std::unique_lock lock(mutex_);
    for (const auto& [number, request] : in_flight_) {
      if (std::shared_ptr<InFlightRequest> alive = request.lock(); alive != nullptr) {
        requests.push_back(std::move(alive));
      }
    }
    lock.unlock();
    for (const std::shared_ptr<InFlightRequest>& request : requests) request->Cancel();
    requests.clear();
    lock.lock();
    all_done_.wait(lock, [this] { return in_flight_.empty(); });
  }

  absl::StatusOr<std::unique_ptr<RequestHandle>> Submit(
      RoutedRequest request, std::shared_ptr<ResponseSink> sink) override {
    if (request.prompt_token_ids.empty()) {
      return absl::InvalidArgumentError("the prompt must have at least one token");
    }
    if (services_.shutting_down.load()) {
      return absl::UnavailableError("the router is shutting down");
    }
    // Choosing first keeps an unroutable request out of the admission counts.
    const std::optional<size_t> replica =
        PickReplica(services_, request.prompt_token_ids, /*excluded=*/{});
    if (!replica.has_value()) {
      if (services_.metrics != nullptr) services_.metrics->RequestRejected("no_replica");
      return absl::UnavailableError(
          absl::StrCat("no replica is ready (", pool_.size(), " configured, none in rotation)"));
    }
    if (absl::Status admitted =
            admission_.TryAdmit(static_cast<int64_t>(request.prompt_token_ids.size()),
                                request.sampling.max_tokens, absl::Now());
        !admitted.ok()) {
      if (services_.metrics != nullptr) services_.metrics->RequestRejected("queue_full");
      return admitted;
    }
    uint64_t number = 0;
    {
      const std::lock_guard lock(mutex_);
      number = ++requests_started_;
    }
    auto in_flight =
        std::make_shared<InFlightRequest>(services_, number, std::move(request), std::move(sink));
    {
      // Registered before it starts: it may end (and unregister) before Start returns.
      const std::lock_guard lock(mutex_);
      in_flight_.emplace(number, in_flight);
    }
    std::weak_ptr<InFlightRequest> weak = in_flight;
    in_flight->Start(*replica);
    return std::make_unique<InFlightRequestHandle>(std::move(weak));
  }

  bool ready() const override { return pool_.ready(); }
  std::vector<ReplicaStatus> Replicas() const override { return pool_.Statuses(); }
  RouterLoad Load() const override { return admission_.Load(); }
  bool WaitUntilReady(absl::Duration timeout) override { return pool_.WaitUntilReady(timeout); }

 private:
  void RequestDone(uint64_t request_number) {
    const std::lock_guard lock(mutex_);
    in_flight_.erase(request_number);
    // Under the lock: the destructor may return (and destroy all_done_) once it sees empty.
    if (in_flight_.empty()) all_done_.notify_all();
  }

  ReplicaPool pool_;
  AdmissionController admission_;
  RouterServices services_;

  std::mutex mutex_;
  std::condition_variable all_done_;
  uint64_t requests_started_ = 0;                                            // guarded
  absl::flat_hash_map<uint64_t, std::weak_ptr<InFlightRequest>> in_flight_;  // guarded
};

absl::Status ValidateOptions(const RequestRouterOptions& options) {
  if (options.replica_addresses.empty()) {
    return absl::InvalidArgumentError("at least one replica address is required");
  }
  for (const std::string& address : options.replica_addresses) {
    if (!IsReplicaAddress(address)) {
      return absl::InvalidArgumentError(
          absl::StrCat("replica address \"", address, "\" is not host:port"));
    }
  }
  if (options.poll_interval <= absl::ZeroDuration() ||
      options.poll_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("poll_interval and poll_timeout must be positive");
  }
  const AdmissionLimits& limits = options.admission;
  if (limits.max_queued_requests < 1 || limits.max_queued_tokens < 1 ||
      limits.max_in_flight_requests < 1 || limits.max_queue_time <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("admission limits must be positive");
  }
  if (limits.min_retry_after < absl::ZeroDuration() ||
      limits.max_retry_after < limits.min_retry_after) {
    return absl::InvalidArgumentError("retry hints need 0 <= min_retry_after <= max_retry_after");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RequestRouter>> RequestRouter::Create(RequestRouterOptions options,
                                                                     const Tokenizer& tokenizer,
                                                                     RouterMetrics* metrics) {
  if (absl::Status valid = ValidateOptions(options); !valid.ok()) return valid;
  return std::make_unique<RequestRouterImpl>(std::move(options), tokenizer, metrics);
}

}  // namespace reflect
