#include "worker/parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <functional>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

absl::Status FromCuda(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::UnavailableError(absl::StrFormat("%s: %s", what, cudaGetErrorString(error)));
}

absl::Status FromNccl(ncclResult_t result, const std::string& what) {
  if (result == ncclSuccess || result == ncclInProgress) return absl::OkStatus();
  return absl::UnavailableError(absl::StrFormat("%s: %s", what, ncclGetErrorString(result)));
}

absl::Time DeadlineAfter(absl::Duration timeout) {
  return timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, std::string group_name, int rank, int size,
                   absl::Duration timeout)
      : comm_(comm),
        stream_(stream),
        group_name_(std::move(group_name)),
        rank_(rank),
        size_(size),
        timeout_(timeout) {}

  ~NcclCommunicator() override {
    // A broken communicator was aborted already.
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, int64_t count) override {
    if (count < 0) return absl::InvalidArgumentError("AllReduceSum: negative count");
    return Run("AllReduceSum", count == 0, timeout_, [&] {
      return ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_);
    });
  }

  absl::Status AllGather(const float* input, int64_t count, float* output) override {
    if (count < 0) return absl::InvalidArgumentError("AllGather: negative count");
    return Run("AllGather", count == 0, timeout_,
               [&] { return ncclAllGather(input, output, count, ncclFloat32, comm_, stream_); });
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root, absl::Duration timeout) override {
    if (bytes < 0 || root < 0 || root >= size_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("Broadcast: bad size %d or root %d of %d", bytes, root, size_));
    }
    return Run("Broadcast", bytes == 0, timeout,
               [&] { return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_); });
  }

  absl::Status Send(const void* data, int64_t bytes, int peer) override {
    REFLECT_RETURN_IF_ERROR(CheckPeer("Send", bytes, peer));
    return Run("Send", bytes == 0, timeout_,
               [&] { return ncclSend(data, bytes, ncclUint8, peer, comm_, stream_); });
  }

  absl::Status Recv(void* data, int64_t bytes, int peer, absl::Duration timeout) override {
    REFLECT_RETURN_IF_ERROR(CheckPeer("Recv", bytes, peer));
    return Run("Recv", bytes == 0, timeout,
               [&] { return ncclRecv(data, bytes, ncclUint8, peer, comm_, stream_); });
  }

 private:
  absl::Status CheckPeer(const char* what, int64_t bytes, int peer) const {
    if (bytes < 0 || peer < 0 || peer >= size_ || peer == rank_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: bad size %d or peer %d (rank %d of %d)", what, bytes, peer, rank_, size_));
    }
    return absl::OkStatus();
  }

  // Enqueues `call` (unless `empty`) and waits for the stream until `timeout` passes.
  absl::Status Run(const char* what, bool empty, absl::Duration timeout,
                   const std::function<ncclResult_t()>& call) {
    if (!broken_.ok() || empty) return broken_;
    const std::string context =
        absl::StrFormat("nccl group '%s' rank %d of %d: %s", group_name_, rank_, size_, what);
    absl::Status status = FromNccl(call(), context);
    if (status.ok()) status = Wait(context, DeadlineAfter(timeout));
    if (!status.ok()) {
      broken_ = status;
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    return status;
  }

  absl::Status Wait(const std::string& context, absl::Time deadline) {
    while (true) {
      ncclResult_t async_error = ncclSuccess;
      REFLECT_RETURN_IF_ERROR(FromNccl(ncclCommGetAsyncError(comm_, &async_error), context));
      REFLECT_RETURN_IF_ERROR(FromNccl(async_error, context));
      if (async_error != ncclInProgress) {
        const cudaError_t query = cudaStreamQuery(stream_);
        if (query == cudaSuccess) return absl::OkStatus();
        if (query != cudaErrorNotReady) return FromCuda(query, context);
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrFormat("%s: timed out", context));
      }
      std::this_thread::yield();
    }
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  std::string group_name_;
  int rank_;
  int size_;
  absl::Duration timeout_;
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    std::shared_ptr<KeyValueStore> store, const std::string& group_name, int rank, int size,
    absl::Duration timeout) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("nccl group '%s': rank %d outside a group of %d", group_name, rank, size));
  }
  const absl::Time deadline = absl::Now() + timeout;
  const std::string key = absl::StrFormat("nccl/%s/id", group_name);
  ncclUniqueId id;
  if (rank == 0) {
    REFLECT_RETURN_IF_ERROR(FromNccl(ncclGetUniqueId(&id), "ncclGetUniqueId"));
    REFLECT_RETURN_IF_ERROR(store->Set(key, std::string(id.internal, sizeof(id.internal))));
  } else {
    absl::StatusOr<std::string> published = store->Get(key, timeout);
    if (!published.ok()) {
      return absl::DeadlineExceededError(
          absl::StrFormat("nccl group '%s': rank 0 did not publish its id within %s", group_name,
                          absl::FormatDuration(timeout)));
    }
    if (published->size() != sizeof(id.internal)) {
      return absl::InternalError(absl::StrFormat("nccl group '%s': bad id", group_name));
    }
    std::memcpy(id.internal, published->data(), sizeof(id.internal));
  }
  cudaStream_t stream = nullptr;
  REFLECT_RETURN_IF_ERROR(
      FromCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const std::string context =
      absl::StrFormat("nccl group '%s' rank %d of %d: joining", group_name, rank, size);
  absl::Status status = FromNccl(ncclCommInitRankConfig(&comm, size, id, rank, &config), context);
  while (status.ok()) {
    ncclResult_t state = ncclSuccess;
    status = FromNccl(ncclCommGetAsyncError(comm, &state), context);
    if (status.ok()) status = FromNccl(state, context);
    if (!status.ok() || state == ncclSuccess) break;
    if (absl::Now() >= deadline) {
      status = absl::DeadlineExceededError(absl::StrFormat("%s: not every rank joined within %s",
                                                           context, absl::FormatDuration(timeout)));
    }
    std::this_thread::yield();
  }
  if (!status.ok()) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return status;
  }
  return std::make_unique<NcclCommunicator>(comm, stream, group_name, rank, size, timeout);
}

}  // namespace reflect
