#include "worker/parallel/single_rank_communicator.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace reflect {
namespace {

absl::Status CheckCount(const char* what, int64_t count) {
  if (count < 0) return absl::InvalidArgumentError(absl::StrFormat("%s: negative size", what));
  return absl::OkStatus();
}

absl::Status NoPeer(const char* what, int peer) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: peer %d in a single-rank group (no other rank)", what, peer));
}

}  // namespace

absl::Status SingleRankCommunicator::AllReduceSum(float*, int64_t count) {
  return CheckCount("AllReduceSum", count);
}

absl::Status SingleRankCommunicator::AllGather(const float* input, int64_t count, float* output) {
  if (count < 0) return CheckCount("AllGather", count);
  if (count > 0 && input != output) std::memmove(output, input, count * sizeof(float));
  return absl::OkStatus();
}

absl::Status SingleRankCommunicator::Broadcast(void*, int64_t bytes, int root, absl::Duration) {
  if (root != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Broadcast: root %d in a single-rank group", root));
  }
  return CheckCount("Broadcast", bytes);
}

absl::Status SingleRankCommunicator::Send(const void*, int64_t, int peer) {
  return NoPeer("Send", peer);
}

absl::Status SingleRankCommunicator::Recv(void*, int64_t, int peer, absl::Duration) {
  return NoPeer("Recv", peer);
}

}  // namespace reflect
