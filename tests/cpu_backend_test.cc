// The CPU backend on a tiny random Llama held in memory: logits against a naive f64 forward,
// bit-exact batch invariance (alone vs mixed batches, any prefill chunking, any thread count),
// paged block tables and block copies, and rejection of malformed plans.
#include "worker/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "worker/sampler.h"

namespace reflect {
namespace {

ModelConfig TinyConfig() {
  ModelConfig config;
  config.hidden_size = 64;
  config.intermediate_size = 96;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 16;
  config.vocab_size = 300;
  config.max_position_embeddings = 1024;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 10000.0;
  // Small original context so the three llama3 bands (kept, scaled, smoothed) all occur.
  config.rope_scaling = Llama3RopeScaling{8.0, 1.0, 4.0, 64};
  return config;
}

// Random weights in memory, stored as f32 or bf16; `Value` reads back what the backend sees.
class TinyModel {
 public:
  TinyModel(const ModelConfig& config, DType dtype, uint32_t seed)
      : config_(config), dtype_(dtype) {
    std::mt19937 generator(seed);
    const int64_t hidden = config.hidden_size;
    const int64_t query_width = config.num_attention_heads * config.head_dim;
    const int64_t kv_width = config.num_key_value_heads * config.head_dim;
    const int64_t intermediate = config.intermediate_size;
    weights_.embed_tokens = Make({config.vocab_size, hidden}, 1.0f, 0.0f, generator);
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      LlamaLayerWeights& weights = weights_.layers.emplace_back();
      weights.input_layernorm = Make({hidden}, 0.2f, 1.0f, generator);
      weights.q_proj = Make({query_width, hidden}, Scale(hidden), 0.0f, generator);
      weights.k_proj = Make({kv_width, hidden}, Scale(hidden), 0.0f, generator);
      weights.v_proj = Make({kv_width, hidden}, Scale(hidden), 0.0f, generator);
      weights.o_proj = Make({hidden, query_width}, Scale(query_width), 0.0f, generator);
      weights.post_attention_layernorm = Make({hidden}, 0.2f, 1.0f, generator);
      weights.gate_proj = Make({intermediate, hidden}, Scale(hidden), 0.0f, generator);
      weights.up_proj = Make({intermediate, hidden}, Scale(hidden), 0.0f, generator);
      weights.down_proj = Make({hidden, intermediate}, Scale(intermediate), 0.0f, generator);
    }
    weights_.norm = Make({hidden}, 0.2f, 1.0f, generator);
    weights_.lm_head = Make({config.vocab_size, hidden}, 2.0f * Scale(hidden), 0.0f, generator);
  }

  const LlamaWeights& weights() const { return weights_; }
  const ModelConfig& config() const { return config_; }

  static double Value(const TensorView& view, int64_t index) {
    if (view.dtype == DType::kBF16) {
      uint16_t bits;
      std::memcpy(&bits, view.data + index * 2, 2);
      return Bf16ToF32(bits);
    }
    float value;
    std::memcpy(&value, view.data + index * 4, 4);
    return value;
  }

  std::unique_ptr<Backend> CreateBackend(int num_threads, int64_t block_size = 4,
                                         int64_t num_blocks = 128) const {
    CpuBackendOptions options;
    options.num_kv_blocks = num_blocks;
    options.block_size = block_size;
    options.num_threads = num_threads;
    auto backend = CreateCpuBackendFromWeights(config_, weights_, options, nullptr);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }

 private:
  static float Scale(int64_t fan_in) { return 1.5f / std::sqrt(static_cast<float>(fan_in)); }

  TensorView Make(std::vector<int64_t> shape, float spread, float center, std::mt19937& generator) {
    std::uniform_real_distribution<float> distribution(-spread, spread);
    const int64_t count =
        std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
    auto& storage = storage_.emplace_back(count * DTypeSize(dtype_));
    for (int64_t index = 0; index < count; ++index) {
      const float value = center + distribution(generator);
      if (dtype_ == DType::kBF16) {
        const uint16_t bits = F32ToBf16(value);
        std::memcpy(storage.data() + index * 2, &bits, 2);
      } else {
        std::memcpy(storage.data() + index * 4, &value, 4);
      }
    }
    TensorView view;
    view.dtype = dtype_;
    view.shape = std::move(shape);
    view.data = storage.data();
    return view;
  }

  ModelConfig config_;
  DType dtype_;
  std::vector<std::vector<std::byte>> storage_;
  LlamaWeights weights_;
};

// The forward pass written as plainly as possible, in f64, over a whole sequence at once.
// With `round_activations`, matmul inputs are rounded to bf16 first (what vdpbf16ps sees).
std::vector<double> ReferenceLogits(const TinyModel& model, const std::vector<int32_t>& tokens,
                                    bool round_activations) {
  const ModelConfig& config = model.config();
  const LlamaWeights& weights = model.weights();
  const int64_t length = static_cast<int64_t>(tokens.size());
  const int64_t hidden = config.hidden_size;
  const int64_t heads = config.num_attention_heads;
  const int64_t kv_heads = config.num_key_value_heads;
  const int64_t head_dim = config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  using Matrix = std::vector<std::vector<double>>;
  auto linear = [&](const Matrix& input, const TensorView& weight) {
    const int64_t out = weight.shape[0];
    const int64_t in = weight.shape[1];
    Matrix output(input.size(), std::vector<double>(out, 0.0));
    for (size_t row = 0; row < input.size(); ++row) {
      for (int64_t column = 0; column < out; ++column) {
        double sum = 0.0;
        for (int64_t k = 0; k < in; ++k) {
          double x = input[row][k];
          if (round_activations) x = Bf16ToF32(F32ToBf16(static_cast<float>(x)));
          sum += x * TinyModel::Value(weight, column * in + k);
        }
        output[row][column] = sum;
      }
    }
    return output;
  };
  auto norm = [&](const Matrix& input, const TensorView& weight) {
    Matrix output = input;
    for (auto& row : output) {
      double squares = 0.0;
      for (double value : row) squares += value * value;
      const double scale = 1.0 / std::sqrt(squares / hidden + config.rms_norm_eps);
      for (int64_t index = 0; index < hidden; ++index) {
        row[index] *= scale * TinyModel::Value(weight, index);
      }
    }
    return output;
  };
  // Llama-3 scaled inverse frequencies.
  std::vector<double> inverse_frequencies(head_dim / 2);
  for (int64_t index = 0; index < head_dim / 2; ++index) {
    double frequency = 1.0 / std::pow(config.rope_theta, 2.0 * index / head_dim);
    const Llama3RopeScaling& scaling = *config.rope_scaling;
    const double wavelength = 2.0 * M_PI / frequency;
    const double low = scaling.original_max_position_embeddings / scaling.low_freq_factor;
    const double high = scaling.original_max_position_embeddings / scaling.high_freq_factor;
    if (wavelength > low) {
      frequency /= scaling.factor;
    } else if (wavelength >= high) {
      const double smooth =
          (scaling.original_max_position_embeddings / wavelength - scaling.low_freq_factor) /
          (scaling.high_freq_factor - scaling.low_freq_factor);
      frequency = (1.0 - smooth) * frequency / scaling.factor + smooth * frequency;
    }
    inverse_frequencies[index] = frequency;
  }
  auto rotate = [&](std::vector<double>& row, int64_t head, int64_t position) {
    const int64_t half = head_dim / 2;
    for (int64_t index = 0; index < half; ++index) {
      const double angle = position * inverse_frequencies[index];
      const double first = row[head * head_dim + index];
      const double second = row[head * head_dim + index + half];
      row[head * head_dim + index] = first * std::cos(angle) - second * std::sin(angle);
      row[head * head_dim + index + half] = second * std::cos(angle) + first * std::sin(angle);
    }
  };

  Matrix state(length, std::vector<double>(hidden));
  for (int64_t position = 0; position < length; ++position) {
    for (int64_t index = 0; index < hidden; ++index) {
      state[position][index] =
          TinyModel::Value(weights.embed_tokens, tokens[position] * hidden + index);
    }
  }
  for (const LlamaLayerWeights& layer : weights.layers) {
    const Matrix normalized = norm(state, layer.input_layernorm);
    Matrix queries = linear(normalized, layer.q_proj);
    Matrix keys = linear(normalized, layer.k_proj);
    const Matrix values = linear(normalized, layer.v_proj);
    for (int64_t position = 0; position < length; ++position) {
      for (int64_t head = 0; head < heads; ++head) rotate(queries[position], head, position);
      for (int64_t head = 0; head < kv_heads; ++head) rotate(keys[position], head, position);
    }
    Matrix attention(length, std::vector<double>(heads * head_dim, 0.0));
    for (int64_t position = 0; position < length; ++position) {
      for (int64_t head = 0; head < heads; ++head) {
        const int64_t kv_head = head / (heads / kv_heads);
        std::vector<double> scores(position + 1);
        for (int64_t key = 0; key <= position; ++key) {
          double dot = 0.0;
          for (int64_t index = 0; index < head_dim; ++index) {
            dot +=
                queries[position][head * head_dim + index] * keys[key][kv_head * head_dim + index];
          }
          scores[key] = dot / std::sqrt(static_cast<double>(head_dim));
        }
        const double maximum = *std::max_element(scores.begin(), scores.end());
        double sum = 0.0;
        for (double& score : scores) sum += (score = std::exp(score - maximum));
        for (int64_t key = 0; key <= position; ++key) {
          for (int64_t index = 0; index < head_dim; ++index) {
            attention[position][head * head_dim + index] +=
                scores[key] / sum * values[key][kv_head * head_dim + index];
          }
        }
      }
    }
    const Matrix projected = linear(attention, layer.o_proj);
    for (int64_t position = 0; position < length; ++position) {
      for (int64_t index = 0; index < hidden; ++index)
        state[position][index] += projected[position][index];
    }
    const Matrix normalized_mlp = norm(state, layer.post_attention_layernorm);
    const Matrix gate = linear(normalized_mlp, layer.gate_proj);
    const Matrix up = linear(normalized_mlp, layer.up_proj);
    Matrix activated(length, std::vector<double>(intermediate));
    for (int64_t position = 0; position < length; ++position) {
      for (int64_t index = 0; index < intermediate; ++index) {
        const double value = gate[position][index];
        activated[position][index] = value / (1.0 + std::exp(-value)) * up[position][index];
      }
    }
    const Matrix down = linear(activated, layer.down_proj);
    for (int64_t position = 0; position < length; ++position) {
      for (int64_t index = 0; index < hidden; ++index)
        state[position][index] += down[position][index];
    }
  }
  const Matrix last = norm(Matrix{state.back()}, weights.norm);
  return linear(last, weights.lm_head)[0];
}

// A sequence to run: all its tokens, how they are split into steps, and its block table.
struct SequenceRun {
  std::vector<int32_t> tokens;
  std::vector<int64_t> chunks;  // sizes, summing to tokens.size()
  std::vector<int32_t> block_table;
};

// Logits keyed by (sequence index, position of the token they follow).
using LogitsByPosition = std::map<std::pair<int64_t, int64_t>, std::vector<float>>;

// Runs the sequences in lockstep: every step takes each unfinished sequence's next chunk, so a
// step mixes prefill chunks and single-token decodes of sequences at different lengths.
LogitsByPosition RunSequences(Backend& backend, const std::vector<SequenceRun>& runs) {
  LogitsByPosition result;
  std::vector<size_t> next_chunk(runs.size(), 0);
  std::vector<int64_t> done(runs.size(), 0);
  while (true) {
    StepPlan plan;
    std::vector<std::pair<int64_t, int64_t>> keys;
    for (size_t index = 0; index < runs.size(); ++index) {
      if (next_chunk[index] == runs[index].chunks.size()) continue;
      const int64_t size = runs[index].chunks[next_chunk[index]++];
      ScheduledSequence& sequence = plan.sequences.emplace_back();
      sequence.sequence_id = static_cast<int64_t>(index);
      sequence.start_position = done[index];
      sequence.token_ids.assign(runs[index].tokens.begin() + done[index],
                                runs[index].tokens.begin() + done[index] + size);
      sequence.block_table = runs[index].block_table;
      done[index] += size;
      keys.emplace_back(index, done[index] - 1);
    }
    if (plan.sequences.empty()) return result;
    std::vector<float> logits;
    const absl::Status status = backend.Forward(plan, logits);
    EXPECT_TRUE(status.ok()) << status;
    const int64_t vocab = backend.vocab_size();
    EXPECT_EQ(static_cast<int64_t>(logits.size()), vocab * static_cast<int64_t>(keys.size()));
    for (size_t row = 0; row < keys.size() && status.ok(); ++row) {
      result[keys[row]].assign(logits.begin() + row * vocab, logits.begin() + (row + 1) * vocab);
    }
  }
}

std::vector<int32_t> RandomTokens(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> distribution(0, 299);
  std::vector<int32_t> tokens(count);
  for (int32_t& token : tokens) token = distribution(generator);
  return tokens;
}

std::vector<int32_t> Blocks(int32_t first, int32_t count) {
  std::vector<int32_t> blocks(count);
  std::iota(blocks.begin(), blocks.end(), first);
  return blocks;
}

std::vector<int64_t> Chunks(int64_t total, std::vector<int64_t> pattern) {
  std::vector<int64_t> chunks;
  size_t next = 0;
  while (total > 0) {
    const int64_t size = std::min(total, pattern[next++ % pattern.size()]);
    chunks.push_back(size);
    total -= size;
  }
  return chunks;
}

bool BitIdentical(const std::vector<float>& left, const std::vector<float>& right) {
  return left.size() == right.size() &&
         std::memcmp(left.data(), right.data(), left.size() * sizeof(float)) == 0;
}

void ExpectNear(const std::vector<float>& actual, const std::vector<double>& expected,
                double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  double worst = 0.0;
  for (size_t index = 0; index < actual.size(); ++index) {
    worst = std::max(worst, std::abs(actual[index] - expected[index]));
  }
  EXPECT_LE(worst, tolerance);
}

TEST(CpuBackendTest, F32LogitsMatchNaiveReference) {
  const TinyModel model(TinyConfig(), DType::kF32, 1);
  auto backend = model.CreateBackend(2);
  ASSERT_NE(backend, nullptr);
  const std::vector<int32_t> tokens = RandomTokens(23, 7);
  // Prefill 20 tokens in chunks, then three decodes: logits at 20, 21, 22, 23 tokens.
  const LogitsByPosition logits =
      RunSequences(*backend, {{tokens, {8, 12, 1, 1, 1}, Blocks(0, 6)}});
  for (int64_t length : {20, 21, 22, 23}) {
    const std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + length);
    ExpectNear(logits.at({0, length - 1}), ReferenceLogits(model, prefix, false), 1e-4);
  }
}

TEST(CpuBackendTest, Bf16LogitsMatchReferenceWithBf16Activations) {
  const TinyModel model(TinyConfig(), DType::kBF16, 2);
  auto backend = model.CreateBackend(2);
  ASSERT_NE(backend, nullptr);
  const std::vector<int32_t> tokens = RandomTokens(17, 8);
  const LogitsByPosition logits = RunSequences(*backend, {{tokens, {17}, Blocks(0, 5)}});
  // bf16 activation rounding can flip at a tie between f32 and f64 inputs: a few 1e-3.
  ExpectNear(logits.at({0, 16}), ReferenceLogits(model, tokens, true), 2e-2);
}

class BatchInvarianceTest : public ::testing::TestWithParam<DType> {};

TEST_P(BatchInvarianceTest, LogitsAreBitIdenticalAcrossBatchesChunksAndThreads) {
  const TinyModel model(TinyConfig(), GetParam(), 3);
  const std::vector<int64_t> lengths = {9, 26, 3, 40, 14};
  std::vector<std::vector<int32_t>> tokens;
  for (size_t index = 0; index < lengths.size(); ++index) {
    tokens.push_back(RandomTokens(lengths[index], 100 + static_cast<uint32_t>(index)));
  }
  // Ground truth: each sequence alone, one token per step, single thread.
  std::vector<LogitsByPosition> alone(lengths.size());
  {
    auto backend = model.CreateBackend(1);
    ASSERT_NE(backend, nullptr);
    for (size_t index = 0; index < lengths.size(); ++index) {
      alone[index] =
          RunSequences(*backend, {{tokens[index], Chunks(lengths[index], {1}), Blocks(0, 10)}});
    }
  }
  const std::vector<std::vector<int64_t>> patterns = {{1000}, {3}, {7, 1}, {5, 2, 1, 1}, {1}};
  for (int threads : {1, 2, 3}) {
    auto backend = model.CreateBackend(threads);
    ASSERT_NE(backend, nullptr);
    for (size_t shift = 0; shift < patterns.size(); ++shift) {
      std::vector<SequenceRun> runs;
      for (size_t index = 0; index < lengths.size(); ++index) {
        runs.push_back({tokens[index],
                        Chunks(lengths[index], patterns[(index + shift) % patterns.size()]),
                        Blocks(static_cast<int32_t>(index * 10), 10)});
      }
      const LogitsByPosition batched = RunSequences(*backend, runs);
      for (const auto& [key, logits] : batched) {
        EXPECT_TRUE(BitIdentical(logits, alone[key.first].at({0, key.second})))
            << "threads " << threads << " shift " << shift << " sequence " << key.first
            << " position " << key.second;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BatchInvarianceTest, ::testing::Values(DType::kF32, DType::kBF16));

TEST(CpuBackendTest, ShuffledBlockTablesGiveTheSameLogits) {
  const TinyModel model(TinyConfig(), DType::kBF16, 4);
  const std::vector<int32_t> tokens = RandomTokens(30, 9);
  auto backend = model.CreateBackend(2);
  ASSERT_NE(backend, nullptr);
  const LogitsByPosition contiguous = RunSequences(*backend, {{tokens, {11, 19}, Blocks(0, 8)}});
  std::vector<int32_t> shuffled = Blocks(0, 64);
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(5));
  shuffled.resize(8);
  const LogitsByPosition paged = RunSequences(*backend, {{tokens, {11, 19}, shuffled}});
  ASSERT_EQ(contiguous.size(), paged.size());
  for (const auto& [key, logits] : contiguous) {
    EXPECT_TRUE(BitIdentical(logits, paged.at(key)));
  }
  // Other block sizes see the same numbers too (attention order is by key, not by block).
  for (int64_t block_size : {1, 16, 17}) {
    auto other = model.CreateBackend(2, block_size, 64);
    ASSERT_NE(other, nullptr);
    const LogitsByPosition result = RunSequences(*other, {{tokens, {11, 19}, Blocks(0, 30)}});
    for (const auto& [key, logits] : contiguous) {
      EXPECT_TRUE(BitIdentical(logits, result.at(key))) << "block size " << block_size;
    }
  }
}

TEST(CpuBackendTest, BlockCopyForksASequence) {
  const TinyModel model(TinyConfig(), DType::kF32, 5);
  const std::vector<int32_t> tokens = RandomTokens(21, 10);
  auto backend = model.CreateBackend(2);
  ASSERT_NE(backend, nullptr);
  const LogitsByPosition expected = RunSequences(*backend, {{tokens, {20, 1}, Blocks(0, 6)}});
  // Prefill 20 tokens into blocks 10..14, copy them to 30..34, decode the 21st from the copy.
  RunSequences(*backend,
               {{std::vector<int32_t>(tokens.begin(), tokens.begin() + 20), {20}, Blocks(10, 5)}});
  StepPlan plan;
  for (int32_t index = 0; index < 5; ++index) plan.block_copies.push_back({10 + index, 30 + index});
  ScheduledSequence& sequence = plan.sequences.emplace_back();
  sequence.token_ids = {tokens[20]};
  sequence.start_position = 20;
  sequence.block_table = Blocks(30, 6);
  std::vector<float> logits;
  ASSERT_TRUE(backend->Forward(plan, logits).ok());
  EXPECT_TRUE(BitIdentical(logits, expected.at({0, 20})));
}

TEST(CpuBackendTest, OnlySequencesThatNeedLogitsGetRows) {
  const TinyModel model(TinyConfig(), DType::kF32, 6);
  auto backend = model.CreateBackend(2);
  ASSERT_NE(backend, nullptr);
  StepPlan plan;
  for (int32_t index = 0; index < 3; ++index) {
    ScheduledSequence& sequence = plan.sequences.emplace_back();
    sequence.token_ids = RandomTokens(5, index);
    sequence.block_table = Blocks(index * 2, 2);
    sequence.needs_logits = index != 1;
  }
  std::vector<float> logits;
  ASSERT_TRUE(backend->Forward(plan, logits).ok());
  EXPECT_EQ(logits.size(), 2u * 300u);
}

TEST(CpuBackendTest, ForwardAndSampleIsForwardThenSampleTokenPerRow) {
  // Two backends fed the same plans: one through ForwardAndSample (the host default), the other
  // through Forward and SampleToken by hand; rows 0 and 2 need logits, with different params.
  const TinyModel model(TinyConfig(), DType::kF32, 8);
  auto sampled_backend = model.CreateBackend(2);
  auto reference_backend = model.CreateBackend(2);
  ASSERT_NE(sampled_backend, nullptr);
  ASSERT_NE(reference_backend, nullptr);
  StepPlan plan;
  for (int32_t index = 0; index < 3; ++index) {
    ScheduledSequence& sequence = plan.sequences.emplace_back();
    sequence.sequence_id = 10 + index;
    sequence.token_ids = RandomTokens(5, index);
    sequence.block_table = Blocks(index * 2, 2);
    sequence.needs_logits = index != 1;
  }
  SamplingParams greedy;
  greedy.logprobs = 3;
  SamplingParams drawn;
  drawn.temperature = 0.8;
  drawn.top_p = 0.9;
  drawn.seed = 5;
  drawn.repetition_penalty = 1.3;
  const std::vector<int32_t> generated = {7, 7, 2};
  const std::vector<SamplingRow> rows = {{.sequence_id = 10,
                                          .params = &greedy,
                                          .prompt_ids = plan.sequences[0].token_ids,
                                          .generated_ids = {},
                                          .position = 5},
                                         {.sequence_id = 12,
                                          .params = &drawn,
                                          .prompt_ids = plan.sequences[2].token_ids,
                                          .generated_ids = generated,
                                          .position = 8}};
  std::vector<SampledToken> tokens;
  ASSERT_TRUE(sampled_backend->ForwardAndSample(plan, rows, tokens).ok());

  std::vector<float> logits;
  ASSERT_TRUE(reference_backend->Forward(plan, logits).ok());
  ASSERT_EQ(tokens.size(), 2u);
  for (size_t row = 0; row < rows.size(); ++row) {
    const SampledToken expected =
        SampleToken(std::span<float>(logits.data() + row * 300, 300), *rows[row].params,
                    rows[row].prompt_ids, rows[row].generated_ids, rows[row].position);
    EXPECT_EQ(tokens[row].sequence_id, rows[row].sequence_id);
    EXPECT_EQ(tokens[row].token_id, expected.token_id) << row;
    EXPECT_EQ(tokens[row].logprob, expected.logprob) << row;
    ASSERT_EQ(tokens[row].top_logprobs.size(), expected.top_logprobs.size()) << row;
    for (size_t rank = 0; rank < expected.top_logprobs.size(); ++rank) {
      EXPECT_EQ(tokens[row].top_logprobs[rank].token_id, expected.top_logprobs[rank].token_id);
    }
  }
  EXPECT_EQ(tokens[0].top_logprobs.size(), 3u);

  // One row short of the plan's logits rows: refused before running anything.
  const absl::Status short_rows =
      sampled_backend->ForwardAndSample(plan, std::span(rows).first(1), tokens);
  EXPECT_EQ(short_rows.code(), absl::StatusCode::kInvalidArgument) << short_rows;
  EXPECT_TRUE(tokens.empty());
}

TEST(CpuBackendTest, MalformedPlansAreInvalidArgument) {
  const TinyModel model(TinyConfig(), DType::kF32, 7);
  auto backend = model.CreateBackend(2, 4, 16);
  ASSERT_NE(backend, nullptr);
  auto valid = [] {
    StepPlan plan;
    ScheduledSequence& sequence = plan.sequences.emplace_back();
    sequence.token_ids = {1, 2, 3, 4, 5};
    sequence.block_table = {0, 1};
    return plan;
  };
  std::vector<float> logits;
  ASSERT_TRUE(backend->Forward(valid(), logits).ok());
  std::vector<StepPlan> bad;
  bad.push_back(valid());
  bad.back().sequences[0].block_table = {0};  // too short for 5 tokens
  bad.push_back(valid());
  bad.back().sequences[0].block_table = {0, 16};  // out of range
  bad.push_back(valid());
  bad.back().sequences[0].block_table = {-1, 1};
  bad.push_back(valid());
  bad.back().sequences[0].token_ids[2] = 300;  // past the vocabulary
  bad.push_back(valid());
  bad.back().sequences[0].token_ids[0] = -4;
  bad.push_back(valid());
  bad.back().sequences[0].token_ids.clear();
  bad.push_back(valid());
  bad.back().sequences[0].start_position = -1;
  bad.push_back(valid());
  bad.back().sequences[0].start_position = int64_t{1} << 62;
  bad.push_back(valid());
  bad.back().block_copies.push_back({0, 16});
  bad.push_back(valid());
  bad.back().block_copies.push_back({-2, 3});
  for (size_t index = 0; index < bad.size(); ++index) {
    EXPECT_EQ(backend->Forward(bad[index], logits).code(), absl::StatusCode::kInvalidArgument)
        << "plan " << index;
  }
}

TEST(CpuBackendTest, MisshapenWeightsAreRejected) {
  const TinyModel model(TinyConfig(), DType::kF32, 8);
  LlamaWeights weights = model.weights();
  weights.layers[1].down_proj.shape = {96, 64};
  const auto backend = CreateCpuBackendFromWeights(model.config(), weights, {}, nullptr);
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace reflect
