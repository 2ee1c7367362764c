#include "tools/reflect/cuda_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/reflect/backend_flags.h"
#include "tools/reflect/random_checkpoint.h"
#include "tools/reflect/weight_generator.h"
#include "worker/generator.h"

#ifdef REFLECT_WITH_CUDA
#include <cuda_runtime.h>

#include "worker/cuda/cuda_status.h"
#endif

namespace reflect::cli {
namespace {

constexpr int kFailure = 1;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// A request of `prompt_tokens` random ids generating exactly `max_tokens` greedy tokens.
GenerationRequest RandomRequest(int64_t prompt_tokens, int64_t max_tokens, int64_t vocab_size,
                                std::mt19937_64& random) {
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab_size - 1));
  GenerationRequest request;
  for (int64_t index = 0; index < prompt_tokens; ++index)
    request.prompt_ids.push_back(token(random));
  request.params.temperature = 0.0;
  request.params.max_tokens = max_tokens;
  request.params.ignore_eos = true;
  return request;
}

GeneratorOptions GeneratorOptionsFor(const ModelConfig& config, int64_t max_sequences,
                                     int64_t max_tokens_per_step) {
  GeneratorOptions options;
  options.max_num_seqs = max_sequences;
  options.max_num_batched_tokens = max_tokens_per_step;
  options.max_model_length = config.max_position_embeddings;
  return options;
}

}  // namespace

int64_t DecodeStepBytes(const ModelConfig& config, int64_t context_tokens) {
  constexpr int64_t kMatrixElementBytes = 2;  // bf16
  constexpr int64_t kNormElementBytes = 4;    // f32
  const int64_t hidden = config.hidden_size;
  const int64_t query_width = config.num_attention_heads * config.head_dim;
  const int64_t key_value_width = config.num_key_value_heads * config.head_dim;
  const int64_t layer_matrix_elements = hidden * (query_width + 2 * key_value_width) +
                                        query_width * hidden +
                                        3 * config.intermediate_size * hidden;
  const int64_t layer_bytes =
      layer_matrix_elements * kMatrixElementBytes + 2 * hidden * kNormElementBytes;
  const int64_t head_bytes = config.vocab_size * hidden * kMatrixElementBytes;
  // Tied embeddings are the LM head, read whole; untied, one embedding row per token.
  const int64_t embedding_bytes = config.tie_word_embeddings ? 0 : hidden * kMatrixElementBytes;
  const int64_t key_value_bytes =
      2 * config.num_hidden_layers * key_value_width * kMatrixElementBytes * context_tokens;
  return config.num_hidden_layers * layer_bytes + hidden * kNormElementBytes + head_bytes +
         embedding_bytes + key_value_bytes;
}

absl::StatusOr<double> MeasureBatchOneDecodeSeconds(Backend& backend, const ModelConfig& config,
                                                    int64_t prompt_tokens, int64_t steps,
                                                    std::mt19937_64& random) {
  Generator generator(backend, GeneratorOptionsFor(config, 1, std::max<int64_t>(prompt_tokens, 1)));
  const GenerationRequest request =
      RandomRequest(prompt_tokens, steps + 1, backend.vocab_size(), random);
  std::vector<Clock::time_point> token_times;
  REFLECT_RETURN_IF_ERROR(
      generator.Generate({request}, [&](size_t, int32_t) { token_times.push_back(Clock::now()); })
          .status());
  if (token_times.size() < 2) {
    return absl::InternalError(absl::StrCat("batch-1 decode: ", token_times.size(),
                                            " tokens generated, expected ", steps + 1));
  }
  std::vector<double> intervals;
  for (size_t index = 1; index < token_times.size(); ++index) {
    intervals.push_back(
        std::chrono::duration<double>(token_times[index] - token_times[index - 1]).count());
  }
  return Median(std::move(intervals));
}

absl::StatusOr<ThroughputFigure> MeasureThroughput(Backend& backend, const ModelConfig& config,
                                                   int64_t input_tokens, int64_t output_tokens,
                                                   int64_t max_requests,
                                                   int64_t max_tokens_per_step,
                                                   std::mt19937_64& random) {
  const int64_t blocks_per_request =
      (input_tokens + output_tokens + backend.block_size() - 1) / backend.block_size();
  const int64_t requests = std::min(max_requests, backend.num_kv_blocks() / blocks_per_request);
  if (requests < 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("throughput ", input_tokens, " in / ", output_tokens, " out: a request needs ",
                     blocks_per_request, " KV blocks, the pool has ", backend.num_kv_blocks()));
  }
  std::vector<GenerationRequest> batch;
  for (int64_t index = 0; index < requests; ++index) {
    batch.push_back(RandomRequest(input_tokens, output_tokens, backend.vocab_size(), random));
  }
  Generator generator(backend, GeneratorOptionsFor(config, requests, max_tokens_per_step));
  const Clock::time_point start = Clock::now();
  REFLECT_ASSIGN_OR_RETURN(const std::vector<GenerationResult> results, generator.Generate(batch));
  ThroughputFigure figure;
  figure.seconds = SecondsSince(start);
  figure.requests = requests;
  for (const GenerationResult& result : results) {
    figure.generated_tokens += static_cast<int64_t>(result.generated_ids.size());
  }
  figure.tokens_per_second = static_cast<double>(figure.generated_tokens) / figure.seconds;
  return figure;
}

absl::StatusOr<double> MeasureTimeToFirstTokenSeconds(Backend& backend, const ModelConfig& config,
                                                      int64_t prompt_tokens, int runs,
                                                      int64_t max_tokens_per_step,
                                                      std::mt19937_64& random) {
  Generator generator(backend, GeneratorOptionsFor(config, 1, max_tokens_per_step));
  std::vector<double> seconds;
  for (int run = 0; run <= runs; ++run) {  // run 0 is the warm-up
    const GenerationRequest request = RandomRequest(prompt_tokens, 1, backend.vocab_size(), random);
    REFLECT_ASSIGN_OR_RETURN(const std::vector<GenerationResult> results,
                             generator.Generate({request}));
    if (run > 0) seconds.push_back(results.front().time_to_first_token_seconds);
  }
  return Median(std::move(seconds));
}

#ifndef REFLECT_WITH_CUDA

int RunCudaBench(const CudaBenchRequest&) {
  std::fprintf(stderr, "reflect bench: %s\n", cuda::CheckCudaUsable("reflect").ToString().c_str());
  return kFailure;
}

#else  // REFLECT_WITH_CUDA

namespace {

// The workloads of issue #5 and their targets.
constexpr int64_t kCopyBytes = int64_t{1} << 30;
constexpr int kCopyRuns = 10;
constexpr int64_t kDecodePromptTokens = 128;
constexpr int64_t kDecodeSteps = 128;
constexpr double kRooflineRatioTarget = 1.10;
struct ThroughputWorkload {
  int64_t input_tokens;
  int64_t output_tokens;
  int64_t max_requests;
  double target_tokens_per_second;
};
constexpr ThroughputWorkload kThroughputWorkloads[] = {{1000, 1000, 256, 10000.0},
                                                       {128, 128, 512, 18000.0}};
constexpr int64_t kMaxSequencesPerStep = 512;  // the largest max_requests above
constexpr int64_t kMaxTokensPerStep = 8192;
constexpr int64_t kFirstTokenPromptTokens = 1000;
constexpr int kFirstTokenRuns = 10;
constexpr double kFirstTokenTargetSeconds = 0.030;
constexpr uint64_t kPromptSeed = 20240905;

// Prints one figure: a JSON line with --json, else `text`.
class Report {
 public:
  explicit Report(bool json) : json_(json) {}

  void Figure(nlohmann::json figure, const std::string& text) const {
    if (json_) {
      std::printf("%s\n", figure.dump().c_str());
    } else {
      std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
  }

 private:
  bool json_;
};

// Two device buffers and two events, released on every path.
class CopyResources {
 public:
  CopyResources() = default;
  CopyResources(const CopyResources&) = delete;
  CopyResources& operator=(const CopyResources&) = delete;
  ~CopyResources() {
    if (source_ != nullptr) cudaFree(source_);
    if (destination_ != nullptr) cudaFree(destination_);
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
  }

  absl::Status Allocate(int64_t bytes) {
    REFLECT_RETURN_IF_ERROR(
        cuda::CudaStatus(cudaMalloc(&source_, bytes), "cudaMalloc (copy source)"));
    REFLECT_RETURN_IF_ERROR(
        cuda::CudaStatus(cudaMalloc(&destination_, bytes), "cudaMalloc (copy destination)"));
    REFLECT_RETURN_IF_ERROR(cuda::CudaStatus(cudaEventCreate(&start_), "cudaEventCreate"));
    return cuda::CudaStatus(cudaEventCreate(&stop_), "cudaEventCreate");
  }

  // Seconds one copy of `bytes` takes on the default stream.
  absl::StatusOr<double> TimeCopy(int64_t bytes) {
    REFLECT_RETURN_IF_ERROR(cuda::CudaStatus(cudaEventRecord(start_), "cudaEventRecord"));
    REFLECT_RETURN_IF_ERROR(
        cuda::CudaStatus(cudaMemcpyAsync(destination_, source_, bytes, cudaMemcpyDeviceToDevice),
                         "cudaMemcpyAsync"));
    REFLECT_RETURN_IF_ERROR(cuda::CudaStatus(cudaEventRecord(stop_), "cudaEventRecord"));
    REFLECT_RETURN_IF_ERROR(cuda::CudaStatus(cudaEventSynchronize(stop_), "cudaEventSynchronize"));
    float milliseconds = 0.0f;
    REFLECT_RETURN_IF_ERROR(cuda::CudaStatus(cudaEventElapsedTime(&milliseconds, start_, stop_),
                                             "cudaEventElapsedTime"));
    return milliseconds * 1e-3;
  }

  void* source() const { return source_; }

 private:
  void* source_ = nullptr;
  void* destination_ = nullptr;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

// Device-to-device copy bandwidth in bytes/s, counting bytes read and written.
absl::StatusOr<double> MeasureCopyBandwidth() {
  CopyResources resources;
  REFLECT_RETURN_IF_ERROR(resources.Allocate(kCopyBytes));
  REFLECT_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaMemset(resources.source(), 0x5a, kCopyBytes), "cudaMemset"));
  double best = 0.0;
  for (int run = 0; run <= kCopyRuns; ++run) {  // run 0 is the warm-up
    REFLECT_ASSIGN_OR_RETURN(const double seconds, resources.TimeCopy(kCopyBytes));
    if (run == 1 || (run > 1 && seconds < best)) best = seconds;
  }
  return 2.0 * static_cast<double>(kCopyBytes) / best;
}

struct Device {
  std::string name;
  int64_t total_bytes = 0;
};

absl::StatusOr<Device> SelectDevice(int device) {
  REFLECT_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")")));
  cudaDeviceProp properties{};
  REFLECT_RETURN_IF_ERROR(
      cuda::CudaStatus(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties"));
  return Device{.name = properties.name,
                .total_bytes = static_cast<int64_t>(properties.totalGlobalMem)};
}

int64_t NumParameters(const ModelConfig& config) {
  int64_t parameters = 0;
  for (const TensorRecipe& tensor : LlamaTensorRecipe(config)) {
    int64_t elements = 1;
    for (int64_t dimension : tensor.shape) elements *= dimension;
    parameters += elements;
  }
  return parameters;
}

// The backend over the request's model: its directory, or random bf16 weights made here.
absl::StatusOr<std::unique_ptr<Backend> > CreateBenchBackend(const CudaBenchRequest& request,
                                                             const Report& report) {
  BackendSizing sizing;
  sizing.num_kv_blocks = 0;  // what --gpu_memory_utilization leaves
  sizing.max_tokens_per_step = kMaxTokensPerStep;
  sizing.max_sequences_per_step = kMaxSequencesPerStep;
  const Clock::time_point start = Clock::now();
  if (!request.model_dir.empty()) {
    REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                             CreateBackendFromFlags(request.model_dir, sizing));
    report.Figure({{"figure", "load"}, {"seconds", SecondsSince(start)}},
                  absl::StrCat("loaded ", request.model_dir.string(), " in ",
                               absl::StrFormat("%.1f", SecondsSince(start)), " s"));
    return backend;
  }
  REFLECT_ASSIGN_OR_RETURN(
      std::unique_ptr<Checkpoint> weights,
      MakeRandomCheckpoint(request.config, request.seed, DType::kBF16, request.num_threads));
  const double generate_seconds = SecondsSince(start);
  const Clock::time_point upload_start = Clock::now();
  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                           CreateBackendFromFlags(std::move(weights), request.config, sizing));
  const double upload_seconds = SecondsSince(upload_start);
  report.Figure({{"figure", "load"},
                 {"random_weights_seconds", generate_seconds},
                 {"backend_seconds", upload_seconds}},
                absl::StrFormat("random weights generated in %.1f s, backend created in %.1f s",
                                generate_seconds, upload_seconds));
  return backend;
}

absl::Status RunSuite(const CudaBenchRequest& request) {
  const Report report(request.json);
  REFLECT_RETURN_IF_ERROR(cuda::CheckCudaUsable("reflect"));
  REFLECT_ASSIGN_OR_RETURN(const cuda::CudaBackendOptions flags, CudaOptionsFromFlags({}));
  REFLECT_ASSIGN_OR_RETURN(const Device device, SelectDevice(flags.device));
  const ModelConfig& config = request.config;
  const int64_t parameters = NumParameters(config);
  report.Figure(
      {{"figure", "setup"},
       {"device", device.name},
       {"device_memory_bytes", device.total_bytes},
       {"model", request.model_label},
       {"parameters", parameters},
       {"num_hidden_layers", config.num_hidden_layers},
       {"hidden_size", config.hidden_size},
       {"deterministic", flags.deterministic},
       {"cuda_graphs", flags.cuda_graphs},
       {"gpu_memory_utilization", flags.gpu_memory_utilization}},
      absl::StrFormat("device %s (%.1f GiB); model %s: %d layers, hidden %d, %.2f B parameters; "
                      "deterministic %s, CUDA graphs %s",
                      device.name, static_cast<double>(device.total_bytes) / (1 << 30),
                      request.model_label, config.num_hidden_layers, config.hidden_size,
                      static_cast<double>(parameters) * 1e-9, flags.deterministic ? "on" : "off",
                      flags.cuda_graphs ? "on" : "off"));

  REFLECT_ASSIGN_OR_RETURN(const double bandwidth, MeasureCopyBandwidth());
  report.Figure({{"figure", "copy_bandwidth"},
                 {"bytes_per_second", bandwidth},
                 {"copy_bytes", kCopyBytes},
                 {"runs", kCopyRuns}},
                absl::StrFormat("copy bandwidth (device to device, read + write): %.0f GB/s",
                                bandwidth * 1e-9));

  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBenchBackend(request, report));
  report.Figure({{"figure", "kv_pool"},
                 {"blocks", backend->num_kv_blocks()},
                 {"block_size", backend->block_size()}},
                absl::StrFormat("KV pool: %d blocks of %d tokens", backend->num_kv_blocks(),
                                backend->block_size()));
  std::mt19937_64 random(kPromptSeed);
  // Warm-up: first launches, allocator growth and GEMM heuristics stay out of the figures.
  REFLECT_RETURN_IF_ERROR(
      MeasureThroughput(*backend, config, 64, 16, 16, kMaxTokensPerStep, random).status());

  REFLECT_ASSIGN_OR_RETURN(
      const double decode_seconds,
      MeasureBatchOneDecodeSeconds(*backend, config, kDecodePromptTokens, kDecodeSteps, random));
  const int64_t step_bytes = DecodeStepBytes(config, kDecodePromptTokens + kDecodeSteps / 2);
  const double roofline_seconds = static_cast<double>(step_bytes) / bandwidth;
  const double ratio = decode_seconds / roofline_seconds;
  report.Figure(
      {{"figure", "batch1_decode"},
       {"seconds_per_token", decode_seconds},
       {"prompt_tokens", kDecodePromptTokens},
       {"steps", kDecodeSteps},
       {"bytes_per_step", step_bytes},
       {"roofline_seconds", roofline_seconds},
       {"ratio_to_roofline", ratio},
       {"target_ratio", kRooflineRatioTarget},
       {"met", ratio <= kRooflineRatioTarget}},
      absl::StrFormat("batch-1 decode: %.3f ms/token; roofline %.3f ms (%.2f GB per "
                      "step); ratio %.3f (target <= %.2f)",
                      decode_seconds * 1e3, roofline_seconds * 1e3,
                      static_cast<double>(step_bytes) * 1e-9, ratio, kRooflineRatioTarget));

  for (const ThroughputWorkload& workload : kThroughputWorkloads) {
    REFLECT_ASSIGN_OR_RETURN(
        const ThroughputFigure figure,
        MeasureThroughput(*backend, config, workload.input_tokens, workload.output_tokens,
                          workload.max_requests, kMaxTokensPerStep, random));
    report.Figure({{"figure", "throughput"},
                   {"input_tokens", workload.input_tokens},
                   {"output_tokens", workload.output_tokens},
                   {"requests", figure.requests},
                   {"generated_tokens", figure.generated_tokens},
                   {"seconds", figure.seconds},
                   {"tokens_per_second", figure.tokens_per_second},
                   {"target_tokens_per_second", workload.target_tokens_per_second},
                   {"met", figure.tokens_per_second >= workload.target_tokens_per_second}},
                  absl::StrFormat("throughput %d in / %d out, %d requests: %.0f tokens/s in "
                                  "%.1f s (target >= %.0f)",
                                  workload.input_tokens, workload.output_tokens, figure.requests,
                                  figure.tokens_per_second, figure.seconds,
                                  workload.target_tokens_per_second));
  }

  REFLECT_ASSIGN_OR_RETURN(
      const double first_token_seconds,
      MeasureTimeToFirstTokenSeconds(*backend, config, kFirstTokenPromptTokens, kFirstTokenRuns,
                                     kMaxTokensPerStep, random));
  report.Figure({{"figure", "time_to_first_token"},
                 {"prompt_tokens", kFirstTokenPromptTokens},
                 {"runs", kFirstTokenRuns},
                 {"seconds", first_token_seconds},
                 {"target_seconds", kFirstTokenTargetSeconds},
                 {"met", first_token_seconds <= kFirstTokenTargetSeconds}},
                absl::StrFormat("time to first token, %d-token prompt: %.2f ms (target <= %.0f ms)",
                                kFirstTokenPromptTokens, first_token_seconds * 1e3,
                                kFirstTokenTargetSeconds * 1e3));
  return absl::OkStatus();
}

}  // namespace

int RunCudaBench(const CudaBenchRequest& request) {
  const absl::Status status = RunSuite(request);
  if (status.ok()) return 0;
  std::fprintf(stderr, "reflect bench: %s\n", status.ToString().c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : kFailure;
}

#endif  // REFLECT_WITH_CUDA

}  // namespace reflect::cli
