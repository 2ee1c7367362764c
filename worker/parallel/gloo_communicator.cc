#include "worker/parallel/gloo_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "gloo/allgather.h"
#include "gloo/allgatherv.h"
#include "gloo/alltoallv.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"

namespace reflect {
namespace {

// Gloo adds its timeouts to steady_clock::now() in nanoseconds; ten years is "never" for a server
// and far from overflowing.
constexpr std::chrono::milliseconds kLongestGlooTimeout = std::chrono::hours(24 * 365 * 10);

// Send and Recv use a slot of their own, apart from the collectives' (prefixes 0x01-0x08).
constexpr uint64_t kPointToPointSlot = uint64_t{0x70} << 56;

// At most this many floats gathered per all-reduce take the one-round path (see the header).
constexpr int64_t kGatherAllLimit = 64 * 1024;

std::chrono::milliseconds ToGlooTimeout(absl::Duration timeout) {
  if (timeout >= absl::FromChrono(kLongestGlooTimeout)) return kLongestGlooTimeout;
  return std::max(std::chrono::milliseconds(1), absl::ToChronoMilliseconds(timeout));
}

// Gloo's Store over a KeyValueStore, under a key prefix. Waits share one deadline, so the whole
// rendezvous takes at most `timeout`. Gloo wants exceptions; the first failure is also kept as a
// status for the caller. Gloo's keys are the ranks' numbers.
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  StoreAdapter(std::shared_ptr<KeyValueStore> store, std::string group_name, absl::Duration timeout)
      : store_(std::move(store)),
        group_name_(std::move(group_name)),
        timeout_(timeout),
        deadline_(absl::Now() + timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    Check(store_->Set(Prefixed(key), std::string(data.begin(), data.end())));
  }
  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::string> value = store_->Get(Prefixed(key), deadline_ - absl::Now());
    if (!value.ok()) {
      Check(absl::DeadlineExceededError(
          absl::StrFormat("rank %s did not join gloo group '%s' within %s", key, group_name_,
                          absl::FormatDuration(timeout_))));
    }
    return std::vector<char>(value->begin(), value->end());
  }
  void wait(const std::vector<std::string>& keys) override {
    for (const std::string& key : keys) get(key);
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override {
    wait(keys);
  }

  const absl::Status& failure() const { return failure_; }

 private:
  std::string Prefixed(const std::string& key) const {
    return absl::StrFormat("gloo/%s/%s", group_name_, key);
  }
  void Check(absl::Status status) {
    if (status.ok()) return;
    if (failure_.ok()) failure_ = status;
    throw gloo::IoException(std::string(status.message()));
  }

  std::shared_ptr<KeyValueStore> store_;
  std::string group_name_;
  absl::Duration timeout_;
  absl::Time deadline_;
  absl::Status failure_;
};

// Gloo reports timeouts and lost peers alike as exceptions; the message tells them apart.
absl::Status FromGlooError(const std::string& what, const std::exception& error) {
  const std::string message = absl::StrFormat("%s: %s", what, error.what());
  if (absl::StrContains(error.what(), "imeout") || absl::StrContains(error.what(), "Timed out")) {
    return absl::DeadlineExceededError(message);
  }
  return absl::UnavailableError(message);
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::string group_name,
                   absl::Duration timeout)
      : context_(std::move(context)),
        group_name_(std::move(group_name)),
        timeout_(ToGlooTimeout(timeout)) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }

  absl::Status AllReduceSum(float* data, int64_t count) override {
    if (count < 0) return absl::InvalidArgumentError("AllReduceSum: negative count");
    if (count == 0 || size() == 1) return broken_;
    if (count < size() || count * size() <= kGatherAllLimit) {
      return Guarded("AllReduceSum", [&] { GatherAndSum(data, count); });
    }
    return Guarded("AllReduceSum", [&] { ScatterSumGather(data, count); });
  }

  absl::Status AllGather(const float* input, int64_t count, float* output) override {
    if (count < 0) return absl::InvalidArgumentError("AllGather: negative count");
    if (count == 0) return broken_;
    return Guarded("AllGather", [&] {
      gloo::AllgatherOptions options(context_);
      options.setInput(const_cast<float*>(input), count);
      options.setOutput(output, count * size());
      options.setTimeout(timeout_);
      gloo::allgather(options);
    });
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root, absl::Duration timeout) override {
    if (bytes < 0 || root < 0 || root >= size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("Broadcast: bad size %d or root %d of %d", bytes, root, size()));
    }
    if (bytes == 0 || size() == 1) return broken_;
    return Guarded("Broadcast", [&] {
      gloo::BroadcastOptions options(context_);
      options.setOutput(static_cast<uint8_t*>(data), bytes);
      options.setRoot(root);
      options.setTimeout(ToGlooTimeout(timeout));
      gloo::broadcast(options);
    });
  }

  absl::Status Send(const void* data, int64_t bytes, int peer) override {
    REFLECT_RETURN_IF_ERROR(CheckPeer("Send", bytes, peer));
    return Guarded("Send", [&] {
      auto buffer = context_->createUnboundBuffer(const_cast<void*>(data), bytes);
      buffer->send(peer, kPointToPointSlot);
      buffer->waitSend(timeout_);
    });
  }

  absl::Status Recv(void* data, int64_t bytes, int peer, absl::Duration timeout) override {
    REFLECT_RETURN_IF_ERROR(CheckPeer("Recv", bytes, peer));
    return Guarded("Recv", [&] {
      auto buffer = context_->createUnboundBuffer(data, bytes);
      buffer->recv(peer, kPointToPointSlot);
      buffer->waitRecv(ToGlooTimeout(timeout));
    });
  }

 private:
  absl::Status CheckPeer(const char* what, int64_t bytes, int peer) const {
    if (bytes < 0 || peer < 0 || peer >= size() || peer == rank()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: bad size %d or peer %d (rank %d of %d)", what, bytes, peer, rank(), size()));
    }
    return absl::OkStatus();
  }

  // Runs a gloo call unless broken; an exception breaks the communicator for good.
  template <typename Call>
  absl::Status Guarded(const char* what, Call call) {
    if (!broken_.ok()) return broken_;
    try {
      call();
    } catch (const std::exception& error) {
      broken_ = FromGlooError(
          absl::StrFormat("gloo group '%s' rank %d of %d: %s", group_name_, rank(), size(), what),
          error);
    }
    return broken_;
  }

  // Every rank gathers every input and sums the rows in rank order.
  void GatherAndSum(float* data, int64_t count) {
    scratch_.resize(count * size());
    gloo::AllgatherOptions options(context_);
    options.setInput(data, count);
    options.setOutput(scratch_.data(), scratch_.size());
    options.setTimeout(timeout_);
    gloo::allgather(options);
    SumRows(scratch_.data(), size(), count, data);
  }

  // Rank r owns chunk r; each rank sums its chunk's rows in rank order, then all gather chunks.
  void ScatterSumGather(float* data, int64_t count) {
    std::vector<int64_t> chunk(size());
    std::vector<size_t> chunk_sizes(size());
    for (int r = 0; r < size(); ++r) {
      chunk[r] = count / size() + (r < count % size() ? 1 : 0);
      chunk_sizes[r] = chunk[r];
    }
    const int64_t own = chunk[rank()];
    scratch_.resize(own * size());
    gloo::AlltoallvOptions scatter(context_);
    scatter.setInput(data, chunk);
    scatter.setOutput(scratch_.data(), std::vector<int64_t>(size(), own));
    scatter.setTimeout(timeout_);
    gloo::alltoallv(scatter);
    SumRows(scratch_.data(), size(), own, scratch_.data());

    gloo::AllgathervOptions gather(context_);
    gather.setInput(scratch_.data(), own);
    gather.setOutput(data, chunk_sizes);
    gather.setTimeout(timeout_);
    gloo::allgatherv(gather);
  }

  // sum[i] = ((rows[0][i] + rows[1][i]) + rows[2][i]) + …; `sum` may be rows[0].
  static void SumRows(const float* rows, int row_count, int64_t length, float* sum) {
    if (sum != rows) std::memcpy(sum, rows, length * sizeof(float));
    for (int r = 1; r < row_count; ++r) {
      const float* row = rows + r * length;
      for (int64_t i = 0; i < length; ++i) sum[i] += row[i];
    }
  }

  std::shared_ptr<gloo::Context> context_;
  std::string group_name_;
  std::chrono::milliseconds timeout_;
  absl::Status broken_;
  std::vector<float> scratch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    std::shared_ptr<KeyValueStore> store, const std::string& group_name, int rank, int size,
    const GlooOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("gloo group '%s': rank %d outside a group of %d", group_name, rank, size));
  }
  StoreAdapter adapter(std::move(store), group_name, options.timeout);
  try {
    gloo::transport::tcp::attr attributes;
    attributes.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attributes);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(ToGlooTimeout(options.timeout));
    context->connectFullMesh(adapter, device);
    return std::make_unique<GlooCommunicator>(std::move(context), group_name, options.timeout);
  } catch (const std::exception& error) {
    if (!adapter.failure().ok()) return adapter.failure();
    return FromGlooError(absl::StrFormat("gloo group '%s' rank %d of %d: joining (listening on %s)",
                                         group_name, rank, size, options.hostname),
                         error);
  }
}

}  // namespace reflect
