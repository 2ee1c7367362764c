// `reflect bench (--model DIR | --preset NAME) [--backend cpu|cuda] [--json] [flags]`.
//
// --backend cuda: the benchmarks of issue #5 (cuda_bench.h: copy bandwidth and the batch-1
// roofline, throughput, time to first token); one rank only.
//
// --backend cpu (default): CPU backend throughput, driving Backend::Forward with plain StepPlans
// ([--batch_sizes 1,8,32] [--prompt_tokens 128] [--decode_tokens 32] [--tensor_parallel 1]
// [--pipeline_parallel 1]):
//
//   prefill: one prompt of --prompt_tokens tokens in one forward pass; tokens/s = N / time
//            (the median of three timed runs, after one warm-up run).
//   decode:  for each batch size B, B sequences with prompts of --prompt_tokens tokens (prefilled
//            untimed), one warm-up step, then --decode_tokens steps of B one-token decodes;
//            tokens/s = B x steps / time. Model forward only: sampling is not timed.
//
// With --tensor_parallel / --pipeline_parallel above 1, the ranks of a TP × PP replica are threads
// of this process (worker/parallel/thread_replica.h), each with --threads / ranks threads, and rank
// 0's backend is driven as above; each decode batch size also reports the share of the timed steps'
// forward time rank 0 spent in all-reduces (and, with PP, waiting on the pipeline).
//
// --preset NAME (model_presets.h) benchmarks that shape over random bf16 weights generated in
// memory from --seed (random_checkpoint.h) instead of a model directory.
//
// Token ids are random with a fixed seed, so runs are comparable. Prints a table, or with
// --json one JSON object. Exit codes: 0 done, 2 bad flags or model, 1 a failure while running.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/model_config.h"
#include "common/status_macros.h"
#include "kvcache/block_allocator.h"
#include "nlohmann/json.hpp"
#include "scheduler/step_plan.h"
#include "tools/reflect/backend_flags.h"
#include "tools/reflect/command.h"
#include "tools/reflect/common_flags.h"
#include "tools/reflect/cuda_bench.h"
#include "tools/reflect/model_presets.h"
#include "tools/reflect/random_checkpoint.h"
#include "worker/checkpoint.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/parallel/parallel_backend.h"
#include "worker/parallel/thread_replica.h"

ABSL_FLAG(std::string, batch_sizes, "1,8,32", "bench: decode batch sizes, comma separated");
ABSL_FLAG(int64_t, prompt_tokens, 128, "bench: prompt length for prefill and before decoding");
ABSL_FLAG(int64_t, decode_tokens, 32, "bench: timed decode steps per batch size");
ABSL_FLAG(int32_t, tensor_parallel, 1, "bench: tensor-parallel ranks (threads of this process)");
ABSL_FLAG(int32_t, pipeline_parallel, 1,
          "bench: pipeline-parallel stages (threads of this process)");
ABSL_DECLARE_FLAG(bool, json);  // defined with the generate command

namespace reflect::cli {
namespace {

constexpr int kBadInput = 2;
constexpr int kFailure = 1;
constexpr uint64_t kTokenSeed = 20240905;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One benchmark sequence: its blocks and how many of its tokens are in the KV cache.
struct BenchSequence {
  std::vector<int32_t> block_table;
  int64_t num_cached_tokens = 0;
};

// Runs the backend over hand-built plans, taking blocks from a BlockAllocator sized to it. When
// the backend is a ParallelBackend, also sums its last_step_stats() over the steps since
// ResetStepStats().
class BenchDriver {
 public:
  BenchDriver(Backend& backend, uint64_t seed)
      : backend_(backend),
        parallel_(dynamic_cast<const ParallelBackend*>(&backend)),
        allocator_(static_cast<int32_t>(backend.num_kv_blocks())),
        random_(seed),
        token_distribution_(0, static_cast<int32_t>(backend.vocab_size() - 1)) {}

  // A sequence with blocks for `max_length` tokens.
  absl::StatusOr<BenchSequence> NewSequence(int64_t max_length) {
    BenchSequence sequence;
    const int64_t num_blocks = (max_length + backend_.block_size() - 1) / backend_.block_size();
    for (int64_t index = 0; index < num_blocks; ++index) {
      REFLECT_ASSIGN_OR_RETURN(const int32_t block, allocator_.Allocate());
      sequence.block_table.push_back(block);
    }
    return sequence;
  }

  void Free(BenchSequence& sequence) {
    for (int32_t block : sequence.block_table) allocator_.Release(block);
    sequence.block_table.clear();
  }

  // One forward pass that appends `num_tokens` random tokens to each of `sequences`.
  absl::Status Step(std::vector<BenchSequence>& sequences, int64_t num_tokens) {
    StepPlan plan;
    for (size_t index = 0; index < sequences.size(); ++index) {
      BenchSequence& sequence = sequences[index];
      ScheduledSequence& scheduled = plan.sequences.emplace_back();
      scheduled.sequence_id = static_cast<int64_t>(index);
      for (int64_t count = 0; count < num_tokens; ++count) {
        scheduled.token_ids.push_back(token_distribution_(random_));
      }
      scheduled.start_position = sequence.num_cached_tokens;
      scheduled.block_table = sequence.block_table;
      scheduled.needs_logits = true;
      sequence.num_cached_tokens += num_tokens;
    }
    REFLECT_RETURN_IF_ERROR(backend_.Forward(plan, logits_));
    if (parallel_ != nullptr) {
      const ParallelStepStats stats = parallel_->last_step_stats();
      step_stats_.forward_seconds += stats.forward_seconds;
      step_stats_.allreduce_seconds += stats.allreduce_seconds;
      step_stats_.pipeline_wait_seconds += stats.pipeline_wait_seconds;
    }
    return absl::OkStatus();
  }

  bool is_parallel() const { return parallel_ != nullptr; }
  void ResetStepStats() { step_stats_ = {}; }
  const ParallelStepStats& step_stats() const { return step_stats_; }

 private:
  Backend& backend_;
  const ParallelBackend* parallel_;  // null for a single-rank backend
  ParallelStepStats step_stats_;
  BlockAllocator allocator_;
  std::mt19937_64 random_;
  std::uniform_int_distribution<int32_t> token_distribution_;
  std::vector<float> logits_;
};

struct DecodeFigures {
  int64_t batch_size = 0;
  double tokens_per_second = 0.0;
  double seconds_per_step = 0.0;
  // Parallel backends only: shares of rank 0's forward time over the timed steps.
  double allreduce_share = 0.0;
  double pipeline_wait_share = 0.0;
};

absl::StatusOr<double> MeasurePrefill(BenchDriver& driver, int64_t prompt_tokens) {
  std::vector<double> seconds;
  for (int run = 0; run < 4; ++run) {
    REFLECT_ASSIGN_OR_RETURN(BenchSequence sequence, driver.NewSequence(prompt_tokens));
    std::vector<BenchSequence> batch = {std::move(sequence)};
    const Clock::time_point start = Clock::now();
    const absl::Status status = driver.Step(batch, prompt_tokens);
    const double elapsed = SecondsSince(start);
    driver.Free(batch[0]);
    REFLECT_RETURN_IF_ERROR(status);
    if (run > 0) seconds.push_back(elapsed);  // run 0 is the warm-up
  }
  std::sort(seconds.begin(), seconds.end());
  return static_cast<double>(prompt_tokens) / seconds[seconds.size() / 2];
}

absl::StatusOr<DecodeFigures> MeasureDecode(BenchDriver& driver, int64_t batch_size,
                                            int64_t prompt_tokens, int64_t decode_tokens) {
  std::vector<BenchSequence> batch;
  absl::Status status;
  for (int64_t index = 0; index < batch_size && status.ok(); ++index) {
    absl::StatusOr<BenchSequence> sequence = driver.NewSequence(prompt_tokens + decode_tokens + 1);
    if (!sequence.ok()) {
      status = sequence.status();
      break;
    }
    std::vector<BenchSequence> single = {*std::move(sequence)};
    status = driver.Step(single, prompt_tokens);
    batch.push_back(std::move(single[0]));
  }
  DecodeFigures figures{.batch_size = batch_size};
  if (status.ok()) status = driver.Step(batch, 1);  // warm-up
  driver.ResetStepStats();
  const Clock::time_point start = Clock::now();
  for (int64_t step = 0; step < decode_tokens && status.ok(); ++step)
    status = driver.Step(batch, 1);
  const double elapsed = SecondsSince(start);
  for (BenchSequence& sequence : batch) driver.Free(sequence);
  REFLECT_RETURN_IF_ERROR(status);
  figures.seconds_per_step = elapsed / static_cast<double>(decode_tokens);
  figures.tokens_per_second = static_cast<double>(batch_size * decode_tokens) / elapsed;
  const ParallelStepStats& stats = driver.step_stats();
  if (stats.forward_seconds > 0.0) {
    figures.allreduce_share = stats.allreduce_seconds / stats.forward_seconds;
    figures.pipeline_wait_share = stats.pipeline_wait_seconds / stats.forward_seconds;
  }
  return figures;
}

int Fail(const std::string& message, int exit_code) {
  std::fprintf(stderr, "reflect bench: %s\n", message.c_str());
  return exit_code;
}

// The model to benchmark: a directory (--model) or a preset shape with random weights
// (--preset).
struct BenchModel {
  std::string label;                // the directory, or "preset NAME"
  std::filesystem::path directory;  // empty for a preset
  ModelConfig config;
};

absl::StatusOr<BenchModel> BenchModelFromFlags() {
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::optional<std::string> preset = absl::GetFlag(FLAGS_preset);
  if (model.empty() == !preset.has_value()) {
    return absl::InvalidArgumentError("give exactly one of --model DIR and --preset NAME");
  }
  if (preset.has_value()) {
    REFLECT_ASSIGN_OR_RETURN(ModelConfig config, ModelPresetConfig(*preset));
    return BenchModel{.label = "preset " + *preset, .directory = {}, .config = std::move(config)};
  }
  REFLECT_ASSIGN_OR_RETURN(ModelDirectoryConfig config, LoadModelConfig(model));
  return BenchModel{.label = model, .directory = model, .config = std::move(config.model)};
}

// The model's weights: its directory's checkpoint, or random bf16 weights made in memory.
absl::StatusOr<std::unique_ptr<Checkpoint>> OpenWeights(const BenchModel& model) {
  if (!model.directory.empty()) return Checkpoint::Open(model.directory);
  return MakeRandomCheckpoint(model.config, absl::GetFlag(FLAGS_seed), DType::kBF16,
                              absl::GetFlag(FLAGS_threads));
}

int RunBench(const std::vector<char*>& positional_args) {
  if (!positional_args.empty()) {
    return Fail(absl::StrCat("unexpected argument '", positional_args.front(), "'"), kBadInput);
  }
  const absl::StatusOr<BenchModel> bench_model = BenchModelFromFlags();
  if (!bench_model.ok()) return Fail(bench_model.status().ToString(), kBadInput);
  const absl::StatusOr<bool> use_cuda = CudaBackendRequested();
  if (!use_cuda.ok()) return Fail(use_cuda.status().ToString(), kBadInput);
  const int tensor_parallel = absl::GetFlag(FLAGS_tensor_parallel);
  const int pipeline_parallel = absl::GetFlag(FLAGS_pipeline_parallel);
  if (tensor_parallel < 1 || pipeline_parallel < 1) {
    return Fail("--tensor_parallel and --pipeline_parallel must be at least 1", kBadInput);
  }
  const int world_size = tensor_parallel * pipeline_parallel;
  if (*use_cuda) {
    if (world_size != 1) {
      return Fail(
          "--backend cuda: the CUDA backend runs one rank per replica for now "
          "(--tensor_parallel and --pipeline_parallel must be 1)",
          kBadInput);
    }
    return RunCudaBench({.config = bench_model->config,
                         .model_label = bench_model->label,
                         .model_dir = bench_model->directory,
                         .seed = absl::GetFlag(FLAGS_seed),
                         .num_threads = absl::GetFlag(FLAGS_threads),
                         .json = absl::GetFlag(FLAGS_json)});
  }
  const int64_t prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int64_t decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  if (prompt_tokens < 1 || decode_tokens < 1) {
    return Fail("--prompt_tokens and --decode_tokens must be at least 1", kBadInput);
  }
  std::vector<int64_t> batch_sizes;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batch_sizes), ',')) {
    int64_t batch_size = 0;
    if (!absl::SimpleAtoi(part, &batch_size) || batch_size < 1) {
      return Fail(
          absl::StrCat("--batch_sizes: '", std::string(part), "' is not a positive integer"),
          kBadInput);
    }
    batch_sizes.push_back(batch_size);
  }
  const ModelConfig& shape = bench_model->config;
  const int64_t max_length = prompt_tokens + decode_tokens + 1;
  if (shape.max_position_embeddings > 0 && max_length > shape.max_position_embeddings) {
    return Fail(absl::StrCat("--prompt_tokens + --decode_tokens + 1 = ", max_length,
                             " exceeds the context length ", shape.max_position_embeddings),
                kBadInput);
  }

  CpuBackendOptions options;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  if (world_size > 1) {
    const int threads = options.num_threads > 0
                            ? options.num_threads
                            : static_cast<int>(std::thread::hardware_concurrency());
    options.num_threads = std::max(1, threads / world_size);
  }
  const int64_t blocks_per_sequence = (max_length + options.block_size - 1) / options.block_size;
  options.num_kv_blocks =
      blocks_per_sequence *
      std::max<int64_t>(1, *std::max_element(batch_sizes.begin(), batch_sizes.end()));
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = OpenWeights(*bench_model);
  if (!checkpoint.ok()) return Fail(checkpoint.status().ToString(), kFailure);
  std::unique_ptr<Backend> single_rank;
  std::unique_ptr<ThreadReplica> replica;  // world_size > 1; outlives the driver
  if (world_size == 1) {
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        CreateCpuBackend(std::shared_ptr<const Checkpoint>(*std::move(checkpoint)), shape, options);
    if (!backend.ok()) return Fail(backend.status().ToString(), kFailure);
    single_rank = *std::move(backend);
  } else {
    replica = std::make_unique<ThreadReplica>(*std::move(checkpoint), shape, tensor_parallel,
                                              pipeline_parallel, options, GlooOptions{});
    if (!replica->leader().ok()) {
      const absl::Status& status = replica->leader().status();
      return Fail(absl::StrCat("--tensor_parallel ", tensor_parallel, " --pipeline_parallel ",
                               pipeline_parallel, ": ", status.ToString()),
                  status.code() == absl::StatusCode::kInvalidArgument ? kBadInput : kFailure);
    }
  }
  BenchDriver driver(world_size == 1 ? *single_rank : **replica->leader(), kTokenSeed);

  const absl::StatusOr<double> prefill = MeasurePrefill(driver, prompt_tokens);
  if (!prefill.ok()) return Fail(prefill.status().ToString(), kFailure);
  std::vector<DecodeFigures> decodes;
  for (int64_t batch_size : batch_sizes) {
    absl::StatusOr<DecodeFigures> figures =
        MeasureDecode(driver, batch_size, prompt_tokens, decode_tokens);
    if (!figures.ok()) return Fail(figures.status().ToString(), kFailure);
    decodes.push_back(*figures);
  }
  if (replica != nullptr) {
    absl::Status stopped = (*replica->leader())->Shutdown();
    for (const absl::Status& follower : replica->JoinFollowers()) stopped.Update(follower);
    if (!stopped.ok()) return Fail(stopped.ToString(), kFailure);
  }

  const std::string& model = bench_model->label;
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json decode_json = nlohmann::json::array();
    for (const DecodeFigures& figures : decodes) {
      nlohmann::json entry = {{"batch_size", figures.batch_size},
                              {"tokens_per_second", figures.tokens_per_second},
                              {"seconds_per_step", figures.seconds_per_step}};
      if (world_size > 1) entry["allreduce_share"] = figures.allreduce_share;
      if (pipeline_parallel > 1) entry["pipeline_wait_share"] = figures.pipeline_wait_share;
      decode_json.push_back(std::move(entry));
    }
    nlohmann::json report = {{"model", model},
                             {"num_hidden_layers", shape.num_hidden_layers},
                             {"hidden_size", shape.hidden_size},
                             {"vocab_size", shape.vocab_size},
                             {"prompt_tokens", prompt_tokens},
                             {"decode_tokens", decode_tokens},
                             {"prefill_tokens_per_second", *prefill},
                             {"decode", decode_json}};
    if (world_size > 1) {
      report["tensor_parallel"] = tensor_parallel;
      report["pipeline_parallel"] = pipeline_parallel;
      report["threads_per_rank"] = options.num_threads;
    }
    std::printf("%s\n", report.dump().c_str());
    return 0;
  }
  std::printf("model %s: %lld layers, hidden %lld, vocab %lld\n", model.c_str(),
              static_cast<long long>(shape.num_hidden_layers),
              static_cast<long long>(shape.hidden_size), static_cast<long long>(shape.vocab_size));
  if (world_size > 1) {
    std::printf("replica: tensor parallel %d x pipeline parallel %d, %d threads per rank\n",
                tensor_parallel, pipeline_parallel, options.num_threads);
  }
  std::printf("prefill  %lld tokens: %10.1f tokens/s\n", static_cast<long long>(prompt_tokens),
              *prefill);
  std::printf("%-8s %14s %12s", "batch", "decode tok/s", "ms/step");
  if (world_size > 1) std::printf(" %12s", "allreduce %");
  if (pipeline_parallel > 1) std::printf(" %10s", "pp wait %");
  std::printf("\n");
  for (const DecodeFigures& figures : decodes) {
    std::printf("%-8lld %14.1f %12.2f", static_cast<long long>(figures.batch_size),
                figures.tokens_per_second, figures.seconds_per_step * 1e3);
    if (world_size > 1) std::printf(" %12.1f", figures.allreduce_share * 100.0);
    if (pipeline_parallel > 1) std::printf(" %10.1f", figures.pipeline_wait_share * 100.0);
    std::printf("\n");
  }
  return 0;
}

const CommandRegistration kRegistration(
    {"bench", "prefill and decode throughput (CPU); the issue #5 benchmarks (CUDA)", &RunBench});

}  // namespace
}  // namespace reflect::cli
