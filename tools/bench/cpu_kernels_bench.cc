// CPU backend figures (DESIGN §10): matmul GFLOP/s and GB/s at decode and prefill row counts for
// Llama-3.2-1B shapes with bf16 weights, paged attention decode, the machine's streaming read
// bandwidth (the decode roofline), and whole-model steps of a random bf16 Llama-3.2-1B.
// bf16 weights use the process's kernel (AMX where usable; REFLECT_CPU_MATMUL=avx512 forces
// vdpbf16ps), shown as each matmul / model benchmark's label.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "worker/cpu/aligned_buffer.h"
#include "worker/cpu/amx_tiles.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/cpu/matmul.h"
#include "worker/cpu/packed_matrix.h"
#include "worker/cpu/paged_attention.h"
#include "worker/cpu/paged_kv_cache.h"
#include "worker/cpu/thread_pool.h"
#include "worker/cpu/vector_math.h"

namespace reflect::cpu {
namespace {

ThreadPool& Pool() {
  static ThreadPool pool(0);
  return pool;
}

const char* KernelLabel() { return SelectedBf16Kernel() == Bf16Kernel::kAmx ? "amx" : "avx512"; }

// Fills `count` bf16 values with small pseudo-random numbers, fast enough for a billion.
void FillBf16(uint16_t* values, int64_t count, uint64_t seed) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t index = 0; index < count; ++index) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    const float value = (static_cast<float>(state & 0xffff) / 65536.0f - 0.5f) * 0.05f;
    values[index] = F32ToBf16(value);
  }
}

struct Bf16Matrix {
  std::vector<uint16_t> values;
  TensorView view;
};

Bf16Matrix MakeMatrix(int64_t rows, int64_t columns) {
  Bf16Matrix matrix;
  matrix.values.resize(rows * columns);
  FillBf16(matrix.values.data(), rows * columns, static_cast<uint64_t>(rows * 31 + columns));
  matrix.view.dtype = DType::kBF16;
  matrix.view.shape = {rows, columns};
  matrix.view.data = reinterpret_cast<const std::byte*>(matrix.values.data());
  return matrix;
}

// Args: rows (M), outputs (N), depth (K).
void BM_MatmulBf16(benchmark::State& state) {
  const int64_t rows = state.range(0), outputs = state.range(1), depth = state.range(2);
  PackedMatrix packed;
  {
    const Bf16Matrix matrix = MakeMatrix(outputs, depth);
    packed = *PackedMatrix::PackRows(std::span<const TensorView>(&matrix.view, 1), depth, Pool());
  }
  std::vector<float> input(rows * depth, 0.5f);
  std::vector<float> output(rows * outputs);
  std::vector<uint16_t> scratch;
  for (auto _ : state) {
    Matmul(input.data(), rows, depth, packed, MatmulOutput::kStore, output.data(), outputs, Pool(),
           scratch);
    benchmark::DoNotOptimize(output.data());
  }
  const double flops = 2.0 * rows * outputs * depth;
  state.SetLabel(KernelLabel());
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(packed.bytes()) * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MatmulBf16)
    ->ArgNames({"M", "N", "K"})
    ->ArgsProduct({{1, 8, 32, 256}, {2048}, {2048}})
    ->ArgsProduct({{1, 8, 32, 256}, {8192}, {2048}})
    ->ArgsProduct({{1, 8, 32, 256}, {2048}, {8192}})
    ->ArgsProduct({{1, 8, 32}, {128256}, {2048}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One decode query per KV head group of Llama-3.2-1B (32 heads, 8 KV heads, head_dim 64) over
// `context` cached tokens, all heads of one layer.
void BM_AttentionDecode(benchmark::State& state) {
  const int64_t context = state.range(0);
  constexpr int64_t kBlockSize = 16, kKvHeads = 8, kGroup = 4, kHeadDim = 64;
  const int64_t blocks = context / kBlockSize + 1;
  auto cache = PagedKvCache::Create(1, kKvHeads, kHeadDim, blocks, kBlockSize);
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  std::vector<float> vector(kHeadDim, 0.1f);
  for (int64_t position = 0; position < context; ++position) {
    for (int64_t head = 0; head < kKvHeads; ++head) {
      cache->Write(0, position / kBlockSize, position % kBlockSize, head, vector.data(),
                   vector.data());
    }
  }
  std::vector<float> queries(kKvHeads * kGroup * kHeadDim, 0.2f);
  std::vector<float> output(queries.size());
  std::vector<std::vector<float>> scratch(
      Pool().num_threads(),
      std::vector<float>(AttentionScratchSize(context - 1, kBlockSize, kGroup)));
  for (auto _ : state) {
    Pool().ParallelFor(kKvHeads, [&](int64_t head, int thread) {
      AttentionGroup group;
      group.kv_head = head;
      group.position = context - 1;
      group.block_table = table.data();
      group.queries = queries.data() + head * kGroup * kHeadDim;
      group.group_size = kGroup;
      group.scale = 0.125f;
      AttendGroup(*cache, group, scratch[thread].data(), output.data() + head * kGroup * kHeadDim);
    });
    benchmark::DoNotOptimize(output.data());
  }
  state.counters["KV_GB/s"] = benchmark::Counter(2.0 * context * kKvHeads * kHeadDim * 4 * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionDecode)->Arg(1024)->Arg(8192)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Streaming read of 1 GiB on every thread of the pool: the bandwidth decode is bound by.
void BM_StreamRead(benchmark::State& state) {
  constexpr size_t kBytes = size_t{1} << 30;
  auto buffer = AlignedBuffer::Allocate(kBytes);
  std::memset(buffer->As<char>(), 1, kBytes);
  constexpr int64_t kChunks = 256;
  std::vector<float> sums(kChunks);
  for (auto _ : state) {
    Pool().ParallelFor(kChunks, [&](int64_t chunk, int) {
      const __m512* data = buffer->As<__m512>() + chunk * (kBytes / 64 / kChunks);
      __m512 first = _mm512_setzero_ps(), second = _mm512_setzero_ps();
      for (size_t index = 0; index < kBytes / 64 / kChunks; index += 2) {
        first = _mm512_add_ps(first, data[index]);
        second = _mm512_add_ps(second, data[index + 1]);
      }
      sums[chunk] = SumLanes(_mm512_add_ps(first, second));
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(kBytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_StreamRead)->UseRealTime()->Unit(benchmark::kMillisecond);

// A random bf16 Llama-3.2-1B (tied embeddings), built once.
class RandomLlama {
 public:
  RandomLlama() {
    config_.hidden_size = 2048;
    config_.intermediate_size = 8192;
    config_.num_hidden_layers = 16;
    config_.num_attention_heads = 32;
    config_.num_key_value_heads = 8;
    config_.head_dim = 64;
    config_.vocab_size = 128256;
    config_.max_position_embeddings = 131072;
    config_.rope_theta = 500000.0;
    config_.rope_scaling = Llama3RopeScaling{32.0, 1.0, 4.0, 8192};
    config_.tie_word_embeddings = true;
    const int64_t hidden = 2048, query = 2048, kv = 512, intermediate = 8192;
    LlamaWeights weights;
    auto matrix = [&](int64_t rows, int64_t columns) {
      auto& values = storage_.emplace_back(rows * columns);
      FillBf16(values.data(), rows * columns, storage_.size());
      TensorView view;
      view.dtype = DType::kBF16;
      view.shape = {rows, columns};
      view.data = reinterpret_cast<const std::byte*>(values.data());
      return view;
    };
    auto ones = [&](int64_t size) {
      auto& values = storage_.emplace_back(size, F32ToBf16(1.0f));
      TensorView view;
      view.dtype = DType::kBF16;
      view.shape = {size};
      view.data = reinterpret_cast<const std::byte*>(values.data());
      return view;
    };
    weights.embed_tokens = matrix(config_.vocab_size, hidden);
    weights.lm_head = weights.embed_tokens;
    weights.norm = ones(hidden);
    for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
      LlamaLayerWeights& weights_layer = weights.layers.emplace_back();
      weights_layer.input_layernorm = ones(hidden);
      weights_layer.post_attention_layernorm = ones(hidden);
      weights_layer.q_proj = matrix(query, hidden);
      weights_layer.k_proj = matrix(kv, hidden);
      weights_layer.v_proj = matrix(kv, hidden);
      weights_layer.o_proj = matrix(hidden, query);
      weights_layer.gate_proj = matrix(intermediate, hidden);
      weights_layer.up_proj = matrix(intermediate, hidden);
      weights_layer.down_proj = matrix(hidden, intermediate);
    }
    CpuBackendOptions options;
    options.num_kv_blocks = 2048;
    backend_ = std::move(*CreateCpuBackendFromWeights(config_, weights, options, nullptr));
    // Only the embedding is read after packing: drop the layer sources.
    storage_.resize(1);
  }

  Backend& backend() { return *backend_; }

  static RandomLlama& Get() {
    static RandomLlama model;
    return model;
  }

 private:
  ModelConfig config_;
  std::vector<std::vector<uint16_t>> storage_;
  std::unique_ptr<Backend> backend_;
};

// Decode: `batch` sequences, one token each, at `context` cached tokens.
void BM_Llama1BDecode(benchmark::State& state) {
  const int64_t batch = state.range(0), context = state.range(1);
  Backend& backend = RandomLlama::Get().backend();
  StepPlan plan;
  const int64_t blocks_per_sequence = context / 16 + 1;
  for (int64_t index = 0; index < batch; ++index) {
    ScheduledSequence& sequence = plan.sequences.emplace_back();
    sequence.sequence_id = index;
    sequence.token_ids = {static_cast<int32_t>(1000 + index)};
    sequence.start_position = context;
    for (int64_t block = 0; block < blocks_per_sequence; ++block) {
      sequence.block_table.push_back(static_cast<int32_t>(index * blocks_per_sequence + block));
    }
  }
  std::vector<float> logits;
  for (auto _ : state) {
    if (!backend.Forward(plan, logits).ok()) state.SkipWithError("forward failed");
  }
  state.SetLabel(KernelLabel());
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Llama1BDecode)
    ->ArgNames({"batch", "context"})
    ->Args({1, 128})
    ->Args({8, 128})
    ->Args({32, 128})
    ->Args({1, 1024})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Prefill of one `length`-token prompt, logits for its last token.
void BM_Llama1BPrefill(benchmark::State& state) {
  const int64_t length = state.range(0);
  Backend& backend = RandomLlama::Get().backend();
  StepPlan plan;
  ScheduledSequence& sequence = plan.sequences.emplace_back();
  for (int64_t index = 0; index < length; ++index) {
    sequence.token_ids.push_back(static_cast<int32_t>((index * 7919) % 128000));
  }
  for (int64_t block = 0; block < length / 16 + 1; ++block) {
    sequence.block_table.push_back(static_cast<int32_t>(block));
  }
  std::vector<float> logits;
  for (auto _ : state) {
    if (!backend.Forward(plan, logits).ok()) state.SkipWithError("forward failed");
  }
  state.SetLabel(KernelLabel());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(length),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Llama1BPrefill)->Arg(512)->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace reflect::cpu
