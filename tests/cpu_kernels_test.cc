// CPU kernels against naive scalar references at odd sizes, and the matmul's row invariance,
// for both bf16 kernels (vdpbf16ps and AMX; AMX cases skip where the machine lacks it).
//
// Tolerances: f32 matmul 1e-5 · Σ|x·w| (f32 accumulation of K products vs f64); bf16 matmul the
// same bound against a reference that rounds x to bf16 as the kernel does (bf16 products are
// exact in f32, so only accumulation differs); RMSNorm / RoPE 1e-5 relative; attention 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "worker/cpu/amx_tiles.h"
#include "worker/cpu/matmul.h"
#include "worker/cpu/packed_matrix.h"
#include "worker/cpu/paged_attention.h"
#include "worker/cpu/paged_kv_cache.h"
#include "worker/cpu/rms_norm.h"
#include "worker/cpu/rope.h"
#include "worker/cpu/thread_pool.h"

namespace reflect::cpu {
namespace {

std::vector<float> RandomFloats(int64_t count, uint32_t seed, float spread = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(-spread, spread);
  std::vector<float> values(count);
  for (float& value : values) value = distribution(generator);
  return values;
}

// A [rows, columns] weight in `dtype`, with its values as seen by the kernel.
struct Weight {
  std::vector<std::byte> storage;
  std::vector<float> values;
  TensorView view;
};

Weight MakeWeight(int64_t rows, int64_t columns, DType dtype, uint32_t seed) {
  Weight weight;
  weight.values = RandomFloats(rows * columns, seed);
  weight.storage.resize(rows * columns * DTypeSize(dtype));
  for (int64_t index = 0; index < rows * columns; ++index) {
    if (dtype == DType::kBF16) {
      const uint16_t bits = F32ToBf16(weight.values[index]);
      weight.values[index] = Bf16ToF32(bits);
      std::memcpy(weight.storage.data() + index * 2, &bits, 2);
    } else if (dtype == DType::kF16) {
      const uint16_t bits = F32ToF16(weight.values[index]);
      weight.values[index] = F16ToF32(bits);
      std::memcpy(weight.storage.data() + index * 2, &bits, 2);
    } else {
      std::memcpy(weight.storage.data() + index * 4, &weight.values[index], 4);
    }
  }
  weight.view.dtype = dtype;
  weight.view.shape = {rows, columns};
  weight.view.data = weight.storage.data();
  return weight;
}

struct Shape {
  int64_t rows;     // M
  int64_t outputs;  // N
  int64_t depth;    // K
};

// A weight dtype and the kernel bf16 weights are packed for.
struct MatmulCase {
  DType dtype;
  Bf16Kernel kernel;
};

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {
 protected:
  void SetUp() override {
    if (GetParam().kernel == Bf16Kernel::kAmx && !AmxUsable()) GTEST_SKIP() << "no AMX bf16";
  }
  DType dtype() const { return GetParam().dtype; }
  Bf16Kernel kernel() const { return GetParam().kernel; }
};

TEST_P(MatmulTest, MatchesScalarReferenceAtOddSizes) {
  ThreadPool pool(3);
  std::vector<uint16_t> scratch;
  const bool bf16 = dtype() == DType::kBF16;
  for (const Shape shape : {Shape{1, 1, 1}, Shape{5, 17, 33}, Shape{7, 130, 67}, Shape{13, 64, 128},
                            Shape{6, 200, 2}, Shape{40, 33, 96}}) {
    const Weight weight = MakeWeight(shape.outputs, shape.depth, dtype(), 1);
    auto packed = PackedMatrix::PackRows(std::span<const TensorView>(&weight.view, 1), shape.depth,
                                         pool, kernel());
    ASSERT_TRUE(packed.ok()) << packed.status();
    const std::vector<float> input = RandomFloats(shape.rows * shape.depth, 2);
    const std::vector<float> residual = RandomFloats(shape.rows * shape.outputs, 3);
    std::vector<float> stored(shape.rows * shape.outputs, 0.0f);
    std::vector<float> accumulated = residual;
    Matmul(input.data(), shape.rows, shape.depth, *packed, MatmulOutput::kStore, stored.data(),
           shape.outputs, pool, scratch);
    Matmul(input.data(), shape.rows, shape.depth, *packed, MatmulOutput::kAccumulate,
           accumulated.data(), shape.outputs, pool, scratch);
    for (int64_t row = 0; row < shape.rows; ++row) {
      for (int64_t column = 0; column < shape.outputs; ++column) {
        double sum = 0.0;
        double magnitude = 0.0;
        for (int64_t k = 0; k < shape.depth; ++k) {
          float x = input[row * shape.depth + k];
          if (bf16) x = Bf16ToF32(F32ToBf16(x));
          const double product = double{x} * weight.values[column * shape.depth + k];
          sum += product;
          magnitude += std::abs(product);
        }
        const int64_t index = row * shape.outputs + column;
        EXPECT_NEAR(stored[index], sum, 1e-5 * magnitude + 1e-7);
        EXPECT_NEAR(accumulated[index], sum + residual[index], 1e-5 * magnitude + 1e-6);
      }
    }
  }
}

TEST_P(MatmulTest, SwiGluMatchesReference) {
  ThreadPool pool(2);
  std::vector<uint16_t> scratch;
  const int64_t rows = 9, intermediate = 45, depth = 31;
  const Weight gate = MakeWeight(intermediate, depth, dtype(), 4);
  const Weight up = MakeWeight(intermediate, depth, dtype(), 5);
  auto packed = PackedMatrix::PackGateUp(gate.view, up.view, depth, pool, kernel());
  ASSERT_TRUE(packed.ok()) << packed.status();
  const std::vector<float> input = RandomFloats(rows * depth, 6);
  std::vector<float> output(rows * intermediate);
  Matmul(input.data(), rows, depth, *packed, MatmulOutput::kSwiGlu, output.data(), intermediate,
         pool, scratch);
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t column = 0; column < intermediate; ++column) {
      double gate_sum = 0.0, up_sum = 0.0;
      for (int64_t k = 0; k < depth; ++k) {
        float x = input[row * depth + k];
        if (dtype() == DType::kBF16) x = Bf16ToF32(F32ToBf16(x));
        gate_sum += double{x} * gate.values[column * depth + k];
        up_sum += double{x} * up.values[column * depth + k];
      }
      const double expected = gate_sum / (1.0 + std::exp(-gate_sum)) * up_sum;
      EXPECT_NEAR(output[row * intermediate + column], expected, 1e-4 * (1.0 + std::abs(expected)));
    }
  }
}

TEST_P(MatmulTest, RowsAreBitIdenticalWhateverTheBatchAndThreads) {
  const int64_t rows = 37, outputs = 150, depth = 75;
  const Weight weight = MakeWeight(outputs, depth, dtype(), 7);
  const std::vector<float> input = RandomFloats(rows * depth, 8);
  std::vector<float> full(rows * outputs);
  std::vector<uint16_t> scratch;
  {
    ThreadPool pool(1);
    auto packed =
        PackedMatrix::PackRows(std::span<const TensorView>(&weight.view, 1), depth, pool, kernel());
    ASSERT_TRUE(packed.ok());
    Matmul(input.data(), rows, depth, *packed, MatmulOutput::kStore, full.data(), outputs, pool,
           scratch);
  }
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    auto packed =
        PackedMatrix::PackRows(std::span<const TensorView>(&weight.view, 1), depth, pool, kernel());
    ASSERT_TRUE(packed.ok());
    // Every (first row, row count) window, including ones that cut register tiles.
    for (int64_t first = 0; first < rows; first += 5) {
      for (int64_t count : {1, 2, 6, 7, 13}) {
        const int64_t used = std::min(count, rows - first);
        std::vector<float> part(used * outputs);
        Matmul(input.data() + first * depth, used, depth, *packed, MatmulOutput::kStore,
               part.data(), outputs, pool, scratch);
        EXPECT_EQ(
            std::memcmp(part.data(), full.data() + first * outputs, part.size() * sizeof(float)), 0)
            << "threads " << threads << " rows " << first << "+" << used;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatmulTest,
                         ::testing::Values(MatmulCase{DType::kF32, Bf16Kernel::kAvx512},
                                           MatmulCase{DType::kF16, Bf16Kernel::kAvx512},
                                           MatmulCase{DType::kBF16, Bf16Kernel::kAvx512},
                                           MatmulCase{DType::kBF16, Bf16Kernel::kAmx}),
                         [](const ::testing::TestParamInfo<MatmulCase>& info) {
                           const char* dtype = info.param.dtype == DType::kF32   ? "F32"
                                               : info.param.dtype == DType::kF16 ? "F16"
                                                                                 : "BF16";
                           return std::string(dtype) +
                                  (info.param.kernel == Bf16Kernel::kAmx ? "Amx" : "");
                         });

// AMX: every batch size 1..40 and 256, at random row windows of a 256-row batch, for the three
// epilogues, with 1-3 threads: each row's bits equal those it gets in the full batch. K and N are
// not multiples of the 32-wide tiles, so k-block and column tails are exercised too.
TEST(AmxMatmulTest, RowWindowsAreBitIdenticalForEveryBatchSize) {
  if (!AmxUsable()) GTEST_SKIP() << "no AMX bf16";
  const int64_t rows = 256, outputs = 70, depth = 333;
  const Weight weight = MakeWeight(outputs, depth, DType::kBF16, 16);
  const Weight gate = MakeWeight(outputs, depth, DType::kBF16, 17);
  const Weight up = MakeWeight(outputs, depth, DType::kBF16, 18);
  const std::vector<float> input = RandomFloats(rows * depth, 19);
  const std::vector<float> residual = RandomFloats(rows * outputs, 20);
  std::vector<uint16_t> scratch;
  ThreadPool pool(2);
  auto packed = PackedMatrix::PackRows(std::span<const TensorView>(&weight.view, 1), depth, pool,
                                       Bf16Kernel::kAmx);
  auto gate_up = PackedMatrix::PackGateUp(gate.view, up.view, depth, pool, Bf16Kernel::kAmx);
  ASSERT_TRUE(packed.ok() && gate_up.ok());
  ASSERT_EQ(packed->type(), PackedType::kBF16Amx);
  struct Mode {
    MatmulOutput output;
    const PackedMatrix* weight;
  };
  const Mode modes[] = {{MatmulOutput::kStore, &*packed},
                        {MatmulOutput::kAccumulate, &*packed},
                        {MatmulOutput::kSwiGlu, &*gate_up}};
  std::mt19937 generator(21);
  for (const Mode& mode : modes) {
    std::vector<float> full = residual;
    Matmul(input.data(), rows, depth, *mode.weight, mode.output, full.data(), outputs, pool,
           scratch);
    std::vector<int64_t> counts(40);
    std::iota(counts.begin(), counts.end(), 1);
    counts.push_back(rows);
    for (const int64_t count : counts) {
      ThreadPool window_pool(static_cast<int>(count % 3) + 1);
      const int64_t first = std::uniform_int_distribution<int64_t>(0, rows - count)(generator);
      std::vector<float> part(residual.begin() + first * outputs,
                              residual.begin() + (first + count) * outputs);
      Matmul(input.data() + first * depth, count, depth, *mode.weight, mode.output, part.data(),
             outputs, window_pool, scratch);
      EXPECT_EQ(
          std::memcmp(part.data(), full.data() + first * outputs, part.size() * sizeof(float)), 0)
          << "mode " << static_cast<int>(mode.output) << " rows " << first << "+" << count;
    }
  }
}

TEST(RmsNormTest, MatchesReference) {
  for (int64_t size : {1, 15, 16, 77}) {
    const std::vector<float> input = RandomFloats(size, 9, 3.0f);
    const std::vector<float> weight = RandomFloats(size, 10);
    std::vector<float> output(size);
    RmsNormRow(input.data(), weight.data(), size, 1e-5f, output.data());
    double squares = 0.0;
    for (float value : input) squares += double{value} * value;
    const double scale = 1.0 / std::sqrt(squares / size + 1e-5);
    for (int64_t index = 0; index < size; ++index) {
      const double expected = input[index] * scale * weight[index];
      EXPECT_NEAR(output[index], expected, 1e-5 * (1.0 + std::abs(expected)));
    }
  }
}

TEST(RopeTest, MatchesLlama3ScaledReference) {
  ModelConfig config;
  config.head_dim = 64;
  config.rope_theta = 500000.0;
  config.rope_scaling = Llama3RopeScaling{32.0, 1.0, 4.0, 8192};
  const Rope rope(config);
  for (int64_t position : {0, 1, 17, 1000, 9000}) {
    std::vector<float> head = RandomFloats(64, 11);
    const std::vector<float> original = head;
    std::vector<float> angles(64);
    rope.Angles(position, angles.data());
    rope.Rotate(angles.data(), head.data());
    for (int64_t index = 0; index < 32; ++index) {
      double frequency = 1.0 / std::pow(500000.0, 2.0 * index / 64.0);
      const double wavelength = 2.0 * M_PI / frequency;
      if (wavelength > 8192.0) {
        frequency /= 32.0;
      } else if (wavelength >= 2048.0) {
        const double smooth = (8192.0 / wavelength - 1.0) / 3.0;
        frequency = (1.0 - smooth) * frequency / 32.0 + smooth * frequency;
      }
      const double angle = position * frequency;
      const double first =
          original[index] * std::cos(angle) - original[index + 32] * std::sin(angle);
      const double second =
          original[index + 32] * std::cos(angle) + original[index] * std::sin(angle);
      // f32 angles, as transformers computes them: error grows with position.
      const double tolerance = 1e-5 + 2e-7 * position;
      EXPECT_NEAR(head[index], first, tolerance) << position << " " << index;
      EXPECT_NEAR(head[index + 32], second, tolerance) << position << " " << index;
    }
  }
}

TEST(PagedAttentionTest, MatchesReferenceOverShuffledBlocks) {
  for (const int64_t block_size : {1, 5, 16, 20}) {
    for (const int64_t head_dim : {16, 24, 64}) {
      const int64_t group_size = 5, num_blocks = 64, position = 45;
      auto cache = PagedKvCache::Create(1, 2, head_dim, num_blocks, block_size);
      ASSERT_TRUE(cache.ok());
      std::vector<int32_t> table(num_blocks);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), std::mt19937(12));
      const std::vector<float> keys = RandomFloats((position + 1) * head_dim, 13);
      const std::vector<float> values = RandomFloats((position + 1) * head_dim, 14);
      for (int64_t key = 0; key <= position; ++key) {
        cache->Write(0, table[key / block_size], key % block_size, 1, keys.data() + key * head_dim,
                     values.data() + key * head_dim);
      }
      const std::vector<float> queries = RandomFloats(group_size * head_dim, 15, 2.0f);
      AttentionGroup group;
      group.kv_head = 1;
      group.position = position;
      group.block_table = table.data();
      group.queries = queries.data();
      group.group_size = group_size;
      group.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      std::vector<float> scratch(AttentionScratchSize(position, block_size, group_size));
      std::vector<float> output(group_size * head_dim);
      AttendGroup(*cache, group, scratch.data(), output.data());
      for (int64_t head = 0; head < group_size; ++head) {
        std::vector<double> scores(position + 1);
        for (int64_t key = 0; key <= position; ++key) {
          double dot = 0.0;
          for (int64_t index = 0; index < head_dim; ++index) {
            dot += double{queries[head * head_dim + index]} * keys[key * head_dim + index];
          }
          scores[key] = dot * group.scale;
        }
        const double maximum = *std::max_element(scores.begin(), scores.end());
        double sum = 0.0;
        for (double& score : scores) sum += (score = std::exp(score - maximum));
        for (int64_t index = 0; index < head_dim; ++index) {
          double expected = 0.0;
          for (int64_t key = 0; key <= position; ++key) {
            expected += scores[key] / sum * values[key * head_dim + index];
          }
          EXPECT_NEAR(output[head * head_dim + index], expected, 1e-5)
              << "block size " << block_size << " head_dim " << head_dim;
        }
      }
    }
  }
}

TEST(ThreadPoolTest, RunsEveryTaskOnceAcrossManyLoops) {
  ThreadPool pool(3);
  std::vector<int> counts(1000, 0);
  for (int loop = 0; loop < 2000; ++loop) {
    pool.ParallelFor(static_cast<int64_t>(loop % 7 + 1) * 100, [&](int64_t task, int thread) {
      EXPECT_LT(thread, 3);
      counts[task] += 1;
    });
  }
  int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  int64_t expected = 0;
  for (int loop = 0; loop < 2000; ++loop) expected += (loop % 7 + 1) * 100;
  EXPECT_EQ(total, expected);
}

}  // namespace
}  // namespace reflect::cpu
