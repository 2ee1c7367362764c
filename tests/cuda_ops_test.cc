// The kernels of worker/cuda/cuda_ops.h against their CPU references (worker/cpu/, or a few
// lines of plain C++ where none exists) on random inputs at odd sizes, and PagedAttention's batch
// invariance. GPU tests skip where there is no device, or in a build without CUDA; the argument
// checks need no device and always run.
//
// Tolerances, |gpu - cpu| <= atol + rtol·|cpu| elementwise:
// - bf16 outputs (RMSNorm, SwiGLU, attention) against the CPU's f32: rtol 1e-2. Rounding to bf16
//   costs at most 2^-9 relative; the rest is f32 arithmetic in another order (~1e-6 relative).
//   atol 1e-6, except attention's 1e-4 (see there). On top of that, at least 99% of them must be
//   exactly bf16 of the CPU's value (ExpectRoundedAlike), which catches errors far below 1e-2.
// - RoPE'd q and k (f32): rtol 1e-5, atol 1e-6. cos/sin are the same correctly rounded floats on
//   both sides; each rotated value is a·cos ± b·sin with |a|, |b| <= 1, where a fused or unfused
//   multiply-add differs by at most 2 ulp of 1 (2.4e-7).
// - Embedding, conversions, CopyBlocks and the KV store move or round values: checked for
//   equality (the KV store against bf16 of the GPU's own rotated k, which RoPE checks above).
#include "gtest/gtest.h"

#ifdef REFLECT_WITH_CUDA

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model_config.h"
#include "gmock/gmock.h"
#include "worker/cpu/paged_attention.h"
#include "worker/cpu/paged_kv_cache.h"
#include "worker/cpu/rms_norm.h"
#include "worker/cpu/rope.h"
#include "worker/cuda/cuda_ops.h"

namespace reflect::cuda {
namespace {

using ::testing::HasSubstr;

bool HasDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// bf16 on the host as its bits: round to nearest even, and back (exact).
uint16_t Bf16Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float Bf16Value(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

// `size` values of T in device memory, freed with the object.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& values) : size_(values.size()) {
    // At least one element, so that empty arrays have a valid address too.
    EXPECT_EQ(cudaMalloc(&data_, std::max<size_t>(Bytes(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, values.data(), Bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(data_); }

  T* data() { return static_cast<T*>(data_); }
  // The bits as bf16 (for arrays of uint16_t).
  Bf16* bf16() { return static_cast<Bf16*>(data_); }

  // Waits for the device, then copies everything back.
  std::vector<T> Download() const {
    std::vector<T> values(size_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(values.data(), data_, Bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return values;
  }

 private:
  size_t Bytes() const { return size_ * sizeof(T); }

  size_t size_;
  void* data_ = nullptr;
};

std::vector<float> RandomFloats(size_t count, float low, float high, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(count);
  for (float& value : values) value = distribution(random);
  return values;
}

std::vector<uint16_t> RandomBf16(size_t count, uint32_t seed) {
  const std::vector<float> values = RandomFloats(count, -1.0f, 1.0f, seed);
  std::vector<uint16_t> bits(count);
  for (size_t index = 0; index < count; ++index) bits[index] = Bf16Bits(values[index]);
  return bits;
}

std::vector<float> Bf16Values(const std::vector<uint16_t>& bits) {
  std::vector<float> values(bits.size());
  for (size_t index = 0; index < bits.size(); ++index) values[index] = Bf16Value(bits[index]);
  return values;
}

// Checks |gpu - cpu| <= atol + rtol·|cpu| (NaN fails), reporting the first few misses.
void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, double atol,
                 double rtol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t misses = 0;
  for (size_t index = 0; index < gpu.size(); ++index) {
    const double difference = std::abs(static_cast<double>(gpu[index]) - cpu[index]);
    if (!(difference <= atol + rtol * std::abs(static_cast<double>(cpu[index])))) {
      if (++misses <= 5) {
        ADD_FAILURE() << what << " [" << index << "]: gpu " << gpu[index] << ", cpu " << cpu[index];
      }
    }
  }
  EXPECT_EQ(misses, 0) << what << ": elements out of tolerance";
}

// Checks that nearly all bf16 outputs are exactly the CPU's f32 result rounded to bf16: a finer
// test than the tolerance. Both f32 results differ by about 1e-6 relative, which puts them on
// different sides of a bf16 rounding boundary (2^-8 relative apart) for about 0.05% of the
// elements; a systematic error of 0.1% already does so for a quarter of them.
void ExpectRoundedAlike(const std::vector<uint16_t>& gpu, const std::vector<float>& cpu,
                        const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t same = 0;
  for (size_t index = 0; index < gpu.size(); ++index) same += gpu[index] == Bf16Bits(cpu[index]);
  const double share = static_cast<double>(same) / static_cast<double>(gpu.size());
  EXPECT_GE(share, 0.99) << what << ": outputs rounded as the CPU's";
}

TEST(CudaOpsTest, ConvertsBetweenFloatAndBf16) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  std::vector<float> values = RandomFloats(1001, -1000.0f, 1000.0f, 1);
  const float infinity = std::numeric_limits<float>::infinity();
  // Ties (1 + 2^-8 rounds down to even, 1 + 3·2^-8 up), extremes, subnormals, signed zero.
  const std::vector<float> special = {0.0f,     -0.0f,     1.0f + 0x1p-8f, 1.0f + 0x3p-8f,
                                      infinity, -infinity, 3.4e38f,        -3.4e38f,
                                      1e-40f,   -1e-40f,   0x1p-126f,      1e-30f};
  std::copy(special.begin(), special.end(), values.begin());
  DeviceArray<float> input(values);
  DeviceArray<uint16_t> rounded(std::vector<uint16_t>(values.size()));
  ASSERT_TRUE(FloatToBf16(input.data(), values.size(), rounded.bf16(), nullptr).ok());
  std::vector<uint16_t> expected(values.size());
  for (size_t index = 0; index < values.size(); ++index) expected[index] = Bf16Bits(values[index]);
  EXPECT_EQ(rounded.Download(), expected);

  const std::vector<uint16_t> bits = RandomBf16(777, 2);
  DeviceArray<uint16_t> bf16_input(bits);
  DeviceArray<float> widened(std::vector<float>(bits.size()));
  ASSERT_TRUE(Bf16ToFloat(bf16_input.bf16(), bits.size(), widened.data(), nullptr).ok());
  EXPECT_EQ(widened.Download(), Bf16Values(bits));
}

TEST(CudaOpsTest, EmbedsTokensOfThisRanksVocabulary) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t vocab_begin = 10;
  const int64_t vocab_rows = 50;
  // 8 | 200 and 4096 take the vectorized path; 203 the scalar one.
  for (const int64_t hidden : {200, 203, 4096}) {
    SCOPED_TRACE(hidden);
    const std::vector<uint16_t> table = RandomBf16(vocab_rows * hidden, 3);
    // Ids below, inside and above [vocab_begin, vocab_begin + vocab_rows).
    const std::vector<int32_t> ids = {0, 10, 59, 60, 33, 9, 70, 11, 33};
    const int64_t tokens = static_cast<int64_t>(ids.size());
    DeviceArray<uint16_t> device_table(table);
    DeviceArray<int32_t> device_ids(ids);
    DeviceArray<float> residual(std::vector<float>(tokens * hidden, 7.0f));
    ASSERT_TRUE(EmbedTokens(device_ids.data(), tokens, device_table.bf16(), vocab_begin, vocab_rows,
                            hidden, residual.data(), nullptr)
                    .ok());
    std::vector<float> expected(tokens * hidden, 0.0f);
    for (int64_t token = 0; token < tokens; ++token) {
      const int64_t row = ids[token] - vocab_begin;
      if (row < 0 || row >= vocab_rows) continue;
      for (int64_t index = 0; index < hidden; ++index) {
        expected[token * hidden + index] = Bf16Value(table[row * hidden + index]);
      }
    }
    EXPECT_EQ(residual.Download(), expected);
  }
}

TEST(CudaOpsTest, RmsNormMatchesCpu) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t rows = 7;
  const float epsilon = 1e-5f;
  for (const int64_t hidden : {200, 203, 4096}) {
    const std::vector<float> input = RandomFloats(rows * hidden, -3.0f, 3.0f, 4);
    const std::vector<float> weight = RandomFloats(hidden, 0.5f, 1.5f, 5);
    DeviceArray<float> device_input(input);
    DeviceArray<float> device_weight(weight);
    // Every row in order, then a gather with a repeat (as for the logit rows).
    const std::vector<std::vector<int32_t>> gathers = {{}, {6, 0, 3, 3, 1}};
    for (const std::vector<int32_t>& index : gathers) {
      SCOPED_TRACE(testing::Message() << "hidden " << hidden << ", gather " << index.size());
      const int64_t out_rows = index.empty() ? rows : static_cast<int64_t>(index.size());
      DeviceArray<int32_t> device_index(index);
      DeviceArray<uint16_t> out(std::vector<uint16_t>(out_rows * hidden));
      ASSERT_TRUE(RmsNorm(device_input.data(), index.empty() ? nullptr : device_index.data(),
                          out_rows, hidden, device_weight.data(), epsilon, out.bf16(), nullptr)
                      .ok());
      std::vector<float> expected(out_rows * hidden);
      for (int64_t row = 0; row < out_rows; ++row) {
        const int64_t source = index.empty() ? row : index[row];
        cpu::RmsNormRow(input.data() + source * hidden, weight.data(), hidden, epsilon,
                        expected.data() + row * hidden);
      }
      const std::vector<uint16_t> bits = out.Download();
      ExpectClose(Bf16Values(bits), expected, 1e-6, 1e-2, "RmsNorm");
      ExpectRoundedAlike(bits, expected, "RmsNorm");
    }
  }
}

TEST(CudaOpsTest, SiluAndMultiplyMatchesCpu) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t rows = 5;
  for (const int64_t intermediate : {203, 1024}) {
    SCOPED_TRACE(intermediate);
    const std::vector<float> gate_up = RandomFloats(rows * 2 * intermediate, -4.0f, 4.0f, 6);
    DeviceArray<float> device_gate_up(gate_up);
    DeviceArray<uint16_t> out(std::vector<uint16_t>(rows * intermediate));
    ASSERT_TRUE(
        SiluAndMultiply(device_gate_up.data(), rows, intermediate, out.bf16(), nullptr).ok());
    std::vector<float> expected(rows * intermediate);
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t index = 0; index < intermediate; ++index) {
        const float gate = gate_up[row * 2 * intermediate + index];
        const float up = gate_up[row * 2 * intermediate + intermediate + index];
        expected[row * intermediate + index] = gate / (1.0f + std::exp(-gate)) * up;
      }
    }
    const std::vector<uint16_t> bits = out.Download();
    ExpectClose(Bf16Values(bits), expected, 1e-6, 1e-2, "SiluAndMultiply");
    ExpectRoundedAlike(bits, expected, "SiluAndMultiply");
  }
}

TEST(CudaOpsTest, CopyBlocksCopiesEveryLayersKeysAndValues) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const int64_t layers = 3;
  const int64_t num_blocks = 10;
  const std::vector<int32_t> sources = {1, 4, 7};
  const std::vector<int32_t> destinations = {2, 0, 9};
  // 16 slots · 2 kv heads · 64 dims (16-byte copies), and an odd size (element copies).
  for (const int64_t block_elements : {2048, 35}) {
    SCOPED_TRACE(block_elements);
    std::vector<std::vector<uint16_t>> caches;
    std::vector<std::unique_ptr<DeviceArray<uint16_t>>> device_caches;
    std::vector<Bf16*> pointers;
    for (int64_t cache = 0; cache < 2 * layers; ++cache) {
      caches.push_back(RandomBf16(num_blocks * block_elements, 10 + cache));
      device_caches.push_back(std::make_unique<DeviceArray<uint16_t>>(caches.back()));
      pointers.push_back(device_caches.back()->bf16());
    }
    DeviceArray<Bf16*> device_pointers(pointers);
    DeviceArray<int32_t> device_sources(sources);
    DeviceArray<int32_t> device_destinations(destinations);
    ASSERT_TRUE(CopyBlocks(device_pointers.data(), layers, device_sources.data(),
                           device_destinations.data(), static_cast<int64_t>(sources.size()),
                           block_elements, nullptr)
                    .ok());
    for (int64_t cache = 0; cache < 2 * layers; ++cache) {
      std::vector<uint16_t> expected = caches[cache];
      for (size_t copy = 0; copy < sources.size(); ++copy) {
        std::copy_n(caches[cache].begin() + sources[copy] * block_elements, block_elements,
                    expected.begin() + destinations[copy] * block_elements);
      }
      EXPECT_EQ(device_caches[cache]->Download(), expected) << "cache " << cache;
    }
  }
}

// The shape of a Llama attention layer.
struct AttentionShape {
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;

  int64_t group() const { return heads / kv_heads; }
  int64_t qkv_width() const { return (heads + 2 * kv_heads) * head_dim; }
};

std::string Describe(const AttentionShape& shape) {
  return absl::StrCat(shape.heads, "/", shape.kv_heads, " heads of ", shape.head_dim);
}

constexpr int64_t kBlockSize = 16;

// Sequences of a step (each runs positions [start, start + tokens)) with block tables drawn at
// random from one pool; unused table entries are -1.
struct HostBatch {
  std::vector<int32_t> positions;
  std::vector<int32_t> token_sequence;
  std::vector<int32_t> block_tables;
  int64_t max_blocks_per_sequence = 0;
  int64_t num_blocks = 0;
  int64_t max_context = 0;

  // The block table of a token's sequence.
  const int32_t* BlockTable(int64_t token) const {
    return block_tables.data() + token_sequence[token] * max_blocks_per_sequence;
  }
};

struct SequenceRun {
  int64_t start = 0;
  int64_t tokens = 1;
};

HostBatch MakeBatch(const std::vector<SequenceRun>& runs, uint32_t seed) {
  HostBatch batch;
  int64_t total_blocks = 0;
  for (const SequenceRun& run : runs) {
    const int64_t blocks = (run.start + run.tokens + kBlockSize - 1) / kBlockSize;
    batch.max_blocks_per_sequence = std::max(batch.max_blocks_per_sequence, blocks);
    batch.max_context = std::max(batch.max_context, run.start + run.tokens);
    total_blocks += blocks;
  }
  batch.num_blocks = total_blocks + 3;  // a few blocks nobody owns
  std::vector<int32_t> pool(batch.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 random(seed);
  std::shuffle(pool.begin(), pool.end(), random);
  batch.block_tables.assign(runs.size() * batch.max_blocks_per_sequence, -1);
  int64_t next = 0;
  for (size_t sequence = 0; sequence < runs.size(); ++sequence) {
    const SequenceRun& run = runs[sequence];
    const int64_t blocks = (run.start + run.tokens + kBlockSize - 1) / kBlockSize;
    for (int64_t block = 0; block < blocks; ++block) {
      batch.block_tables[sequence * batch.max_blocks_per_sequence + block] = pool[next++];
    }
    for (int64_t offset = 0; offset < run.tokens; ++offset) {
      batch.positions.push_back(static_cast<int32_t>(run.start + offset));
      batch.token_sequence.push_back(static_cast<int32_t>(sequence));
    }
  }
  return batch;
}

// A HostBatch's arrays on the device, and the AttentionBatch pointing at them.
class DeviceBatch {
 public:
  explicit DeviceBatch(const HostBatch& host)
      : positions_(host.positions),
        token_sequence_(host.token_sequence),
        block_tables_(host.block_tables) {
    batch_.tokens = static_cast<int64_t>(host.positions.size());
    batch_.positions = positions_.data();
    batch_.token_sequence = token_sequence_.data();
    batch_.block_tables = block_tables_.data();
    batch_.max_blocks_per_sequence = host.max_blocks_per_sequence;
    batch_.block_size = kBlockSize;
    batch_.num_blocks = host.num_blocks;
  }
  const AttentionBatch& batch() const { return batch_; }

 private:
  DeviceArray<int32_t> positions_;
  DeviceArray<int32_t> token_sequence_;
  DeviceArray<int32_t> block_tables_;
  AttentionBatch batch_;
};

// Decodes with contexts 1, 17, 300 and 2050 (several 512-key splits), and a prefill chunk of 37
// tokens starting at position 100, in one step.
std::vector<SequenceRun> MixedStep() { return {{0, 1}, {16, 1}, {299, 1}, {2049, 1}, {100, 37}}; }

const std::vector<AttentionShape>& Shapes() {
  static const std::vector<AttentionShape> shapes = {
      {6, 2, 64}, {8, 8, 128}, {32, 8, 128}, {16, 2, 64}, {8, 2, 32}};
  return shapes;
}

ModelConfig Llama3RopeConfig(int64_t head_dim) {
  ModelConfig config;
  config.head_dim = head_dim;
  config.rope_theta = 500000.0;
  config.rope_scaling = Llama3RopeScaling{};  // factor 8, 1 / 4, 8192 positions: Llama 3.1
  return config;
}

TEST(CudaOpsTest, RotateAndStoreMatchesCpu) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const HostBatch host = MakeBatch(MixedStep(), 20);
  const int64_t tokens = static_cast<int64_t>(host.positions.size());
  DeviceBatch device_batch(host);
  for (const AttentionShape& shape : Shapes()) {
    SCOPED_TRACE(Describe(shape));
    const int64_t head_dim = shape.head_dim;
    const cpu::Rope rope(Llama3RopeConfig(head_dim));
    const std::vector<float> qkv = RandomFloats(tokens * shape.qkv_width(), -1.0f, 1.0f, 21);
    const int64_t cache_size = host.num_blocks * kBlockSize * shape.kv_heads * head_dim;
    const std::vector<uint16_t> keys = RandomBf16(cache_size, 22);
    const std::vector<uint16_t> values = RandomBf16(cache_size, 23);
    DeviceArray<float> device_qkv(qkv);
    DeviceArray<float> frequencies(rope.inverse_frequencies());
    DeviceArray<uint16_t> key_cache(keys);
    DeviceArray<uint16_t> value_cache(values);
    ASSERT_TRUE(RotateAndStore(device_qkv.data(), device_batch.batch(), shape.heads, shape.kv_heads,
                               head_dim, frequencies.data(), key_cache.bf16(), value_cache.bf16(),
                               nullptr)
                    .ok());
    const std::vector<float> rotated = device_qkv.Download();

    std::vector<float> expected = qkv;
    std::vector<uint16_t> expected_keys = keys;
    std::vector<uint16_t> expected_values = values;
    std::vector<float> cos_sin(head_dim);
    for (int64_t token = 0; token < tokens; ++token) {
      const int64_t position = host.positions[token];
      rope.Angles(position, cos_sin.data());
      float* row = expected.data() + token * shape.qkv_width();
      for (int64_t head = 0; head < shape.heads + shape.kv_heads; ++head) {
        rope.Rotate(cos_sin.data(), row + head * head_dim);
      }
      const int64_t block = host.BlockTable(token)[position / kBlockSize];
      const int64_t slot_offset =
          (block * kBlockSize + position % kBlockSize) * shape.kv_heads * head_dim;
      const int64_t k_offset = token * shape.qkv_width() + shape.heads * head_dim;
      const int64_t v_offset = k_offset + shape.kv_heads * head_dim;
      for (int64_t index = 0; index < shape.kv_heads * head_dim; ++index) {
        expected_keys[slot_offset + index] = Bf16Bits(rotated[k_offset + index]);
        expected_values[slot_offset + index] = Bf16Bits(qkv[v_offset + index]);
      }
    }
    ExpectClose(rotated, expected, 1e-6, 1e-5, "rotated qkv");
    EXPECT_EQ(key_cache.Download(), expected_keys);
    EXPECT_EQ(value_cache.Download(), expected_values);
  }
}

// A pool of random bf16 K and V for one layer, on the device and as the CPU backend's cache.
struct RandomKvPool {
  std::vector<uint16_t> keys;    // [num_blocks][block_size][kv_heads][head_dim]
  std::vector<uint16_t> values;  // same
  cpu::PagedKvCache cpu_cache;
};

RandomKvPool MakeKvPool(const AttentionShape& shape, int64_t num_blocks, uint32_t seed) {
  const int64_t head_dim = shape.head_dim;
  const int64_t size = num_blocks * kBlockSize * shape.kv_heads * head_dim;
  absl::StatusOr<cpu::PagedKvCache> cache =
      cpu::PagedKvCache::Create(1, shape.kv_heads, head_dim, num_blocks, kBlockSize);
  EXPECT_TRUE(cache.ok()) << cache.status();
  RandomKvPool pool{RandomBf16(size, seed), RandomBf16(size, seed + 1), *std::move(cache)};
  const std::vector<float> keys = Bf16Values(pool.keys);
  const std::vector<float> values = Bf16Values(pool.values);
  for (int64_t block = 0; block < num_blocks; ++block) {
    for (int64_t slot = 0; slot < kBlockSize; ++slot) {
      for (int64_t kv_head = 0; kv_head < shape.kv_heads; ++kv_head) {
        const int64_t offset = ((block * kBlockSize + slot) * shape.kv_heads + kv_head) * head_dim;
        pool.cpu_cache.Write(0, block, slot, kv_head, keys.data() + offset, values.data() + offset);
      }
    }
  }
  return pool;
}

// Runs PagedAttention for `host` over `pool`; returns the bf16 output bits.
std::vector<uint16_t> RunAttention(const AttentionShape& shape, const HostBatch& host,
                                   const std::vector<float>& qkv, RandomKvPool& pool,
                                   int64_t keys_per_split) {
  const int64_t tokens = static_cast<int64_t>(host.positions.size());
  DeviceBatch device_batch(host);
  DeviceArray<float> device_qkv(qkv);
  DeviceArray<uint16_t> key_cache(pool.keys);
  DeviceArray<uint16_t> value_cache(pool.values);
  DeviceArray<float> scratch(std::vector<float>(AttentionScratchFloats(
      tokens, shape.heads, shape.head_dim, host.max_context, keys_per_split)));
  DeviceArray<uint16_t> out(std::vector<uint16_t>(tokens * shape.heads * shape.head_dim));
  const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
  const absl::Status status =
      PagedAttention(device_qkv.data(), device_batch.batch(), shape.heads, shape.kv_heads,
                     shape.head_dim, scale, key_cache.bf16(), value_cache.bf16(), host.max_context,
                     keys_per_split, scratch.data(), out.bf16(), nullptr);
  EXPECT_TRUE(status.ok()) << status;
  return out.Download();
}

TEST(CudaOpsTest, PagedAttentionMatchesCpu) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const HostBatch host = MakeBatch(MixedStep(), 30);
  const int64_t tokens = static_cast<int64_t>(host.positions.size());
  for (const AttentionShape& shape : Shapes()) {
    SCOPED_TRACE(Describe(shape));
    const int64_t head_dim = shape.head_dim;
    const int64_t group = shape.group();
    // q in [-3, 3] against k in [-1, 1]: scores of about unit spread, so the softmax is far
    // from uniform and the running max matters.
    const std::vector<float> qkv = RandomFloats(tokens * shape.qkv_width(), -3.0f, 3.0f, 31);
    RandomKvPool pool = MakeKvPool(shape, host.num_blocks, 32);
    const std::vector<uint16_t> out = RunAttention(shape, host, qkv, pool, 512);

    std::vector<float> expected(tokens * shape.heads * head_dim);
    std::vector<float> scratch;
    for (int64_t token = 0; token < tokens; ++token) {
      for (int64_t kv_head = 0; kv_head < shape.kv_heads; ++kv_head) {
        cpu::AttentionGroup attention;
        attention.kv_head = kv_head;
        attention.position = host.positions[token];
        attention.block_table = host.BlockTable(token);
        attention.queries = qkv.data() + token * shape.qkv_width() + kv_head * group * head_dim;
        attention.group_size = group;
        attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        scratch.resize(cpu::AttentionScratchSize(attention.position, kBlockSize, group));
        cpu::AttendGroup(pool.cpu_cache, attention, scratch.data(),
                         expected.data() + (token * shape.heads + kv_head * group) * head_dim);
      }
    }
    // Outputs are convex combinations of values in [-1, 1]: the f32 differences (summation
    // order, exp) stay near 1e-6 in absolute terms, so atol 1e-4 covers outputs near zero.
    ExpectClose(Bf16Values(out), expected, 1e-4, 1e-2, "attention output");
    ExpectRoundedAlike(out, expected, "attention output");
  }
}

TEST(CudaOpsTest, PagedAttentionOfATokenDoesNotDependOnItsBatch) {
  if (!HasDevice()) GTEST_SKIP() << "no CUDA device";
  const AttentionShape shape{32, 8, 128};
  const int64_t width = shape.qkv_width();
  const int64_t out_width = shape.heads * shape.head_dim;
  // A decode at position 2049 as the third of six sequences of other lengths (a longer one
  // changes the grid) with a prefill chunk among them, then alone with the same blocks.
  const HostBatch crowd =
      MakeBatch({{3, 1}, {700, 1}, {2049, 1}, {3000, 1}, {40, 20}, {1500, 1}}, 41);
  const int64_t target = 2;  // the decode's token row in `crowd`
  ASSERT_EQ(crowd.positions[target], 2049);
  HostBatch alone;
  alone.positions = {2049};
  alone.token_sequence = {0};
  alone.block_tables.assign(crowd.BlockTable(target),
                            crowd.BlockTable(target) + crowd.max_blocks_per_sequence);
  alone.max_blocks_per_sequence = crowd.max_blocks_per_sequence;
  alone.num_blocks = crowd.num_blocks;
  alone.max_context = 2050;
  RandomKvPool pool = MakeKvPool(shape, crowd.num_blocks, 42);

  const int64_t crowd_tokens = static_cast<int64_t>(crowd.positions.size());
  const std::vector<float> crowd_qkv = RandomFloats(crowd_tokens * width, -3.0f, 3.0f, 43);
  const std::vector<float> alone_qkv(crowd_qkv.begin() + target * width,
                                     crowd_qkv.begin() + (target + 1) * width);
  const std::vector<uint16_t> alone_out = RunAttention(shape, alone, alone_qkv, pool, 512);
  const std::vector<uint16_t> crowd_out = RunAttention(shape, crowd, crowd_qkv, pool, 512);
  const std::vector<uint16_t> target_out(crowd_out.begin() + target * out_width,
                                         crowd_out.begin() + (target + 1) * out_width);
  EXPECT_EQ(alone_out, target_out);
}

// Argument checks need no device: they answer before anything reaches CUDA.
TEST(CudaOpsTest, RejectsBadArgumentsBeforeLaunching) {
  alignas(16) static int32_t fake_ints[16];
  alignas(16) static float fake_floats[16];
  alignas(16) static Bf16 fake_bf16[16];
  AttentionBatch batch;
  batch.tokens = 1;
  batch.positions = fake_ints;
  batch.token_sequence = fake_ints;
  batch.block_tables = fake_ints;
  batch.max_blocks_per_sequence = 4;
  batch.block_size = 16;
  batch.num_blocks = 8;
  auto attention = [&](const AttentionBatch& step, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t max_context, int64_t keys_per_split) {
    return PagedAttention(fake_floats, step, heads, kv_heads, head_dim, 1.0f, fake_bf16, fake_bf16,
                          max_context, keys_per_split, fake_floats, fake_bf16, nullptr);
  };
  auto expect_invalid = [](const absl::Status& status, const char* mentions) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr(mentions));
  };
  expect_invalid(attention(batch, 8, 2, 96, 64, 512), "head_dim");
  expect_invalid(attention(batch, 16, 2, 32, 64, 512), "head_dim 32 takes at most 4");
  expect_invalid(attention(batch, 10, 4, 64, 64, 512), "multiple of kv_heads");
  expect_invalid(attention(batch, 16, 1, 64, 64, 512), "query heads per kv head");
  expect_invalid(attention(batch, 8, 2, 64, 64, 100), "keys_per_split");
  expect_invalid(attention(batch, 8, 2, 64, 0, 512), "max_context");
  expect_invalid(attention(batch, 8, 2, 64, 512 * 65536, 512), "max_context");
  AttentionBatch negative = batch;
  negative.tokens = -1;
  expect_invalid(attention(negative, 8, 2, 64, 64, 512), "tokens");
  AttentionBatch no_blocks = batch;
  no_blocks.block_size = 0;
  expect_invalid(attention(no_blocks, 8, 2, 64, 64, 512), "block_size");
  AttentionBatch no_positions = batch;
  no_positions.positions = nullptr;
  expect_invalid(attention(no_positions, 8, 2, 64, 64, 512), "positions");
  float* misaligned = fake_floats + 1;
  expect_invalid(PagedAttention(misaligned, batch, 8, 2, 64, 1.0f, fake_bf16, fake_bf16, 64, 512,
                                fake_floats, fake_bf16, nullptr),
                 "aligned");

  expect_invalid(
      RotateAndStore(fake_floats, batch, 8, 2, 63, fake_floats, fake_bf16, fake_bf16, nullptr),
      "head_dim");
  expect_invalid(
      RotateAndStore(fake_floats, batch, 8, 3, 64, fake_floats, fake_bf16, fake_bf16, nullptr),
      "kv_heads");
  expect_invalid(RmsNorm(fake_floats, nullptr, -1, 16, fake_floats, 1e-5f, fake_bf16, nullptr),
                 "rows");
  expect_invalid(RmsNorm(fake_floats, nullptr, 1, 0, fake_floats, 1e-5f, fake_bf16, nullptr),
                 "hidden");
  expect_invalid(EmbedTokens(fake_ints, -1, fake_bf16, 0, 4, 16, fake_floats, nullptr), "tokens");
  expect_invalid(EmbedTokens(fake_ints, 1, nullptr, 0, 4, 16, fake_floats, nullptr), "null");
  expect_invalid(SiluAndMultiply(fake_floats, 1, 0, fake_bf16, nullptr), "intermediate");
  Bf16* caches[2] = {fake_bf16, fake_bf16};
  expect_invalid(CopyBlocks(caches, 1, fake_ints, fake_ints, 1, 0, nullptr), "block_elements");
  expect_invalid(CopyBlocks(caches, -1, fake_ints, fake_ints, 1, 8, nullptr), "layers");
  expect_invalid(FloatToBf16(fake_floats, -1, fake_bf16, nullptr), "count");
  expect_invalid(Bf16ToFloat(fake_bf16, -1, fake_floats, nullptr), "count");

  // Empty work is fine and launches nothing (there may be no device here).
  AttentionBatch empty = batch;
  empty.tokens = 0;
  EXPECT_TRUE(attention(empty, 8, 2, 64, 0, 512).ok());
  EXPECT_TRUE(RmsNorm(nullptr, nullptr, 0, 16, nullptr, 1e-5f, nullptr, nullptr).ok());
  EXPECT_TRUE(CopyBlocks(nullptr, 4, nullptr, nullptr, 0, 8, nullptr).ok());
}

}  // namespace
}  // namespace reflect::cuda

#else

TEST(CudaOpsTest, BuiltWithoutCuda) { GTEST_SKIP() << "built without CUDA"; }

#endif
