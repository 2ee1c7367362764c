#include "worker/cpu/amx_matmul.h"

#include <immintrin.h>

#include <algorithm>

#include "worker/cpu/amx_tiles.h"
#include "worker/cpu/vector_math.h"

namespace reflect::cpu {
namespace {

// Tile registers: C tiles 0-3 ([row tile][group]), A tiles 4-5 (row tiles), B tiles 6-7 (groups).
constexpr int kTileRows = 16;
constexpr int kBlockRows = 2 * kTileRows;
// C of one block as stored from the tiles: [32 rows][32 columns] f32.
constexpr int kBlockStride = kAmxPanelColumns;
// A row group of this many bytes of bf16 activations stays in L2 while the panels stream past.
constexpr int64_t kGroupBytes = int64_t{1} << 20;
// A task streams consecutive panels of about this many bytes (fewer when there are few panels),
// so prefetching runs on across panel boundaries.
constexpr int64_t kTaskBytes = int64_t{256} << 10;
// The first block of each panel prefetches this many k-blocks (2 KB each) ahead in the task.
constexpr int64_t kPrefetchBlocks = 8;
// Below this many activation elements the bf16 conversion runs on the calling thread.
constexpr int64_t kParallelConvertElements = int64_t{1} << 16;

// Multiplies one block of up to 32 rows (two row tiles when kTwoRowTiles) by one panel:
// C = Σ_kb A[kb] · B[kb] over all k-blocks in increasing order, stored to `c`. With kPrefetch,
// prefetches the packed weights kPrefetchBlocks k-blocks ahead, but not past k-block
// `prefetch_limit` (counted from the panel's start; may reach into the following panels).
template <bool kTwoRowTiles, bool kPrefetch>
void MultiplyBlock(const uint16_t* activations, int64_t activation_stride_bytes,
                   const uint16_t* panel, int64_t k_blocks, int64_t prefetch_limit, float* c) {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (kTwoRowTiles) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const uint16_t* second_rows = activations + kTileRows * (activation_stride_bytes / 2);
  for (int64_t block = 0; block < k_blocks; ++block) {
    const uint16_t* weights = panel + block * 2 * kAmxTileElements;
    if constexpr (kPrefetch) {
      if (block + kPrefetchBlocks < prefetch_limit) {
        const char* ahead =
            reinterpret_cast<const char*>(weights + kPrefetchBlocks * 2 * kAmxTileElements);
#pragma GCC unroll 32
        for (int line = 0; line < 2 * kAmxTileElements * 2 / 64; ++line) {
          _mm_prefetch(ahead + line * 64, _MM_HINT_T0);
        }
      }
    }
    _tile_loadd(6, weights, 64);
    _tile_loadd(7, weights + kAmxTileElements, 64);
    _tile_loadd(4, activations + block * kAmxBlockDepth, activation_stride_bytes);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if constexpr (kTwoRowTiles) {
      _tile_loadd(5, second_rows + block * kAmxBlockDepth, activation_stride_bytes);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  constexpr int kStrideBytes = kBlockStride * 4;
  _tile_stored(0, c, kStrideBytes);
  _tile_stored(1, c + 16, kStrideBytes);
  if constexpr (kTwoRowTiles) {
    _tile_stored(2, c + kTileRows * kBlockStride, kStrideBytes);
    _tile_stored(3, c + kTileRows * kBlockStride + 16, kStrideBytes);
  }
}

// Writes the first `rows` rows of a block's C into the output of `panel`, as `mode` says.
void StoreBlock(const float* c, int rows, int64_t panel, const PackedMatrix& weight,
                MatmulOutput mode, float* output, int64_t output_stride) {
  const int64_t columns = weight.rows();
  if (mode == MatmulOutput::kSwiGlu) {
    // Group 0 holds 16 gate columns, group 1 the matching up columns.
    const int64_t column = panel * (kAmxPanelColumns / 2);
    const __mmask16 mask = FirstLanes(columns - column);
    for (int row = 0; row < rows; ++row) {
      const float* values = c + row * kBlockStride;
      const __m512 value =
          _mm512_mul_ps(Silu(_mm512_loadu_ps(values)), _mm512_loadu_ps(values + kLanes));
      _mm512_mask_storeu_ps(output + row * output_stride + column, mask, value);
    }
    return;
  }
  for (int row = 0; row < rows; ++row) {
    for (int group = 0; group < kAmxPanelColumns / kLanes; ++group) {
      const int64_t column = panel * kAmxPanelColumns + group * kLanes;
      if (column >= columns) break;
      const __mmask16 mask = FirstLanes(columns - column);
      float* destination = output + row * output_stride + column;
      __m512 value = _mm512_loadu_ps(c + row * kBlockStride + group * kLanes);
      if (mode == MatmulOutput::kAccumulate) {
        value = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, destination), value);
      }
      _mm512_mask_storeu_ps(destination, mask, value);
    }
  }
}

// Rounds row `row` of x to bf16 into `destination` (`stride` values; zero past K and for
// padding rows at or past `rows`).
void ConvertRow(const float* input, int64_t rows, int64_t input_stride, int64_t depth,
                int64_t stride, int64_t row, uint16_t* destination) {
  int64_t converted = 0;
  if (row < rows) {
    RoundToBf16(input + row * input_stride, depth, destination);
    converted = depth;
  }
  std::fill(destination + converted, destination + stride, uint16_t{0});
}

}  // namespace

void AmxMatmul(const float* input, int64_t rows, int64_t input_stride, const PackedMatrix& weight,
               MatmulOutput mode, float* output, int64_t output_stride, ThreadPool& pool,
               std::vector<uint16_t>& scratch) {
  if (rows <= 0) return;
  const int64_t depth = weight.columns();
  const int64_t k_blocks = weight.k_blocks();
  const int64_t k_padded = k_blocks * kAmxBlockDepth;
  // One spare cache line per row: a power-of-two row stride would put all 16 rows of an A tile
  // into the same L1 set.
  const int64_t stride = k_padded + 32;
  // Rows padded to whole A tiles with zero rows, so every tile load reads defined memory.
  const int64_t padded_rows = (rows + kTileRows - 1) / kTileRows * kTileRows;
  scratch.resize(static_cast<size_t>(padded_rows * stride));
  uint16_t* activations = scratch.data();
  if (rows * depth >= kParallelConvertElements) {
    pool.ParallelFor(padded_rows, [&](int64_t row, int) {
      ConvertRow(input, rows, input_stride, depth, stride, row, activations + row * stride);
    });
  } else {
    for (int64_t row = 0; row < padded_rows; ++row) {
      ConvertRow(input, rows, input_stride, depth, stride, row, activations + row * stride);
    }
  }

  const int64_t stride_bytes = stride * 2;
  const int64_t group_rows =
      std::max<int64_t>(kBlockRows, kGroupBytes / (k_padded * 2) / kBlockRows * kBlockRows);
  const int64_t num_groups = (rows + group_rows - 1) / group_rows;
  const int64_t num_panels = weight.num_panels();
  const int64_t panel_bytes = k_blocks * 2 * kAmxTileElements * 2;
  const int64_t panels_per_task = std::clamp<int64_t>(
      std::min(kTaskBytes / panel_bytes, num_panels / (4 * pool.num_threads())), 1, num_panels);
  const int64_t tasks_per_group = (num_panels + panels_per_task - 1) / panels_per_task;
  pool.ParallelFor(num_groups * tasks_per_group, [&](int64_t task, int) {
    ConfigureAmxTiles();
    const int64_t group = task / tasks_per_group;
    const int64_t first_panel = task % tasks_per_group * panels_per_task;
    const int64_t end_panel = std::min(num_panels, first_panel + panels_per_task);
    const int64_t group_end = std::min(rows, (group + 1) * group_rows);
    alignas(64) float c[kBlockRows * kBlockStride];
    for (int64_t panel = first_panel; panel < end_panel; ++panel) {
      const uint16_t* panel_weights = weight.AmxPanel(panel);
      const int64_t prefetch_limit = (end_panel - panel) * k_blocks;
      for (int64_t first_row = group * group_rows; first_row < group_end; first_row += kBlockRows) {
        const int block_rows =
            static_cast<int>(std::min<int64_t>(kBlockRows, group_end - first_row));
        const uint16_t* block = activations + first_row * stride;
        // Later blocks find the panel in L2.
        const bool first_block = first_row == group * group_rows;
        if (block_rows > kTileRows) {
          if (first_block) {
            MultiplyBlock<true, true>(block, stride_bytes, panel_weights, k_blocks, prefetch_limit,
                                      c);
          } else {
            MultiplyBlock<true, false>(block, stride_bytes, panel_weights, k_blocks, prefetch_limit,
                                       c);
          }
        } else {
          // A single row is loaded with stride 0: every tile row is a copy of it (rows past
          // block_rows are discarded either way), and the A tile stays one cache line in L1.
          const int64_t tile_stride = block_rows == 1 ? 0 : stride_bytes;
          if (first_block) {
            MultiplyBlock<false, true>(block, tile_stride, panel_weights, k_blocks, prefetch_limit,
                                       c);
          } else {
            MultiplyBlock<false, false>(block, tile_stride, panel_weights, k_blocks, prefetch_limit,
                                        c);
          }
        }
        StoreBlock(c, block_rows, panel, weight, mode, output + first_row * output_stride,
                   output_stride);
      }
    }
  });
}

}  // namespace reflect::cpu
