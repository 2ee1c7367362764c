// reflect-worker: one model replica (rank 0 = leader) serving reflect.internal.v1.Replica,
// grpc.health.v1.Health and server reflection on --host:--port (DESIGN §1).
//
// Start-up: listen first (health NOT_SERVING, Generate UNAVAILABLE), print
// "listening <host>:<port>" on stdout (the chosen port with --port 0); with --metrics_port, serve
// Prometheus /metrics (docs/metrics.md) and print "metrics <host>:<port>" next; load the weights,
// size the KV cache, start the engine loop, then health SERVING. SIGTERM / SIGINT: health
// NOT_SERVING, stop admitting (UNAVAILABLE "draining"), finish every in-flight request, shut the
// server down, exit 0. Signals are blocked in every thread and taken by sigwait in main, so no
// handler runs in signal context.
//
// Replica groups (--tensor_parallel × --pipeline_parallel > 1, replica_group_startup.h): rank 0
// does all of the above, with its backend driving the group; it exits 3 as soon as a rank is lost.
// Ranks above 0 serve nothing: they run the leader's steps and exit 0 when it stops them.
//
// --backend cpu (default) or cuda (one rank per replica for now); backend_choice.h says how each
// is sized. --backend cuda in a build without CUDA, or on a machine without a usable device,
// exits 1 with FAILED_PRECONDITION before listening.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/model_config.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "prometheus/exposer.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/cuda/cuda_usable.h"
#include "worker/engine_loop.h"
#include "worker/parallel/parallel_config.h"
#include "worker/replica/backend_choice.h"
#include "worker/replica/liveness_watch.h"
#include "worker/replica/replica_group_startup.h"
#include "worker/replica/replica_metrics.h"
#include "worker/replica/replica_service.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json, safetensors)");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on");
ABSL_FLAG(int32_t, port, 50061, "Port to listen on; 0: any free port (printed on stdout)");
ABSL_FLAG(std::string, replica_id, "", "Id reported by GetLoad; empty: <host>:<port>");
ABSL_FLAG(int32_t, threads, 0, "Engine threads; 0: one per core");
ABSL_FLAG(std::string, backend, "cpu", "Backend running the model: cpu or cuda");
ABSL_FLAG(int64_t, num_kv_blocks, 0,
          "KV cache blocks; 0: size from --kv_cache_gib (cpu) or --gpu_memory_utilization (cuda)");
ABSL_FLAG(double, kv_cache_gib, 1.0, "cpu: KV cache size in GiB when --num_kv_blocks is 0");
ABSL_FLAG(double, swap_space_gib, 0.0, "Host swap space for preempted sequences, in GiB");
ABSL_FLAG(int32_t, block_size, 16, "Tokens per KV block");
ABSL_FLAG(double, gpu_memory_utilization, 0.90,
          "cuda: fraction of the device's memory for weights, activations and the KV cache");
ABSL_FLAG(bool, deterministic, false,
          "cuda: batch-invariant kernels, so a request's tokens do not depend on its neighbours");
ABSL_FLAG(bool, cuda_graphs, true, "cuda: replay decode steps from CUDA graphs");
ABSL_FLAG(int32_t, device, 0, "cuda: the CUDA device to run on");
ABSL_FLAG(int32_t, max_num_seqs, 256, "Sequences running at once");
ABSL_FLAG(int64_t, max_num_batched_tokens, 2048, "Tokens per engine step");
ABSL_FLAG(int32_t, metrics_port, -1,
          "Port serving Prometheus /metrics on --host; -1: off; 0: any free port (printed on "
          "stdout)");
ABSL_FLAG(std::string, served_model_name, "",
          "Model name in GetLoad and metrics; empty: the model directory's name");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "Reuse the KV blocks of prompt prefixes computed before (DESIGN §5)");
ABSL_FLAG(int64_t, max_waiting_requests, 1024, "Queued requests beyond which new ones get 429");
ABSL_FLAG(double, liveness_timeout_seconds, 60,
          "grpc.health.v1 service \"liveness\" turns NOT_SERVING when the engine loop has not "
          "completed an iteration for this long");
ABSL_FLAG(int64_t, max_waiting_tokens, 4 << 20,
          "Prompt + max_tokens of the queued requests together beyond which new ones get 429");

ABSL_FLAG(int32_t, tensor_parallel, 1, "Ranks splitting each layer (tensor parallelism)");
ABSL_FLAG(int32_t, pipeline_parallel, 1, "Stages splitting the layers (pipeline parallelism)");
ABSL_FLAG(int32_t, rank, -1,
          "This process's rank in its replica group; -1: from the LeaderWorkerSet environment, "
          "else 0");
ABSL_FLAG(std::string, leader_address, "",
          "host:port of rank 0's rendezvous (with --rank; rank 0 listens on that port)");
ABSL_FLAG(int32_t, rendezvous_port, 29500, "Rank 0's rendezvous port under a LeaderWorkerSet");
ABSL_FLAG(int32_t, ranks_per_pod, 1, "Ranks (processes) per LeaderWorkerSet pod");
ABSL_FLAG(int32_t, local_rank, 0, "This process among its pod's ranks");
ABSL_FLAG(std::string, tensor_kind, "gloo",
          "Communicator of the tensor-parallel groups: gloo|nccl");
ABSL_FLAG(int32_t, join_timeout_seconds, 60, "Time for every rank to join the replica group");
ABSL_FLAG(std::string, advertise_host, "",
          "Address the other ranks reach this one at; empty: POD_IP, else --host");

namespace reflect {
namespace {

constexpr char kReplicaService[] = "reflect.internal.v1.Replica";

// Serves `metrics` on host:port (port 0: any free one) and prints "metrics <host>:<port>";
// null, after an error message, when it cannot listen.
std::unique_ptr<prometheus::Exposer> ServeMetrics(const std::string& host, int32_t port,
                                                  ReplicaMetrics& metrics) {
  // civetweb wants an IPv6 address in brackets.
  const std::string bind_host = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(absl::StrCat(bind_host, ":", port));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "reflect-worker: cannot serve metrics on %s:%d: %s\n", host.c_str(), port,
                 error.what());
    return nullptr;
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    std::fprintf(stderr, "reflect-worker: cannot serve metrics on %s:%d\n", host.c_str(), port);
    return nullptr;
  }
  exposer->RegisterCollectable(metrics.collectable());
  std::printf("metrics %s:%d\n", host.c_str(), ports.front());
  std::fflush(stdout);
  return exposer;
}

void SetServing(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(kReplicaService, serving);
  health->SetServingStatus("", serving);
}

// Rank 0 of a replica group: waits for the followers and returns its backend. A rank lost from
// then on ends this process at once (exit 3, replica_group_startup.h says why).
absl::StatusOr<std::unique_ptr<Backend>> StartGroupLeader(
    const ParallelConfig& config, const ReplicaGroupOptions& options, grpc::Server& server,
    std::unique_ptr<ReplicaGroupLeader>& group) {
  absl::StatusOr<std::unique_ptr<ReplicaGroupLeader>> started =
      ReplicaGroupLeader::Start(config, options, [&server](int rank, const std::string& reason) {
        std::fprintf(stderr, "reflect-worker: rank %d lost: %s\n", rank, reason.c_str());
        SetServing(server, false);
        std::fflush(nullptr);
        _exit(kGroupBrokenExitCode);
      });
  if (!started.ok()) {
    return absl::Status(started.status().code(),
                        absl::StrCat("replica group: ", started.status().message()));
  }
  group = std::move(*started);
  return group->TakeBackend();
}

absl::StatusOr<WorkerBackendFlags> BackendFlagsFromFlags() {
  WorkerBackendFlags flags;
  absl::StatusOr<BackendKind> kind = ParseBackendKind(absl::GetFlag(FLAGS_backend));
  if (!kind.ok()) return kind.status();
  flags.kind = *kind;
  flags.num_kv_blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  flags.kv_cache_gib = absl::GetFlag(FLAGS_kv_cache_gib);
  flags.swap_space_gib = absl::GetFlag(FLAGS_swap_space_gib);
  flags.block_size = absl::GetFlag(FLAGS_block_size);
  flags.threads = absl::GetFlag(FLAGS_threads);
  flags.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  flags.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  flags.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  flags.deterministic = absl::GetFlag(FLAGS_deterministic);
  flags.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  flags.device = absl::GetFlag(FLAGS_device);
  return flags;
}

// The backend of a replica of one rank: the CUDA one when `cuda_options` is set, else the CPU one.
absl::StatusOr<std::unique_ptr<Backend>> CreateSingleRankBackend(
    const std::string& model_dir, const CpuBackendOptions& cpu_options,
    const std::optional<cuda::CudaBackendOptions>& cuda_options) {
  if (!cuda_options.has_value()) return CreateCpuBackend(model_dir, cpu_options);
#ifdef REFLECT_WITH_CUDA
  return cuda::CreateCudaBackend(model_dir, *cuda_options);
#else
  return cuda::CheckCudaUsable("reflect-worker");
#endif
}

absl::StatusOr<ParallelConfig> ParallelConfigFromFlags() {
  ParallelFlags flags;
  flags.tensor_parallel = absl::GetFlag(FLAGS_tensor_parallel);
  flags.pipeline_parallel = absl::GetFlag(FLAGS_pipeline_parallel);
  flags.rank = absl::GetFlag(FLAGS_rank);
  flags.leader_address = absl::GetFlag(FLAGS_leader_address);
  flags.rendezvous_port = absl::GetFlag(FLAGS_rendezvous_port);
  flags.ranks_per_pod = absl::GetFlag(FLAGS_ranks_per_pod);
  flags.local_rank = absl::GetFlag(FLAGS_local_rank);
  flags.tensor_communicator = absl::GetFlag(FLAGS_tensor_kind);
  flags.join_timeout = absl::Seconds(absl::GetFlag(FLAGS_join_timeout_seconds));
  return ResolveParallelConfig(flags, ProcessEnvironment);
}

int Serve() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) {
    std::fprintf(stderr, "reflect-worker: --model is required\n");
    return 2;
  }
  absl::StatusOr<ModelDirectoryConfig> model_config = LoadModelConfig(model_dir);
  if (!model_config.ok()) {
    std::fprintf(stderr, "reflect-worker: %s\n", model_config.status().ToString().c_str());
    return 1;
  }

  absl::StatusOr<ParallelConfig> parallel = ParallelConfigFromFlags();
  const std::string host = absl::GetFlag(FLAGS_host);
  ReplicaGroupOptions group_options;
  if (parallel.ok() && parallel->layout.world_size() > 1) {
    absl::StatusOr<std::string> advertise_host =
        ResolveAdvertiseHost(absl::GetFlag(FLAGS_advertise_host), host, ProcessEnvironment);
    if (!advertise_host.ok()) parallel = advertise_host.status();
    if (advertise_host.ok()) group_options.advertise_host = *advertise_host;
  }
  if (!parallel.ok()) {
    std::fprintf(stderr, "reflect-worker: %s\n", parallel.status().ToString().c_str());
    return 2;
  }
  const absl::StatusOr<WorkerBackendFlags> backend_flags = BackendFlagsFromFlags();
  if (!backend_flags.ok()) {
    std::fprintf(stderr, "reflect-worker: %s\n", backend_flags.status().ToString().c_str());
    return 2;
  }
  group_options.model_dir = model_dir;
  group_options.model = model_config->model;
  group_options.listen_host = host;
  group_options.backend = CpuOptionsFor(*backend_flags, model_config->model);
  std::optional<cuda::CudaBackendOptions> cuda_options;
  if (backend_flags->kind == BackendKind::kCuda) {
    absl::StatusOr<cuda::CudaBackendOptions> options =
        CudaOptionsFor(*backend_flags, model_config->model, parallel->layout.world_size());
    if (!options.ok()) {
      std::fprintf(stderr, "reflect-worker: %s\n", options.status().ToString().c_str());
      return 2;
    }
    if (const absl::Status usable = cuda::CheckCudaUsable("reflect-worker"); !usable.ok()) {
      std::fprintf(stderr, "reflect-worker: %s\n", usable.ToString().c_str());
      return 1;
    }
    cuda_options = *options;
  }
  if (!parallel->layout.is_leader()) return RunFollowerRank(*parallel, group_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  int selected_port = 0;
  std::string served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (served_model_name.empty()) served_model_name = DefaultServedModelName(model_dir);
  ReplicaService service(served_model_name);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(host, ":", absl::GetFlag(FLAGS_port)),
                           grpc::InsecureServerCredentials(), &selected_port);
  builder.RegisterService(&service);
  // The router pings every 2 s, with or without calls, to notice a hung replica; accept that
  // rather than answering it with GOAWAY (too_many_pings).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    std::fprintf(stderr, "reflect-worker: cannot listen on %s:%d\n", host.c_str(),
                 absl::GetFlag(FLAGS_port));
    return 1;
  }
  SetServing(*server, false);
  // Loading weights is alive: the startup probe bounds it; LivenessWatch takes over after.
  server->GetHealthCheckService()->SetServingStatus(kLivenessService, true);
  std::printf("listening %s:%d\n", host.c_str(), selected_port);
  std::fflush(stdout);

  // Before the weights load, so a scrape can already tell a loading replica (no steps) apart
  // from a dead one. Declared before the engine, so it is destroyed after it: AttachEngine(nullptr)
  // below keeps scrapes off an engine being destroyed.
  ReplicaMetrics metrics(served_model_name);
  std::unique_ptr<prometheus::Exposer> metrics_exposer;
  if (const int32_t metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port >= 0) {
    metrics_exposer = ServeMetrics(host, metrics_port, metrics);
    if (metrics_exposer == nullptr) {
      server->Shutdown();
      return 1;
    }
  }

  std::unique_ptr<ReplicaGroupLeader> group;
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      parallel->layout.world_size() == 1
          ? CreateSingleRankBackend(model_dir, group_options.backend, cuda_options)
          : StartGroupLeader(*parallel, group_options, *server, group);
  if (!backend.ok()) {
    std::fprintf(stderr, "reflect-worker: %s\n", backend.status().ToString().c_str());
    server->Shutdown();
    return 1;
  }
  const int64_t num_kv_blocks = (*backend)->num_kv_blocks();
  EngineLoopOptions engine_options;
  engine_options.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  engine_options.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  engine_options.scheduler.max_waiting_requests = absl::GetFlag(FLAGS_max_waiting_requests);
  engine_options.scheduler.max_waiting_tokens = absl::GetFlag(FLAGS_max_waiting_tokens);
  engine_options.scheduler.max_model_length = model_config->model.max_position_embeddings;
  engine_options.num_host_blocks =
      static_cast<int32_t>(HostSwapBlocks(*backend_flags, model_config->model));
  engine_options.eos_token_ids = model_config->model.eos_token_ids;
  engine_options.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  engine_options.on_step = [&metrics](const StepStats& step) { metrics.ObserveStep(step); };
  absl::StatusOr<std::unique_ptr<EngineLoop>> engine =
      EngineLoop::Create(std::move(*backend), engine_options);
  if (!engine.ok()) {
    std::fprintf(stderr, "reflect-worker: %s\n", engine.status().ToString().c_str());
    server->Shutdown();
    return 1;
  }
  std::string replica_id = absl::GetFlag(FLAGS_replica_id);
  if (replica_id.empty()) replica_id = absl::StrCat(host, ":", selected_port);
  service.SetEngine(engine->get(), std::move(replica_id));
  metrics.AttachEngine(engine->get());
  const LivenessWatch liveness(server->GetHealthCheckService(), engine->get(),
                               absl::Seconds(absl::GetFlag(FLAGS_liveness_timeout_seconds)));
  SetServing(*server, true);
  std::fprintf(stderr, "reflect-worker: serving %s on %s:%d (%s backend) with %lld KV blocks\n",
               model_dir.c_str(), host.c_str(), selected_port, absl::GetFlag(FLAGS_backend).c_str(),
               static_cast<long long>(num_kv_blocks));

  const int signal_number = WaitForTerminationSignal();
  std::fprintf(stderr, "reflect-worker: signal %d: draining\n", signal_number);
  SetServing(*server, false);
  (*engine)->BeginDrain();
  (*engine)->WaitUntilDrained(absl::InfiniteDuration());
  // In-flight streams have their last events; give them time to write them, then close.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  (*engine)->Stop();
  if (group != nullptr) group->Stop();  // the followers exit 0
  metrics.AttachEngine(nullptr);
  std::fprintf(stderr, "reflect-worker: drained, exiting\n");
  return 0;
}

}  // namespace
}  // namespace reflect

int main(int argc, char** argv) {
  reflect::BlockTerminationSignals();

  absl::SetProgramUsageMessage("reflect-worker --model DIR [--port 50061] [--flags]");
  std::vector<char*> args(argv, argv + argc);
  std::vector<std::string> normalized_storage;
  reflect::NormalizeFlagNames(args, normalized_storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  return reflect::Serve();
}
