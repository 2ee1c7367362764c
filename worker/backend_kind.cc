#include "worker/backend_kind.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace reflect {

absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("--backend: expected cpu or cuda, found \"", std::string(name), "\""));
}

absl::Status CheckCudaFlags(double gpu_memory_utilization, int device, int ranks_per_replica) {
  if (ranks_per_replica != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend cuda: the CUDA backend runs one rank per replica for now "
                     "(tensor × pipeline parallel is ",
                     ranks_per_replica, ", must be 1)"));
  }
  if (!(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu_memory_utilization must be in (0, 1], got ", gpu_memory_utilization));
  }
  if (device < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--device must be >= 0, got ", device));
  }
  return absl::OkStatus();
}

}  // namespace reflect
