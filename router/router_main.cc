// reflect-router: the cluster's only door (DESIGN §1, §8). Serves
// reflect.v1.Inference (plus grpc.health.v1.Health and server reflection) on
// --grpc_port and the OpenAI-compatible API with /metrics, /healthz and /readyz
// on --http_port, and sends every request to one of --replicas.
//
// Start-up: load the tokenizer and model config from --model (the router needs
// no weights), connect to the replicas, listen on both ports and print "grpc
// <host>:<port>" and "http <host>:<port>" on stdout (the chosen ports when
// given 0). /readyz and the gRPC health status say SERVING once a replica is in
// rotation.
//
// SIGTERM / SIGINT: gRPC health NOT_SERVING, then both servers stop accepting
// (so an HTTP readiness probe fails from then on) and let in-flight streams
// finish (up to --drain_seconds), then exit 0. Signals are taken by sigwait in main, never in
// signal context.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "common/model_config.h"
#include "common/tokenizer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "router/api_keys.h"
#include "router/http_server.h"
#include "router/inference_service.h"
#include "router/openai_responses.h"
#include "router/openai_routes.h"
#include "router/request_router.h"
#include "router/router_metrics.h"

ABSL_FLAG(std::string, model, "",
          "Model directory: config.json, tokenizer.json and, when present, "
          "generation_config.json (no weights are read)");
ABSL_FLAG(std::string, served_model_name, "",
          "Name of the model in the APIs; empty: the model directory's name");
ABSL_FLAG(std::string, replicas, "", "Replica leaders to route to: host:port,host:port,...");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address of the public ports");
ABSL_FLAG(int32_t, grpc_port, 50051, "Public gRPC port; 0: any free port (printed on stdout)");
ABSL_FLAG(int32_t, http_port, 8000, "OpenAI-compatible HTTP port; 0: any free port");
ABSL_FLAG(std::string, api_key_file, "", "File of accepted API keys, one per line; empty: none");
ABSL_FLAG(std::string, api_key_env, "REFLECT_API_KEYS",
          "Environment variable with comma-separated API keys (unset or empty: "
          "none)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: serve TLS on both public ports (with "
          "--tls_key_file)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(int64_t, max_request_bytes, 8 << 20, "Largest request body or gRPC message accepted");
ABSL_FLAG(int64_t, max_queued_requests, 1024,
          "Requests waiting for their first token, beyond which new ones get 429");
ABSL_FLAG(int64_t, max_queued_tokens, 1 << 22,
          "Tokens of the waiting requests, each counting prompt + max_tokens, beyond which new "
          "ones get 429");
ABSL_FLAG(int64_t, max_queued_prompt_tokens, 0,
          "Deprecated alias of --max_queued_tokens (which counts prompt + max_tokens); 0: unset");
ABSL_FLAG(double, max_queue_seconds, 60,
          "A request still without its first token this long after admission ends with 429 and a "
          "retry hint; 0: no limit");
ABSL_FLAG(int64_t, max_in_flight_requests, 100000, "Requests in flight at most");
ABSL_FLAG(int32_t, http_io_threads, 2, "Threads serving HTTP connections");
ABSL_FLAG(int32_t, drain_seconds, 30, "How long a stopping router lets streams finish");

namespace reflect {
namespace {

constexpr char kInferenceService[] = "reflect.v1.Inference";

std::optional<std::string> NonEmpty(const std::string& value) {
  if (value.empty()) return std::nullopt;
  return value;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// Health of the gRPC server follows the router's readiness; polled, because
// replicas come and go.
void FollowReadiness(grpc::Server& server, const RequestRouter& router,
                     const std::atomic<bool>& stopping) {
  bool last = false;
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(kInferenceService, false);
  health->SetServingStatus("", false);
  while (!stopping.load()) {
    const bool ready = router.ready();
    if (ready != last) {
      health->SetServingStatus(kInferenceService, ready);
      health->SetServingStatus("", ready);
      last = ready;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  health->SetServingStatus(kInferenceService, false);
  health->SetServingStatus("", false);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "reflect-router: %s\n", status.ToString().c_str());
  return 1;
}

int Serve() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty() || absl::GetFlag(FLAGS_replicas).empty()) {
    std::fprintf(stderr, "reflect-router: --model and --replicas are required\n");
    return 2;
  }
  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return Fail(config.status());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  absl::StatusOr<ApiKeys> api_keys = ApiKeys::Load(NonEmpty(absl::GetFlag(FLAGS_api_key_file)),
                                                   NonEmpty(absl::GetFlag(FLAGS_api_key_env)));
  if (!api_keys.ok()) return Fail(api_keys.status());
  std::string served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (served_model_name.empty()) served_model_name = DefaultServedModelName(model_dir);

  RouterMetrics metrics(served_model_name);
  RequestRouterOptions router_options;
  router_options.replica_addresses = absl::StrSplit(absl::GetFlag(FLAGS_replicas), ',');
  router_options.model = served_model_name;
  router_options.admission.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  router_options.admission.max_queued_tokens = absl::GetFlag(FLAGS_max_queued_tokens);
  if (const int64_t alias = absl::GetFlag(FLAGS_max_queued_prompt_tokens); alias != 0) {
    std::fprintf(stderr,
                 "reflect-router: --max_queued_prompt_tokens is deprecated; it sets "
                 "--max_queued_tokens (prompt + max_tokens)\n");
    router_options.admission.max_queued_tokens = alias;
  }
  const double queue_seconds = absl::GetFlag(FLAGS_max_queue_seconds);
  if (!(queue_seconds >= 0)) {
    return Fail(absl::InvalidArgumentError("--max_queue_seconds must be >= 0"));
  }
  router_options.admission.max_queue_time =
      queue_seconds == 0 ? absl::InfiniteDuration() : absl::Seconds(queue_seconds);
  router_options.admission.max_in_flight_requests = absl::GetFlag(FLAGS_max_in_flight_requests);
  absl::StatusOr<std::unique_ptr<RequestRouter>> router =
      RequestRouter::Create(router_options, **tokenizer, &metrics);
  if (!router.ok()) return Fail(router.status());

  OpenAiLimits limits;
  limits.served_model_names = {served_model_name};
  limits.context_length_tokens = config->model.max_position_embeddings;
  limits.vocab_size = (*tokenizer)->vocab_size();

  std::optional<TlsFiles> tls;
  if (!absl::GetFlag(FLAGS_tls_cert_file).empty() || !absl::GetFlag(FLAGS_tls_key_file).empty()) {
    tls = TlsFiles{.certificate_chain_file = absl::GetFlag(FLAGS_tls_cert_file),
                   .private_key_file = absl::GetFlag(FLAGS_tls_key_file)};
  }

  // gRPC: reflect.v1.Inference, health, reflection.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  InferenceService inference(**router, **tokenizer,
                             InferenceServiceOptions{.limits = limits, .api_keys = *api_keys},
                             &metrics);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls.has_value()) {
    absl::StatusOr<std::string> certificate = ReadFile(tls->certificate_chain_file);
    if (!certificate.ok()) return Fail(certificate.status());
    absl::StatusOr<std::string> key = ReadFile(tls->private_key_file);
    if (!key.ok()) return Fail(key.status());
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *certificate});
    credentials = grpc::SslServerCredentials(ssl);
  }
  const std::string host = absl::GetFlag(FLAGS_host);
  int grpc_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(host, ":", absl::GetFlag(FLAGS_grpc_port)), credentials,
                           &grpc_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(absl::GetFlag(FLAGS_max_request_bytes)));
  builder.RegisterService(&inference);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || grpc_port == 0) {
    std::fprintf(stderr, "reflect-router: cannot listen on %s:%d\n", host.c_str(),
                 absl::GetFlag(FLAGS_grpc_port));
    return 1;
  }

  // HTTP: the OpenAI API, metrics and probes.
  HttpServerOptions http_options;
  http_options.address = host;
  http_options.port = static_cast<uint16_t>(absl::GetFlag(FLAGS_http_port));
  http_options.io_threads = absl::GetFlag(FLAGS_http_io_threads);
  http_options.max_body_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  http_options.tls = tls;
  http_options.api_keys = *api_keys;
  HttpServer http_server(http_options);
  std::atomic<bool> stopping{false};
  RegisterOpenAiRoutes(http_server, **router, **tokenizer,
                       OpenAiRoutesOptions{.limits = limits, .created_unix_seconds = UnixSeconds()},
                       &metrics);
  RegisterHealthRoutes(http_server, **router);
  RequestRouter* const request_router = router->get();
  http_server.AddRoute(
      "GET", "/metrics",
      [&metrics, request_router](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
        metrics.SetLoad(request_router->Load());
        HttpResponse response;
        response.content_type = "text/plain; version=0.0.4; charset=utf-8";
        response.body = metrics.Serialize();
        writer->Send(std::move(response)).IgnoreError();
      },
      RouteAccess::kPublic);
  if (absl::Status started = http_server.Start(); !started.ok()) {
    grpc_server->Shutdown();
    return Fail(started);
  }
  std::thread health_follower(FollowReadiness, std::ref(*grpc_server), std::cref(**router),
                              std::cref(stopping));
  const std::string shown_host = host == "0.0.0.0" ? "127.0.0.1" : host;
  std::printf("grpc %s:%d\nhttp %s:%d\n", shown_host.c_str(), grpc_port, shown_host.c_str(),
              http_server.port());
  std::fflush(stdout);
  std::fprintf(stderr, "reflect-router: serving %s from %zu replica(s)\n",
               served_model_name.c_str(), router_options.replica_addresses.size());

  const int signal_number = WaitForTerminationSignal();
  std::fprintf(stderr, "reflect-router: signal %d: draining\n", signal_number);
  stopping = true;
  health_follower.join();
  const std::chrono::seconds drain(absl::GetFlag(FLAGS_drain_seconds));
  std::thread grpc_stopper(
      [&] { grpc_server->Shutdown(std::chrono::system_clock::now() + drain); });
  http_server.Stop(drain);
  grpc_stopper.join();
  return 0;
}

}  // namespace
}  // namespace reflect

int main(int argc, char** argv) {
  reflect::BlockTerminationSignals();
  absl::SetProgramUsageMessage("reflect-router --model DIR --replicas HOST:PORT[,...]");
  std::vector<char*> arguments(argv, argv + argc);
  std::vector<std::string> normalized_storage;
  reflect::NormalizeFlagNames(arguments, normalized_storage);
  absl::ParseCommandLine(static_cast<int>(arguments.size()), arguments.data());
  return reflect::Serve();
}
