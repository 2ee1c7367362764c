#include "worker/cpu/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "worker/cpu/amx_matmul.h"
#include "worker/cpu/vector_math.h"

namespace reflect::cpu {
namespace {

// Rows per register tile: 6 rows × 4 column groups = 24 accumulators of the 32 zmm registers.
constexpr int kTileRows = 6;

struct Tile {
  __m512 accumulator[kTileRows][kGroupsPerPanel];
};

template <int kRows>
inline void Bf16Tile(const uint16_t* input, int64_t input_stride, const uint16_t* panel,
                     int64_t k_pairs, Tile& tile) {
  __m512 accumulator[kRows][kGroupsPerPanel];
#pragma GCC unroll 8
  for (int row = 0; row < kRows; ++row) {
#pragma GCC unroll 4
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      accumulator[row][group] = _mm512_setzero_ps();
    }
  }
  for (int64_t pair = 0; pair < k_pairs; ++pair) {
    const uint16_t* weights = panel + pair * kPanelColumns * 2;
    __m512bh weight[kGroupsPerPanel];
#pragma GCC unroll 4
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      weight[group] = reinterpret_cast<__m512bh>(_mm512_load_si512(weights + group * 32));
    }
#pragma GCC unroll 8
    for (int row = 0; row < kRows; ++row) {
      int32_t pair_bits;
      std::memcpy(&pair_bits, input + row * input_stride + pair * 2, 4);
      const __m512bh activation = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair_bits));
#pragma GCC unroll 4
      for (int group = 0; group < kGroupsPerPanel; ++group) {
        accumulator[row][group] =
            _mm512_dpbf16_ps(accumulator[row][group], activation, weight[group]);
      }
    }
  }
#pragma GCC unroll 8
  for (int row = 0; row < kRows; ++row) {
#pragma GCC unroll 4
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      tile.accumulator[row][group] = accumulator[row][group];
    }
  }
}

template <int kRows>
inline void F32Tile(const float* input, int64_t input_stride, const float* panel, int64_t k_steps,
                    Tile& tile) {
  __m512 accumulator[kRows][kGroupsPerPanel];
#pragma GCC unroll 8
  for (int row = 0; row < kRows; ++row) {
#pragma GCC unroll 4
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      accumulator[row][group] = _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < k_steps; ++k) {
    const float* weights = panel + k * kPanelColumns;
    __m512 weight[kGroupsPerPanel];
#pragma GCC unroll 4
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      weight[group] = _mm512_load_ps(weights + group * 16);
    }
#pragma GCC unroll 8
    for (int row = 0; row < kRows; ++row) {
      const __m512 activation = _mm512_set1_ps(input[row * input_stride + k]);
#pragma GCC unroll 4
      for (int group = 0; group < kGroupsPerPanel; ++group) {
        accumulator[row][group] =
            _mm512_fmadd_ps(activation, weight[group], accumulator[row][group]);
      }
    }
  }
#pragma GCC unroll 8
  for (int row = 0; row < kRows; ++row) {
#pragma GCC unroll 4
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      tile.accumulator[row][group] = accumulator[row][group];
    }
  }
}

template <int kRows>
void ComputeTile(const PackedMatrix& weight, const void* input, int64_t input_stride, int64_t panel,
                 Tile& tile) {
  if (weight.type() == PackedType::kBF16) {
    Bf16Tile<kRows>(static_cast<const uint16_t*>(input), input_stride, weight.Bf16Panel(panel),
                    weight.k_steps(), tile);
  } else {
    F32Tile<kRows>(static_cast<const float*>(input), input_stride, weight.F32Panel(panel),
                   weight.k_steps(), tile);
  }
}

void ComputeTileRows(int rows, const PackedMatrix& weight, const void* input, int64_t input_stride,
                     int64_t panel, Tile& tile) {
  switch (rows) {
    case 1:
      return ComputeTile<1>(weight, input, input_stride, panel, tile);
    case 2:
      return ComputeTile<2>(weight, input, input_stride, panel, tile);
    case 3:
      return ComputeTile<3>(weight, input, input_stride, panel, tile);
    case 4:
      return ComputeTile<4>(weight, input, input_stride, panel, tile);
    case 5:
      return ComputeTile<5>(weight, input, input_stride, panel, tile);
    default:
      return ComputeTile<6>(weight, input, input_stride, panel, tile);
  }
}

void StoreTile(const Tile& tile, int rows, int64_t panel, const PackedMatrix& weight,
               MatmulOutput mode, float* output, int64_t output_stride) {
  const int64_t columns = weight.rows();
  if (mode == MatmulOutput::kSwiGlu) {
    constexpr int kHalfGroups = kGroupsPerPanel / 2;
    for (int row = 0; row < rows; ++row) {
      for (int group = 0; group < kHalfGroups; ++group) {
        const int64_t column = panel * (kPanelColumns / 2) + group * kLanes;
        if (column >= columns) break;
        const __m512 value = _mm512_mul_ps(Silu(tile.accumulator[row][group]),
                                           tile.accumulator[row][group + kHalfGroups]);
        _mm512_mask_storeu_ps(output + row * output_stride + column, FirstLanes(columns - column),
                              value);
      }
    }
    return;
  }
  for (int row = 0; row < rows; ++row) {
    for (int group = 0; group < kGroupsPerPanel; ++group) {
      const int64_t column = panel * kPanelColumns + group * kLanes;
      if (column >= columns) break;
      const __mmask16 mask = FirstLanes(columns - column);
      float* destination = output + row * output_stride + column;
      __m512 value = tile.accumulator[row][group];
      if (mode == MatmulOutput::kAccumulate) {
        value = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, destination), value);
      }
      _mm512_mask_storeu_ps(destination, mask, value);
    }
  }
}

}  // namespace

void Matmul(const float* input, int64_t rows, int64_t input_stride, const PackedMatrix& weight,
            MatmulOutput mode, float* output, int64_t output_stride, ThreadPool& pool,
            std::vector<uint16_t>& scratch) {
  if (weight.type() == PackedType::kBF16Amx) {
    AmxMatmul(input, rows, input_stride, weight, mode, output, output_stride, pool, scratch);
    return;
  }
  if (rows <= 0) return;
  const void* prepared = input;
  int64_t prepared_stride = input_stride;
  if (weight.type() == PackedType::kBF16) {
    // vdpbf16ps takes bf16 activations: each element rounded on its own, once per matmul.
    prepared_stride = weight.k_steps() * 2;
    scratch.resize(static_cast<size_t>(rows * prepared_stride));
    for (int64_t row = 0; row < rows; ++row) {
      uint16_t* destination = scratch.data() + row * prepared_stride;
      RoundToBf16(input + row * input_stride, weight.columns(), destination);
      // An odd K leaves half a pair; its weight is zero, its activation must not be NaN.
      if (weight.columns() % 2 != 0) destination[weight.columns()] = 0;
    }
    prepared = scratch.data();
  }
  const size_t element_bytes = weight.type() == PackedType::kBF16 ? 2 : 4;
  pool.ParallelFor(weight.num_panels(), [&](int64_t panel, int) {
    Tile tile;
    for (int64_t first_row = 0; first_row < rows; first_row += kTileRows) {
      const int tile_rows = static_cast<int>(std::min<int64_t>(kTileRows, rows - first_row));
      const void* tile_input =
          static_cast<const std::byte*>(prepared) + first_row * prepared_stride * element_bytes;
      ComputeTileRows(tile_rows, weight, tile_input, prepared_stride, panel, tile);
      StoreTile(tile, tile_rows, panel, weight, mode, output + first_row * output_stride,
                output_stride);
    }
  });
}

}  // namespace reflect::cpu
