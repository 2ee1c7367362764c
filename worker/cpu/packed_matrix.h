// PackedMatrix: a Linear weight W [N, K] repacked once, at load, into the panel layout the
// matmul kernels stream (see docs/cpu-backend.md).
//
// Output columns are grouped into panels of 64 (four 16-lane groups). Within a panel:
//   bf16: [ceil(K/2) k-pairs][64 columns][2]  — VNNI pairs for vdpbf16ps
//   f32:  [K][64 columns]
// so one k step of a panel is four consecutive zmm loads. Columns past N and the odd k past K
// are zero. bf16 checkpoints stay bf16 (2 bytes per weight); f32 stays f32; f16 becomes f32.
//
// Layouts: kRows packs rows in order. kGateUp packs two matrices G, U [N, K] so panel p holds
// G rows [32p, 32p + 32) then U rows [32p, 32p + 32): the SwiGLU epilogue finds a gate column
// and its up column in the same tile.
//
// Ownership: owns its memory (the source views may die after Pack). Immutable afterwards;
// safe to read from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/checkpoint.h"
#include "worker/cpu/aligned_buffer.h"
#include "worker/cpu/thread_pool.h"

namespace reflect::cpu {

inline constexpr int kPanelColumns = 64;
inline constexpr int kGroupsPerPanel = kPanelColumns / 16;

enum class PackedType { kF32, kBF16 };

class PackedMatrix {
 public:
  PackedMatrix() = default;

  // Packs the row-wise concatenation of `parts` (each [n_i, columns]), e.g. q, k, v.
  static absl::StatusOr<PackedMatrix> PackRows(std::span<const TensorView> parts, int64_t columns,
                                               ThreadPool& pool);
  // Packs gate and up ([rows, columns] each) interleaved for the fused SwiGLU matmul.
  static absl::StatusOr<PackedMatrix> PackGateUp(const TensorView& gate, const TensorView& up,
                                                 int64_t columns, ThreadPool& pool);

  PackedType type() const { return type_; }
  bool gate_up() const { return gate_up_; }
  // N: logical output rows of W (for kGateUp: rows of gate, = columns of the SwiGLU output).
  int64_t rows() const { return rows_; }
  int64_t columns() const { return columns_; }  // K
  int64_t num_panels() const { return num_panels_; }
  // Elements of one panel's k step: 64 (f32) or 128 (bf16, a k-pair).
  int64_t k_steps() const { return type_ == PackedType::kBF16 ? (columns_ + 1) / 2 : columns_; }

  const float* F32Panel(int64_t panel) const {
    return buffer_.As<float>() + panel * k_steps() * kPanelColumns;
  }
  const uint16_t* Bf16Panel(int64_t panel) const {
    return buffer_.As<uint16_t>() + panel * k_steps() * kPanelColumns * 2;
  }
  size_t bytes() const { return buffer_.bytes(); }

 private:
  // Packs source rows: `panel_rows[panel * 64 + c]` is the W row feeding packed column c of
  // that panel, or null for zero padding.
  static absl::StatusOr<PackedMatrix> Pack(int64_t rows, int64_t columns, DType source_dtype,
                                           const std::vector<const std::byte*>& panel_rows,
                                           ThreadPool& pool);

  PackedType type_ = PackedType::kF32;
  bool gate_up_ = false;
  int64_t rows_ = 0;
  int64_t columns_ = 0;
  int64_t num_panels_ = 0;
  AlignedBuffer buffer_;
};

}  // namespace reflect::cpu
