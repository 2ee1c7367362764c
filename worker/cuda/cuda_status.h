// CUDA errors as absl::Status, for every CUDA file of the backend.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace reflect::cuda {

// OK for cudaSuccess; otherwise INTERNAL "<what>: <CUDA error name>: <description>"
// (RESOURCE_EXHAUSTED for cudaErrorMemoryAllocation, so callers can tell "too big" apart).
inline absl::Status CudaStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error));
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

// The status of the last launch on this thread (cudaGetLastError), named after the kernel.
inline absl::Status LaunchStatus(absl::string_view kernel) {
  return CudaStatus(cudaGetLastError(), absl::StrCat("launching ", kernel));
}

}  // namespace reflect::cuda
