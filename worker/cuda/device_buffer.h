// RAII owners of CUDA allocations: DeviceBuffer<T> (cudaMalloc / cudaFree) and PinnedBuffer<T>
// (page-locked host memory, cudaMallocHost / cudaFreeHost, which async copies need to overlap).
//
// Ownership: a buffer owns `size()` elements and frees them when destroyed or assigned over;
// movable, never copied. Elements are not initialized. Thread-safety: none (plain data).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/cuda/cuda_status.h"

namespace reflect::cuda {

enum class MemoryKind { kDevice, kPinnedHost };

template <typename T, MemoryKind kind>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  CudaBuffer(CudaBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer() { Free(); }

  // `count` elements; `what` names the buffer in the error (RESOURCE_EXHAUSTED when the memory is
  // not there, INVALID_ARGUMENT for a negative count). A count of 0 gives an empty buffer.
  static absl::StatusOr<CudaBuffer> Allocate(int64_t count, absl::string_view what) {
    if (count < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("allocating ", what, ": ", count, " elements"));
    }
    CudaBuffer buffer;
    if (count == 0) return buffer;
    const size_t bytes = static_cast<size_t>(count) * sizeof(T);
    void* data = nullptr;
    const cudaError_t error =
        kind == MemoryKind::kDevice ? cudaMalloc(&data, bytes) : cudaMallocHost(&data, bytes);
    if (error != cudaSuccess) {
      cudaGetLastError();  // a failed allocation must not surface later as a launch error
      return CudaStatus(error, absl::StrCat("allocating ", bytes, " bytes of ",
                                            kind == MemoryKind::kDevice ? "device" : "pinned host",
                                            " memory for ", what));
    }
    buffer.data_ = static_cast<T*>(data);
    buffer.size_ = count;
    return buffer;
  }

  T* data() const { return data_; }
  int64_t size() const { return size_; }
  int64_t bytes() const { return size_ * static_cast<int64_t>(sizeof(T)); }

 private:
  void Free() {
    if (data_ == nullptr) return;
    // Errors here come from an earlier failure (a sticky device error); nothing to do about them.
    if constexpr (kind == MemoryKind::kDevice) {
      cudaFree(data_);
    } else {
      cudaFreeHost(data_);
    }
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  int64_t size_ = 0;
};

template <typename T>
using DeviceBuffer = CudaBuffer<T, MemoryKind::kDevice>;
template <typename T>
using PinnedBuffer = CudaBuffer<T, MemoryKind::kPinnedHost>;

}  // namespace reflect::cuda
