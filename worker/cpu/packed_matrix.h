// PackedMatrix: a Linear weight W [N, K] repacked once, at load, into the panel layout the
// matmul kernels stream (see docs/cpu-backend.md).
//
// Output columns are grouped into panels of P columns (16-lane groups). Within a panel:
//   kBF16 (P = 64):    [ceil(K/2) k-pairs][64 columns][2]  — VNNI pairs for vdpbf16ps
//   kF32 (P = 64):     [K][64 columns]
//   kBF16Amx (P = 32): [ceil(K/32) k-blocks][2 groups][16 k-pairs][16 columns][2] — each
//                      (k-block, group) is one 1 KB tdpbf16ps B tile, in the order the AMX
//                      kernel streams them
// so one k step of a panel is consecutive memory. Columns past N and k past K are zero.
// bf16 checkpoints stay bf16 (2 bytes per weight), packed for the Bf16Kernel asked for (one
// copy); f32 stays f32; f16 becomes f32.
//
// Layouts: PackRows packs rows in order. PackGateUp packs two matrices G, U [N, K] so panel p
// holds G rows [hp, hp + h) then U rows [hp, hp + h), h = P / 2: the SwiGLU epilogue finds a
// gate column and its up column in the same tile.
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
#include "worker/cpu/amx_tiles.h"
#include "worker/cpu/thread_pool.h"

namespace reflect::cpu {

inline constexpr int kPanelColumns = 64;  // kF32, kBF16
inline constexpr int kGroupsPerPanel = kPanelColumns / 16;
inline constexpr int kAmxPanelColumns = 32;   // kBF16Amx
inline constexpr int kAmxBlockDepth = 32;     // k per B tile
inline constexpr int kAmxTileElements = 512;  // bf16 values in one B tile (16 pairs × 16 × 2)

enum class PackedType { kF32, kBF16, kBF16Amx };

class PackedMatrix {
 public:
  PackedMatrix() = default;

  // Packs the row-wise concatenation of `parts` (each [n_i, columns]), e.g. q, k, v. `kernel`
  // picks the bf16 layout (ignored for f32 / f16 sources); kAmx needs AmxUsable(), else
  // FAILED_PRECONDITION.
  static absl::StatusOr<PackedMatrix> PackRows(std::span<const TensorView> parts, int64_t columns,
                                               ThreadPool& pool,
                                               Bf16Kernel kernel = SelectedBf16Kernel());
  // Packs gate and up ([rows, columns] each) interleaved for the fused SwiGLU matmul.
  static absl::StatusOr<PackedMatrix> PackGateUp(const TensorView& gate, const TensorView& up,
                                                 int64_t columns, ThreadPool& pool,
                                                 Bf16Kernel kernel = SelectedBf16Kernel());

  PackedType type() const { return type_; }
  bool gate_up() const { return gate_up_; }
  // N: logical output rows of W (for kGateUp: rows of gate, = columns of the SwiGLU output).
  int64_t rows() const { return rows_; }
  int64_t columns() const { return columns_; }  // K
  int64_t num_panels() const { return num_panels_; }
  // kF32 / kBF16: k steps of a panel (K, or K-pairs for bf16), each 64 resp. 128 elements.
  int64_t k_steps() const { return type_ == PackedType::kBF16 ? (columns_ + 1) / 2 : columns_; }
  // kBF16Amx: k-blocks of 32 per panel, each two B tiles.
  int64_t k_blocks() const { return (columns_ + kAmxBlockDepth - 1) / kAmxBlockDepth; }

  const float* F32Panel(int64_t panel) const {
    return buffer_.As<float>() + panel * k_steps() * kPanelColumns;
  }
  const uint16_t* Bf16Panel(int64_t panel) const {
    return buffer_.As<uint16_t>() + panel * k_steps() * kPanelColumns * 2;
  }
  const uint16_t* AmxPanel(int64_t panel) const {
    return buffer_.As<uint16_t>() + panel * k_blocks() * 2 * kAmxTileElements;
  }
  size_t bytes() const { return buffer_.bytes(); }

 private:
  // Packs source rows: `panel_rows[panel * P + c]` is the W row feeding packed column c of
  // that panel, or null for zero padding; P = PanelColumns(type).
  static absl::StatusOr<PackedMatrix> Pack(int64_t rows, int64_t columns, DType source_dtype,
                                           PackedType type,
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
