// Whether `--backend cuda` can run in this program. Header-only on purpose: REFLECT_WITH_CUDA is
// defined only in the programs that link the CUDA backend (the reflect_cuda library), so the
// answer is decided where the program is compiled.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/cuda/cuda_backend.h"

namespace reflect::cuda {

// OK when `program` was built with CUDA and a usable device is present; FAILED_PRECONDITION
// saying which is missing otherwise.
inline absl::Status CheckCudaUsable(absl::string_view program) {
#ifdef REFLECT_WITH_CUDA
  if (CudaDeviceAvailable()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "--backend cuda: ", program, " found no usable CUDA device (no GPU, or no driver)"));
#else
  return absl::FailedPreconditionError(
      absl::StrCat("--backend cuda: this ", program,
                   " was built without CUDA (build with the CUDA toolkit present, "
                   "REFLECT_ENABLE_CUDA=ON)"));
#endif
}

}  // namespace reflect::cuda
