// Tensor and pipeline parallelism on the CPU backend (issue #4), with every rank a thread of this
// process joined over Gloo and an in-process store: shard slicing, micro-batch splits, logits of
// TP / PP / TP × PP replicas against the single-rank backend on the same plans (multi-chunk
// prefill, decodes, a shared prefix of blocks), an EngineLoop over a replica against one over the
// single-rank backend, and the failures: a shard that does not divide the model, a leader or a
// follower that goes away.
//
// Tolerance: with TP > 1, o_proj and down_proj are summed as per-rank partial dot products that
// the all-reduce then adds, instead of one dot product over all columns. In f32 that changes a few
// ulps per layer, about 1e-6 of the largest logit by the end (measured 1.0e-6 on tiny, 0.9e-6 on
// gqa-small); we allow 1e-5 × max |logit|. bf16 weights round each matmul input to bf16, so an
// ulp-level change of the residual can move an activation by a bf16 step (2^-8 relative):
// measured 3e-3 of max |logit|, allowed 2e-2. Greedy argmax must agree exactly, and PP alone (no
// all-reduce in the arithmetic) must be bit-identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/model_config.h"
#include "tests/support/test_paths.h"
#include "worker/checkpoint.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/engine_loop.h"
#include "worker/model_shard.h"
#include "worker/parallel/communicator_factory.h"
#include "worker/parallel/follower.h"
#include "worker/parallel/in_process_store.h"
#include "worker/parallel/parallel_backend.h"
#include "worker/parallel/parallel_rank.h"
#include "worker/parallel/thread_replica.h"

namespace reflect {
namespace {

constexpr int64_t kBlockSize = 4;
constexpr absl::Duration kGroupTimeout = absl::Seconds(20);

struct TestModel {
  std::shared_ptr<const Checkpoint> checkpoint;
  ModelConfig config;
};

TestModel LoadTestModel(const std::string& name) {
  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(testing::TestModelPath(name));
  EXPECT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
      Checkpoint::Open(testing::TestModelPath(name));
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return {std::shared_ptr<const Checkpoint>(std::move(*checkpoint)), config->model};
}

CpuBackendOptions Options(int64_t block_size = kBlockSize, int64_t num_kv_blocks = 96) {
  CpuBackendOptions options;
  options.num_kv_blocks = num_kv_blocks;
  options.block_size = block_size;
  options.num_threads = 1;
  return options;
}

GlooOptions TestGlooOptions() {
  GlooOptions options;
  options.timeout = kGroupTimeout;
  return options;
}

ParallelLayout Layout(int tp, int pp, int rank) {
  ParallelLayout layout;
  layout.tensor_parallel = tp;
  layout.pipeline_parallel = pp;
  layout.rank = rank;
  return layout;
}

// One sequence of the scripted steps: its prompt prefilled in `chunks`, then `decodes` greedy
// tokens taken from the reference's logits.
struct ScriptedSequence {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated
  std::vector<int64_t> chunks;
  int64_t decodes = 0;
  int64_t first_step = 0;
  int64_t computed = 0;  // tokens in the KV cache
  std::vector<int32_t> blocks;
  size_t next_chunk = 0;
};

std::vector<int32_t> Prompt(int64_t length, int32_t seed) {
  std::vector<int32_t> tokens(length);
  for (int64_t index = 0; index < length; ++index) {
    tokens[index] = static_cast<int32_t>((seed + index * 7919) % 128000);
  }
  return tokens;
}

ScriptedSequence Sequence(int64_t id, std::vector<int32_t> prompt, std::vector<int64_t> chunks,
                          int64_t decodes, int64_t first_step) {
  ScriptedSequence sequence;
  sequence.id = id;
  sequence.tokens = std::move(prompt);
  sequence.chunks = std::move(chunks);
  sequence.decodes = decodes;
  sequence.first_step = first_step;
  return sequence;
}

// Five sequences over nine steps: chunked prefills, decodes, a single-token prompt, and one that
// starts on two blocks another sequence computed (a prefix-cache hit).
std::vector<ScriptedSequence> Script() {
  std::vector<ScriptedSequence> script;
  script.push_back(Sequence(1, Prompt(13, 11), {5, 5, 3}, 5, 0));
  script.push_back(Sequence(2, Prompt(6, 23), {6}, 7, 0));
  script.push_back(Sequence(5, Prompt(17, 37), {8, 9}, 4, 1));
  script.push_back(Sequence(9, Prompt(1, 41), {1}, 3, 3));
  // Sequence 12 shares sequence 1's first two blocks: 8 tokens already computed.
  std::vector<int32_t> prompt = Prompt(8, 11);
  const std::vector<int32_t> own = Prompt(3, 53);
  prompt.insert(prompt.end(), own.begin(), own.end());
  script.push_back(Sequence(12, std::move(prompt), {3}, 4, 2));
  script.back().computed = 8;
  return script;
}

struct Difference {
  double max_abs = 0.0;
  double max_logit = 0.0;
  int64_t rows = 0;
  int64_t argmax_mismatches = 0;
  bool bit_identical = true;
  ParallelStepStats totals;
  double reference_seconds = 0.0;
};

int32_t Argmax(const float* row, int64_t vocab) {
  return static_cast<int32_t>(std::max_element(row, row + vocab) - row);
}

// Runs the script through `reference` and `candidate` step by step; both see the same plans.
Difference CompareScript(Backend& reference, ParallelBackend& candidate) {
  const int64_t vocab = reference.vocab_size();
  EXPECT_EQ(candidate.vocab_size(), vocab);
  std::vector<ScriptedSequence> script = Script();
  int32_t next_block = 0;
  Difference difference;
  std::vector<float> expected;
  std::vector<float> actual;
  for (int64_t step = 0;; ++step) {
    StepPlan plan;
    std::vector<ScriptedSequence*> in_plan;
    for (ScriptedSequence& sequence : script) {
      if (sequence.first_step > step) continue;
      if (sequence.id == 12 && sequence.blocks.empty()) {
        sequence.blocks = {script[0].blocks[0], script[0].blocks[1]};
      }
      int64_t count = 1;
      bool needs_logits = true;
      if (sequence.next_chunk < sequence.chunks.size()) {
        count = sequence.chunks[sequence.next_chunk++];
        needs_logits = sequence.next_chunk == sequence.chunks.size();
      } else if (sequence.decodes-- <= 0) {
        continue;
      }
      while (static_cast<int64_t>(sequence.blocks.size()) * kBlockSize <
             sequence.computed + count) {
        sequence.blocks.push_back(next_block++);
      }
      ScheduledSequence& scheduled = plan.sequences.emplace_back();
      scheduled.sequence_id = sequence.id;
      scheduled.start_position = sequence.computed;
      scheduled.token_ids.assign(sequence.tokens.begin() + sequence.computed,
                                 sequence.tokens.begin() + sequence.computed + count);
      scheduled.block_table = sequence.blocks;
      scheduled.needs_logits = needs_logits;
      sequence.computed += count;
      in_plan.push_back(&sequence);
    }
    if (plan.sequences.empty()) break;
    const absl::Time start = absl::Now();
    EXPECT_TRUE(reference.Forward(plan, expected).ok());
    difference.reference_seconds += absl::ToDoubleSeconds(absl::Now() - start);
    const absl::Status status = candidate.Forward(plan, actual);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok() || actual.size() != expected.size()) {
      ADD_FAILURE() << "step " << step << ": " << actual.size() << " logits, expected "
                    << expected.size();
      return difference;
    }
    const ParallelStepStats stats = candidate.last_step_stats();
    difference.totals.forward_seconds += stats.forward_seconds;
    difference.totals.allreduce_seconds += stats.allreduce_seconds;
    difference.totals.pipeline_wait_seconds += stats.pipeline_wait_seconds;
    difference.bit_identical = difference.bit_identical && actual == expected;
    for (size_t index = 0; index < expected.size(); ++index) {
      difference.max_abs =
          std::max<double>(difference.max_abs, std::fabs(actual[index] - expected[index]));
      difference.max_logit = std::max<double>(difference.max_logit, std::fabs(expected[index]));
    }
    int64_t row = 0;
    for (size_t index = 0; index < plan.sequences.size(); ++index) {
      if (!plan.sequences[index].needs_logits) continue;
      const int32_t token = Argmax(expected.data() + row * vocab, vocab);
      difference.argmax_mismatches += token != Argmax(actual.data() + row * vocab, vocab);
      in_plan[index]->tokens.push_back(token);
      ++row;
    }
    difference.rows += row;
  }
  return difference;
}

struct ReplicaCase {
  std::string model;
  int tp = 1;
  int pp = 1;
  double tolerance = 1e-5;  // × max |logit|
};

class ParallelLogitsTest : public ::testing::TestWithParam<ReplicaCase> {};

TEST_P(ParallelLogitsTest, MatchTheSingleRankBackend) {
  const ReplicaCase& replica_case = GetParam();
  const TestModel model = LoadTestModel(replica_case.model);
  absl::StatusOr<std::unique_ptr<Backend>> reference =
      CreateCpuBackend(model.checkpoint, model.config, Options());
  ASSERT_TRUE(reference.ok()) << reference.status();
  ThreadReplica replica(model.checkpoint, model.config, replica_case.tp, replica_case.pp, Options(),
                        TestGlooOptions());
  ASSERT_TRUE(replica.leader().ok()) << replica.leader().status();
  const Difference difference = CompareScript(**reference, **replica.leader());
  std::printf(
      "%s TP %d × PP %d: %ld logit rows, max |diff| %.3g (%.3g of max |logit| %.3g), "
      "forward %.3f s (single rank %.3f s), all-reduce %.3f s, pipeline waits %.3f s\n",
      replica_case.model.c_str(), replica_case.tp, replica_case.pp, difference.rows,
      difference.max_abs, difference.max_abs / difference.max_logit, difference.max_logit,
      difference.totals.forward_seconds, difference.reference_seconds,
      difference.totals.allreduce_seconds, difference.totals.pipeline_wait_seconds);
  EXPECT_EQ(difference.rows, 28);
  EXPECT_EQ(difference.argmax_mismatches, 0);
  EXPECT_LE(difference.max_abs, replica_case.tolerance * difference.max_logit);
  if (replica_case.tp == 1) {
    EXPECT_TRUE(difference.bit_identical);
  } else {
    EXPECT_GT(difference.totals.allreduce_seconds, 0.0);
  }
  for (const absl::Status& status : replica.JoinFollowers()) EXPECT_TRUE(status.ok()) << status;
}

INSTANTIATE_TEST_SUITE_P(Replicas, ParallelLogitsTest,
                         ::testing::Values(ReplicaCase{"tiny", 2, 1}, ReplicaCase{"tiny", 1, 2},
                                           ReplicaCase{"tiny", 2, 2}, ReplicaCase{"tiny", 4, 1},
                                           ReplicaCase{"gqa-small", 2, 1},
                                           ReplicaCase{"gqa-small", 2, 2},
                                           ReplicaCase{"gqa-small", 1, 3},
                                           ReplicaCase{"gqa-small", 1, 1},
                                           ReplicaCase{"tiny-bf16", 2, 2, 2e-2}),
                         [](const ::testing::TestParamInfo<ReplicaCase>& info) {
                           std::string name = absl::StrFormat("%s_tp%d_pp%d", info.param.model,
                                                              info.param.tp, info.param.pp);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Records a request's tokens and waits for its end.
class TokenSink : public GenerationSink {
 public:
  void OnToken(const GeneratedToken& token) override {
    const std::lock_guard lock(mutex_);
    tokens_.push_back(token.token_id);
  }
  void OnFinished(const absl::Status& status, const GenerationSummary&) override {
    const std::lock_guard lock(mutex_);
    status_ = status;
    finished_.notify_all();
  }
  std::vector<int32_t> Wait() {
    std::unique_lock lock(mutex_);
    EXPECT_TRUE(finished_.wait_for(lock, std::chrono::seconds(120),
                                   [this] { return status_.has_value(); }));
    EXPECT_TRUE(status_.has_value() && status_->ok()) << status_.value_or(absl::OkStatus());
    return tokens_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable finished_;
  std::vector<int32_t> tokens_;
  std::optional<absl::Status> status_;
};

// 32 concurrent greedy requests of different lengths; each request's tokens.
std::vector<std::vector<int32_t>> Generate(std::unique_ptr<Backend> backend,
                                           const ModelConfig& config) {
  EngineLoopOptions options;
  options.scheduler.max_model_length = 4096;
  options.scheduler.max_num_batched_tokens = 256;
  options.eos_token_ids = config.eos_token_ids;
  absl::StatusOr<std::unique_ptr<EngineLoop>> engine =
      EngineLoop::Create(std::move(backend), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  std::vector<std::shared_ptr<TokenSink>> sinks;
  for (int index = 0; index < 32; ++index) {
    EngineRequest request;
    request.prompt_token_ids = Prompt(3 + index * 7 % 40, 1000 + 31 * index);
    request.sampling.max_tokens = 3 + index % 6;
    request.sampling.ignore_eos = true;
    sinks.push_back(std::make_shared<TokenSink>());
    EXPECT_TRUE((*engine)->Submit(std::move(request), sinks.back()).ok());
  }
  std::vector<std::vector<int32_t>> outputs;
  for (const std::shared_ptr<TokenSink>& sink : sinks) outputs.push_back(sink->Wait());
  return outputs;
}

TEST(ParallelEngineTest, GreedyTokensEqualTheSingleRankEngine) {
  const TestModel model = LoadTestModel("tiny");
  const CpuBackendOptions options = Options(16, 160);
  absl::StatusOr<std::unique_ptr<Backend>> single =
      CreateCpuBackend(model.checkpoint, model.config, options);
  ASSERT_TRUE(single.ok()) << single.status();
  const std::vector<std::vector<int32_t>> expected = Generate(std::move(*single), model.config);
  ThreadReplica replica(model.checkpoint, model.config, 2, 2, options, TestGlooOptions());
  ASSERT_TRUE(replica.leader().ok()) << replica.leader().status();
  const std::vector<std::vector<int32_t>> actual = Generate(replica.TakeLeader(), model.config);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t index = 0; index < expected.size(); ++index) {
    EXPECT_EQ(actual[index], expected[index]) << "request " << index;
    EXPECT_EQ(actual[index].size(), static_cast<size_t>(3 + index % 6));
  }
  for (const absl::Status& status : replica.JoinFollowers()) EXPECT_TRUE(status.ok()) << status;
}

TEST(ModelShardTest, SlicesRowsInPlaceAndGathersColumns) {
  const TestModel model = LoadTestModel("tiny");  // 8 heads, 2 KV heads, head_dim 32
  absl::StatusOr<LlamaWeights> weights = LoadLlamaWeights(*model.checkpoint, model.config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ModelShard shard;
  shard.tp_rank = 3;
  shard.tp_size = 4;
  shard.layer_begin = 2;
  shard.layer_end = 4;
  shard.first_stage = false;
  absl::StatusOr<ShardedModel> sharded = ShardModel(model.config, *weights, shard);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(sharded->config.num_attention_heads, 2);
  EXPECT_EQ(sharded->config.num_key_value_heads, 1);
  EXPECT_EQ(sharded->first_kv_head, 1);  // ranks 2 and 3 share KV head 1
  EXPECT_EQ(sharded->config.intermediate_size, 192);
  EXPECT_EQ(sharded->config.num_hidden_layers, 2);
  EXPECT_EQ(sharded->vocab_begin, 3 * 32064);
  EXPECT_EQ(sharded->config.vocab_size, 128256 - 3 * 32064);
  EXPECT_EQ(sharded->weights.embed_tokens.data, nullptr);
  const LlamaLayerWeights& source = weights->layers[2];
  const LlamaLayerWeights& local = sharded->weights.layers[0];
  EXPECT_EQ(local.q_proj.data, source.q_proj.data + 6 * 32 * 256 * 4);  // heads 6, 7
  EXPECT_EQ(local.k_proj.data, source.k_proj.data + 1 * 32 * 256 * 4);
  EXPECT_EQ(local.gate_proj.data, source.gate_proj.data + 3 * 192 * 256 * 4);
  EXPECT_EQ(sharded->weights.lm_head.data, weights->lm_head.data + 3 * 32064 * 256 * 4);
  ASSERT_EQ(local.o_proj.shape, (std::vector<int64_t>{256, 64}));
  ASSERT_EQ(local.down_proj.shape, (std::vector<int64_t>{256, 192}));
  for (int64_t row : {0, 17, 255}) {
    for (int64_t column : {0, 31, 63}) {
      EXPECT_EQ(local.o_proj.At(row * 64 + column), source.o_proj.At(row * 256 + 192 + column));
    }
    EXPECT_EQ(local.down_proj.At(row * 192 + 5), source.down_proj.At(row * 768 + 3 * 192 + 5));
  }
  // One KV head and TP 2 (gqa-small): both ranks keep KV head 0.
  const TestModel gqa = LoadTestModel("gqa-small");
  absl::StatusOr<LlamaWeights> gqa_weights = LoadLlamaWeights(*gqa.checkpoint, gqa.config);
  ASSERT_TRUE(gqa_weights.ok()) << gqa_weights.status();
  absl::StatusOr<ShardedModel> second =
      ShardModel(gqa.config, *gqa_weights, ShardOf(Layout(2, 1, 1), gqa.config));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->first_kv_head, 0);
  EXPECT_EQ(second->weights.layers[0].k_proj.data, gqa_weights->layers[0].k_proj.data);
}

TEST(ModelShardTest, RefusesShardsThatDoNotDivideTheModel) {
  ModelConfig config;
  config.hidden_size = 64;
  config.intermediate_size = 96;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 8;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  config.vocab_size = 5;
  const LlamaWeights no_weights;  // never read: the shape checks come first
  auto shard_with = [&](int tp, int64_t layer_begin, int64_t layer_end) {
    ModelShard shard;
    shard.tp_size = tp;
    shard.layer_begin = layer_begin;
    shard.layer_end = layer_end;
    return ShardModel(config, no_weights, shard).status();
  };
  const absl::Status three = shard_with(3, 0, 2);
  EXPECT_EQ(three.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(three.message().find("tensor parallel 3"), std::string::npos) << three;
  EXPECT_EQ(shard_with(4, 0, 2).code(), absl::StatusCode::kInvalidArgument);  // vocab 5
  EXPECT_EQ(shard_with(1, 1, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shard_with(1, 0, 3).code(), absl::StatusCode::kInvalidArgument);
  config.intermediate_size = 97;
  EXPECT_EQ(shard_with(2, 0, 2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParallelBackendTest, AShardThatDoesNotDivideTheModelIsInvalidOnEveryRank) {
  const TestModel model = LoadTestModel("tiny");  // 8 heads, 2 KV heads
  ThreadReplica replica(model.checkpoint, model.config, 3, 1, Options(), TestGlooOptions());
  EXPECT_EQ(replica.leader().status().code(), absl::StatusCode::kInvalidArgument)
      << replica.leader().status();
  for (const absl::Status& status : replica.JoinFollowers()) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
}

TEST(MicroBatchTest, SplitsIntoBalancedNonEmptyRanges) {
  StepPlan plan;
  for (int64_t tokens : {1, 1, 1, 30, 1, 1, 20, 1}) {
    plan.sequences.emplace_back().token_ids.resize(tokens);
  }
  EXPECT_EQ(MicroBatchBounds(plan, 1), (std::vector<size_t>{0, 8}));
  EXPECT_EQ(MicroBatchBounds(plan, 2), (std::vector<size_t>{0, 4, 8}));
  EXPECT_EQ(MicroBatchBounds(plan, 3), (std::vector<size_t>{0, 4, 6, 8}));
  EXPECT_EQ(MicroBatchBounds(plan, 8), (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(MicroBatchBounds(plan, 20), (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(MicroBatchBounds(StepPlan(), 4), (std::vector<size_t>{0}));
}

TEST(ParallelFollowerTest, ReturnsAnErrorWhenTheLeaderGoesAway) {
  const TestModel model = LoadTestModel("tiny");
  auto store = std::make_shared<InProcessStore>();
  absl::Status follower_status;
  std::thread follower([&] {
    absl::StatusOr<ReplicaGroup> group =
        JoinReplicaGroup(store, Layout(2, 1, 1), CommunicatorKind::kGloo, TestGlooOptions());
    follower_status =
        group.ok() ? RunFollower(model.checkpoint, model.config, Options(), std::move(*group))
                   : group.status();
  });
  {
    absl::StatusOr<ReplicaGroup> leader_group =
        JoinReplicaGroup(store, Layout(2, 1, 0), CommunicatorKind::kGloo, TestGlooOptions());
    ASSERT_TRUE(leader_group.ok()) << leader_group.status();
    absl::SleepFor(absl::Milliseconds(200));  // the follower waits for a plan by now
  }                                           // gone without a stop message
  const absl::Time start = absl::Now();
  follower.join();
  EXPECT_LT(absl::Now() - start, kGroupTimeout);
  EXPECT_EQ(follower_status.code(), absl::StatusCode::kUnavailable) << follower_status;
}

TEST(ParallelBackendTest, ForwardFailsWhenAFollowerIsGone) {
  const TestModel model = LoadTestModel("tiny");
  auto store = std::make_shared<InProcessStore>();
  std::thread follower([&] {
    absl::StatusOr<ReplicaGroup> group =
        JoinReplicaGroup(store, Layout(1, 2, 1), CommunicatorKind::kGloo, TestGlooOptions());
    EXPECT_TRUE(group.ok()) << group.status();
  });  // the follower leaves at once
  absl::StatusOr<ReplicaGroup> group =
      JoinReplicaGroup(store, Layout(1, 2, 0), CommunicatorKind::kGloo, TestGlooOptions());
  ASSERT_TRUE(group.ok()) << group.status();
  follower.join();
  absl::StatusOr<std::unique_ptr<ParallelBackend>> leader =
      CreateParallelCpuBackend(model.checkpoint, model.config, Options(), std::move(*group));
  ASSERT_TRUE(leader.ok()) << leader.status();
  StepPlan plan;
  ScheduledSequence& sequence = plan.sequences.emplace_back();
  sequence.sequence_id = 1;
  sequence.token_ids = {5, 6, 7};
  sequence.block_table = {0};
  std::vector<float> logits;
  const absl::Time start = absl::Now();
  const absl::Status status = (*leader)->Forward(plan, logits);
  EXPECT_LT(absl::Now() - start, kGroupTimeout);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

}  // namespace
}  // namespace reflect
