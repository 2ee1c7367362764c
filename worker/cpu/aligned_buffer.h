// AlignedBuffer: a zero-filled, page-aligned array from an anonymous mapping.
//
// Pages are committed lazily on first touch, so a large KV pool costs memory only where it is
// used. Move-only; the mapping is released on destruction.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace reflect::cpu {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Maps `bytes` zeroed bytes; RESOURCE_EXHAUSTED when the system refuses.
  static absl::StatusOr<AlignedBuffer> Allocate(size_t bytes);

  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();

  template <typename T>
  T* As() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* As() const {
    return static_cast<const T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Release();

  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace reflect::cpu
