// Which backend a process runs on (--backend cpu|cuda), and the range checks of the CUDA
// backend's flags: one definition for reflect-worker (worker/replica/backend_choice.h) and the
// `reflect` tool (tools/reflect/backend_flags.h), so that both accept and refuse the same values
// with the same messages. Plain functions; no CUDA call happens here.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reflect {

enum class BackendKind { kCpu, kCuda };

// "cpu" or "cuda"; INVALID_ARGUMENT naming --backend otherwise.
absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name);

// INVALID_ARGUMENT naming the flag when --gpu_memory_utilization is outside (0, 1] or --device
// is negative, and saying so when a replica would have more than one rank (tensor × pipeline
// parallel): the CUDA backend runs one rank per replica for now.
absl::Status CheckCudaFlags(double gpu_memory_utilization, int device, int ranks_per_replica);

}  // namespace reflect
