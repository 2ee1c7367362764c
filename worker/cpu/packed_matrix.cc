#include "worker/cpu/packed_matrix.h"

#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "common/dtype.h"
#include "common/status_macros.h"

namespace reflect::cpu {
namespace {

absl::Status CheckMatrix(const TensorView& view, int64_t columns, const std::string& what) {
  if (view.data == nullptr || view.shape.size() != 2 || view.shape[1] != columns ||
      view.shape[0] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: expected a [rows, %d] matrix with data", what, columns));
  }
  return absl::OkStatus();
}

float SourceValue(const std::byte* row, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::kF32: {
      float value;
      std::memcpy(&value, row + index * 4, 4);
      return value;
    }
    case DType::kF16: {
      uint16_t bits;
      std::memcpy(&bits, row + index * 2, 2);
      return F16ToF32(bits);
    }
    case DType::kBF16: {
      uint16_t bits;
      std::memcpy(&bits, row + index * 2, 2);
      return Bf16ToF32(bits);
    }
  }
  return 0.0f;
}

// The packed type for `dtype` sources under `kernel`.
absl::StatusOr<PackedType> TypeFor(DType dtype, Bf16Kernel kernel) {
  if (dtype != DType::kBF16) return PackedType::kF32;
  if (kernel == Bf16Kernel::kAvx512) return PackedType::kBF16;
  if (!AmxUsable()) {
    return absl::FailedPreconditionError("AMX packing asked for, but AMX bf16 is not usable");
  }
  return PackedType::kBF16Amx;
}

int PanelColumns(PackedType type) {
  return type == PackedType::kBF16Amx ? kAmxPanelColumns : kPanelColumns;
}

}  // namespace

absl::StatusOr<PackedMatrix> PackedMatrix::Pack(int64_t rows, int64_t columns, DType source_dtype,
                                                PackedType type,
                                                const std::vector<const std::byte*>& panel_rows,
                                                ThreadPool& pool) {
  PackedMatrix matrix;
  matrix.type_ = type;
  matrix.rows_ = rows;
  matrix.columns_ = columns;
  const int panel_columns = PanelColumns(type);
  matrix.num_panels_ = static_cast<int64_t>(panel_rows.size()) / panel_columns;
  size_t panel_elements = 0;
  switch (type) {
    case PackedType::kF32:
      panel_elements = static_cast<size_t>(matrix.k_steps()) * kPanelColumns;
      break;
    case PackedType::kBF16:
      panel_elements = static_cast<size_t>(matrix.k_steps()) * kPanelColumns * 2;
      break;
    case PackedType::kBF16Amx:
      panel_elements = static_cast<size_t>(matrix.k_blocks()) * 2 * kAmxTileElements;
      break;
  }
  const size_t element_bytes = type == PackedType::kF32 ? 4 : 2;
  REFLECT_ASSIGN_OR_RETURN(
      matrix.buffer_, AlignedBuffer::Allocate(panel_elements * element_bytes * matrix.num_panels_));
  pool.ParallelFor(matrix.num_panels_, [&](int64_t panel, int) {
    for (int column = 0; column < panel_columns; ++column) {
      const std::byte* row = panel_rows[panel * panel_columns + column];
      if (row == nullptr) continue;  // the buffer is already zero
      if (type == PackedType::kBF16Amx) {
        // Tile (k-block, group), row = k-pair within the block, lane = column within the group.
        uint16_t* destination = matrix.buffer_.As<uint16_t>() + panel * panel_elements +
                                (column / 16) * kAmxTileElements + (column % 16) * 2;
        for (int64_t k = 0; k < columns; ++k) {
          const int64_t block = k / kAmxBlockDepth, pair = (k % kAmxBlockDepth) / 2;
          std::memcpy(destination + block * 2 * kAmxTileElements + pair * 32 + (k % 2), row + k * 2,
                      2);
        }
      } else if (type == PackedType::kBF16) {
        uint16_t* destination = matrix.buffer_.As<uint16_t>() + panel * panel_elements + column * 2;
        for (int64_t k = 0; k < columns; ++k) {
          std::memcpy(destination + (k / 2) * kPanelColumns * 2 + (k % 2), row + k * 2, 2);
        }
      } else {
        float* destination = matrix.buffer_.As<float>() + panel * panel_elements + column;
        for (int64_t k = 0; k < columns; ++k) {
          destination[k * kPanelColumns] = SourceValue(row, source_dtype, k);
        }
      }
    }
  });
  return matrix;
}

absl::StatusOr<PackedMatrix> PackedMatrix::PackRows(std::span<const TensorView> parts,
                                                    int64_t columns, ThreadPool& pool,
                                                    Bf16Kernel kernel) {
  if (parts.empty()) return absl::InvalidArgumentError("PackRows: no matrices");
  int64_t rows = 0;
  for (const TensorView& part : parts) {
    REFLECT_RETURN_IF_ERROR(CheckMatrix(part, columns, "PackRows"));
    if (part.dtype != parts[0].dtype) {
      return absl::InvalidArgumentError("PackRows: matrices of different dtypes");
    }
    rows += part.shape[0];
  }
  REFLECT_ASSIGN_OR_RETURN(const PackedType type, TypeFor(parts[0].dtype, kernel));
  const int panel_columns = PanelColumns(type);
  const int64_t num_panels = (rows + panel_columns - 1) / panel_columns;
  std::vector<const std::byte*> panel_rows(num_panels * panel_columns, nullptr);
  const size_t row_bytes = static_cast<size_t>(columns) * DTypeSize(parts[0].dtype);
  int64_t row = 0;
  for (const TensorView& part : parts) {
    for (int64_t index = 0; index < part.shape[0]; ++index) {
      panel_rows[row++] = part.data + index * row_bytes;
    }
  }
  return Pack(rows, columns, parts[0].dtype, type, panel_rows, pool);
}

absl::StatusOr<PackedMatrix> PackedMatrix::PackGateUp(const TensorView& gate, const TensorView& up,
                                                      int64_t columns, ThreadPool& pool,
                                                      Bf16Kernel kernel) {
  REFLECT_RETURN_IF_ERROR(CheckMatrix(gate, columns, "gate_proj"));
  REFLECT_RETURN_IF_ERROR(CheckMatrix(up, columns, "up_proj"));
  if (gate.shape != up.shape || gate.dtype != up.dtype) {
    return absl::InvalidArgumentError("gate_proj and up_proj differ in shape or dtype");
  }
  REFLECT_ASSIGN_OR_RETURN(const PackedType type, TypeFor(gate.dtype, kernel));
  const int panel_columns = PanelColumns(type);
  const int half = panel_columns / 2;
  const int64_t rows = gate.shape[0];
  const int64_t num_panels = (rows + half - 1) / half;
  std::vector<const std::byte*> panel_rows(num_panels * panel_columns, nullptr);
  const size_t row_bytes = static_cast<size_t>(columns) * DTypeSize(gate.dtype);
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t panel = row / half;
    const int64_t offset = row % half;
    panel_rows[panel * panel_columns + offset] = gate.data + row * row_bytes;
    panel_rows[panel * panel_columns + half + offset] = up.data + row * row_bytes;
  }
  REFLECT_ASSIGN_OR_RETURN(PackedMatrix matrix,
                           Pack(rows, columns, gate.dtype, type, panel_rows, pool));
  matrix.gate_up_ = true;
  return matrix;
}

}  // namespace reflect::cpu
