// `reflect serve --model DIR [--replicas N] [--tp T] [--pp P] [--grpc_port 50051]
// [--http_port 8000] [--backend cpu|cuda]`: the embedded cluster of DESIGN §1 on one machine — N
// replicas of T × P reflect-worker ranks each and one reflect-router, all on loopback (the
// router's public ports on --host), supervised by this process.
//
// Backends: --backend is passed to every worker. With cuda (one rank per replica for now, so
// T × P must be 1), --gpu_memory_utilization, --deterministic and --cuda_graphs are passed too,
// and replica i runs on device --device + i.
//
// Start-up: each replica gets a fixed loopback port (picked free at start and kept across
// restarts, so the router's replica list stays valid), then the router starts with those
// addresses. Serve prints the public addresses and ready-to-paste examples once the router
// reports a replica in rotation (/readyz).
//
// Replica groups (T × P > 1): rank 0 of each replica listens on the port the router uses and
// serves the rendezvous on a loopback port of the replica's own; ranks 1… join it there.
//
// Supervision: a child that exits is reported on stderr and restarted with the same flags, after
// a back-off that doubles from 1 s to 30 s while it keeps dying young (under 60 s) and resets once
// it has lived longer. A replica group is one unit: when any of its ranks exits, the others are
// killed and all its ranks restart together. Ctrl-C / SIGTERM: the router is stopped first (it
// stops accepting and finishes in-flight streams), then each replica's rank 0 (it drains, then
// stops its followers); after 30 s anything left is killed. Children's stdout and stderr pass
// through, stdout prefixed with the child's name.
//
// Exit codes: 0 after a clean stop, 2 bad flags, 1 when a child cannot be started at all.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/model_config.h"
#include "tools/reflect/backend_flags.h"
#include "tools/reflect/command.h"
#include "tools/reflect/common_flags.h"
#include "tools/reflect/serve_examples.h"
#include "worker/backend_kind.h"

ABSL_FLAG(int32_t, replicas, 1, "serve: model replicas (reflect-worker processes)");
ABSL_FLAG(int32_t, tp, 1, "serve: tensor-parallel ranks per replica (processes)");
ABSL_FLAG(int32_t, pp, 1, "serve: pipeline-parallel stages per replica (processes)");
ABSL_FLAG(std::string, host, "127.0.0.1", "serve: address of the router's public ports");
ABSL_FLAG(int32_t, grpc_port, 50051, "serve: public gRPC port (reflect.v1); 0: any free port");
ABSL_FLAG(int32_t, http_port, 8000, "serve: OpenAI-compatible HTTP port; 0: any free port");
ABSL_FLAG(std::string, served_model_name, "",
          "serve: model name in the APIs; empty: the model directory's name");
ABSL_FLAG(double, kv_cache_gib, 1.0, "serve: KV cache per replica, in GiB");
ABSL_FLAG(std::string, api_key_file, "", "serve: file of API keys (one per line); empty: none");
ABSL_FLAG(std::string, worker_binary, "",
          "serve: reflect-worker to run; empty: found next to this binary");
ABSL_FLAG(std::string, router_binary, "",
          "serve: reflect-router to run; empty: found next to this binary");

namespace reflect::cli {
namespace {

volatile sig_atomic_t stop_requested = 0;
void RequestStop(int) { stop_requested = 1; }

// A free TCP port on 127.0.0.1 (bound, read back and released).
int FreeLoopbackPort() {
  const int socket_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (socket_fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(socket_fd);
  return port;
}

// The program `name`: the flag's value, else the build tree's layout (tools/reflect/reflect →
// worker/, router/), else the same directory as this binary (an installed layout).
std::string FindProgram(const std::string& flag_value, const std::string& build_subdirectory,
                        const std::string& name) {
  if (!flag_value.empty()) return flag_value;
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  const std::filesystem::path directory = self.parent_path();
  const std::filesystem::path in_build_tree =
      directory.parent_path().parent_path() / build_subdirectory / name;
  if (std::filesystem::exists(in_build_tree)) return in_build_tree.string();
  return (directory / name).string();
}

// One supervised child: its command line, and what its last life looked like.
struct Child {
  std::string name;
  std::vector<std::string> arguments;
  pid_t pid = -1;
  absl::Time started = absl::InfinitePast();
  absl::Duration backoff = absl::Seconds(1);
  absl::Time restart_at = absl::InfinitePast();  // while dead: when to start it again
  int group = -1;                 // the replica whose group this rank belongs to; -1: the router
  int rank = 0;                   // its rank in the group; 0 gets SIGTERM at stop
  bool killed_for_group = false;  // killed because another rank of its group exited
  std::thread output_forwarder;
};

// Forwards the child's stdout to ours, one line at a time, prefixed by its name.
void ForwardOutput(int fd, std::string name) {
  std::string pending;
  char buffer[4096];
  for (ssize_t bytes; (bytes = read(fd, buffer, sizeof(buffer))) > 0;) {
    pending.append(buffer, static_cast<size_t>(bytes));
    for (size_t end; (end = pending.find('\n')) != std::string::npos;) {
      std::printf("[%s] %s\n", name.c_str(), pending.substr(0, end).c_str());
      std::fflush(stdout);
      pending.erase(0, end + 1);
    }
  }
  close(fd);
}

bool StartChild(Child& child) {
  if (child.output_forwarder.joinable()) child.output_forwarder.join();
  int output[2];
  if (pipe2(output, O_CLOEXEC) != 0) return false;
  const pid_t supervisor = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(output[0]);
    close(output[1]);
    return false;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // A child never outlives serve, even when serve is SIGKILLed: it is asked to drain.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != supervisor) _exit(1);
    dup2(output[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (std::string& argument : child.arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    std::fprintf(stderr, "reflect serve: cannot run %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  close(output[1]);
  child.pid = pid;
  child.started = absl::Now();
  child.output_forwarder = std::thread(ForwardOutput, output[0], child.name);
  return true;
}

// Polls GET /readyz on the router's HTTP port at `host` (loopback for a wildcard host) until it
// answers 200 or `timeout` passes.
bool WaitForReady(const std::string& host, int http_port, absl::Duration timeout) {
  in_addr router_address{};
  if (host.empty() || host == "0.0.0.0" || inet_pton(AF_INET, host.c_str(), &router_address) != 1) {
    router_address.s_addr = htonl(INADDR_LOOPBACK);
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline && !stop_requested) {
    const int socket_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(http_port));
    address.sin_addr = router_address;
    bool ready = false;
    if (connect(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
      const std::string request = "GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n";
      if (write(socket_fd, request.data(), request.size()) ==
          static_cast<ssize_t>(request.size())) {
        char reply[64] = {};
        const ssize_t bytes = read(socket_fd, reply, sizeof(reply) - 1);
        ready =
            bytes > 12 && std::string_view(reply, static_cast<size_t>(bytes)).substr(9, 3) == "200";
      }
    }
    close(socket_fd);
    if (ready) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

// Handles exited children: reports each and schedules its restart; for a rank of a replica
// group, kills the group's other ranks and schedules them with it.
void ReapChildren(std::vector<Child>& children) {
  for (int status = 0;;) {
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (Child& child : children) {
      if (child.pid != pid) continue;
      child.pid = -1;
      if (child.killed_for_group) {
        child.killed_for_group = false;
        continue;
      }
      const std::string how = WIFEXITED(status)
                                  ? absl::StrCat("exited with code ", WEXITSTATUS(status))
                                  : absl::StrCat("was killed by signal ", WTERMSIG(status));
      const absl::Duration lived = absl::Now() - child.started;
      // 1 s after a child that lived a minute or more; doubling (to 30 s) while it keeps dying
      // young.
      if (lived > absl::Seconds(60)) child.backoff = absl::Seconds(1);
      child.restart_at = absl::Now() + child.backoff;
      std::fprintf(stderr, "reflect serve: %s (pid %d) %s; restarting %s in %s\n",
                   child.name.c_str(), pid, how.c_str(),
                   child.group < 0 ? "it" : "its replica's every rank",
                   absl::FormatDuration(child.backoff).c_str());
      child.backoff = std::min(child.backoff * 2, absl::Seconds(30));
      if (child.group < 0) continue;
      for (Child& other : children) {
        if (other.group != child.group || &other == &child) continue;
        other.restart_at = child.restart_at;
        if (other.pid > 0) {
          kill(other.pid, SIGKILL);
          other.killed_for_group = true;
        }
      }
    }
  }
}

// Starts every dead child whose restart time has come; a replica group's ranks only all
// together, once none of them runs.
void RestartChildren(std::vector<Child>& children) {
  for (Child& child : children) {
    if (child.pid >= 0 || absl::Now() < child.restart_at || stop_requested) continue;
    if (child.group < 0) {
      if (!StartChild(child)) child.restart_at = absl::Now() + child.backoff;
      continue;
    }
    const bool group_down = std::none_of(children.begin(), children.end(), [&](const Child& c) {
      return c.group == child.group && c.pid >= 0;
    });
    if (!group_down) continue;
    for (Child& member : children) {
      if (member.group == child.group && !StartChild(member)) {
        member.restart_at = absl::Now() + member.backoff;
      }
    }
  }
}

// SIGTERM to the router, then (once it is gone or after 30 s) to the replicas; SIGKILL to
// whatever is left 30 s later.
void StopAll(std::vector<Child>& children) {
  auto wait_for = [&](size_t first, size_t last, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      bool alive = false;
      for (size_t index = first; index < last; ++index) {
        Child& child = children[index];
        if (child.pid > 0 && waitpid(child.pid, nullptr, WNOHANG) == child.pid) child.pid = -1;
        alive = alive || child.pid > 0;
      }
      if (!alive || absl::Now() >= deadline) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
  };
  const size_t router = children.size() - 1;  // the router is started last
  if (children[router].pid > 0) kill(children[router].pid, SIGTERM);
  wait_for(router, router + 1, absl::Seconds(30));
  // Followers are stopped by their rank 0 once it has drained.
  for (size_t index = 0; index < router; ++index) {
    if (children[index].pid > 0 && children[index].rank == 0) kill(children[index].pid, SIGTERM);
  }
  wait_for(0, router, absl::Seconds(30));
  for (Child& child : children) {
    if (child.pid > 0) {
      kill(child.pid, SIGKILL);
      waitpid(child.pid, nullptr, 0);
      child.pid = -1;
    }
  }
  for (Child& child : children) {
    if (child.output_forwarder.joinable()) child.output_forwarder.join();
  }
}

// The backend flags of replica `index`'s workers.
std::vector<std::string> BackendArguments(BackendKind backend, int index) {
  if (backend == BackendKind::kCpu) return {"--backend", "cpu"};
  return {"--backend",
          "cuda",
          "--gpu_memory_utilization",
          absl::StrCat(absl::GetFlag(FLAGS_gpu_memory_utilization)),
          absl::StrCat("--deterministic=", absl::GetFlag(FLAGS_deterministic) ? "true" : "false"),
          absl::StrCat("--cuda_graphs=", absl::GetFlag(FLAGS_cuda_graphs) ? "true" : "false"),
          "--device",
          absl::StrCat(absl::GetFlag(FLAGS_device) + index)};
}

// The flags of every rank of replica `index` (rank 0 listens on `port`; the others ignore it).
std::vector<std::string> WorkerArguments(const std::string& worker, const std::string& model,
                                         int port, int index, int threads,
                                         const std::string& served_model_name,
                                         BackendKind backend) {
  std::vector<std::string> arguments = {worker,
                                        "--model",
                                        model,
                                        "--host",
                                        "127.0.0.1",
                                        "--port",
                                        absl::StrCat(port),
                                        "--replica_id",
                                        absl::StrCat("replica-", index),
                                        "--threads",
                                        absl::StrCat(threads),
                                        "--kv_cache_gib",
                                        absl::StrCat(absl::GetFlag(FLAGS_kv_cache_gib)),
                                        "--metrics_port",
                                        absl::StrCat(FreeLoopbackPort()),
                                        "--served_model_name",
                                        served_model_name};
  const std::vector<std::string> backend_arguments = BackendArguments(backend, index);
  arguments.insert(arguments.end(), backend_arguments.begin(), backend_arguments.end());
  return arguments;
}

int Run(const std::vector<char*>& positional) {
  const std::string model = absl::GetFlag(FLAGS_model);
  const int replicas = absl::GetFlag(FLAGS_replicas);
  const int tp = absl::GetFlag(FLAGS_tp);
  const int pp = absl::GetFlag(FLAGS_pp);
  if (model.empty() || !positional.empty() || replicas < 1 || replicas > 64 || tp < 1 || pp < 1 ||
      tp * pp > 64) {
    std::fprintf(stderr,
                 "usage: reflect serve --model DIR [--replicas N (1-64)] [--tp T] [--pp P] "
                 "(T × P ranks per replica, at most 64) [--grpc_port P] [--http_port P]\n");
    return 2;
  }
  const int ranks = tp * pp;
  const absl::StatusOr<BackendKind> backend = ParseBackendKind(absl::GetFlag(FLAGS_backend));
  absl::Status backend_flags = backend.status();
  if (backend_flags.ok() && *backend == BackendKind::kCuda) {
    backend_flags = CheckCudaFlags(absl::GetFlag(FLAGS_gpu_memory_utilization),
                                   absl::GetFlag(FLAGS_device), ranks);
  }
  if (!backend_flags.ok()) {
    std::fprintf(stderr, "reflect serve: %s\n", std::string(backend_flags.message()).c_str());
    return 2;
  }
  if (!std::filesystem::exists(std::filesystem::path(model) / "config.json")) {
    std::fprintf(stderr, "reflect serve: %s has no config.json\n", model.c_str());
    return 2;
  }
  int grpc_port = absl::GetFlag(FLAGS_grpc_port);
  int http_port = absl::GetFlag(FLAGS_http_port);
  if (grpc_port == 0) grpc_port = FreeLoopbackPort();
  if (http_port == 0) http_port = FreeLoopbackPort();
  const std::string worker =
      FindProgram(absl::GetFlag(FLAGS_worker_binary), "worker", "reflect-worker");
  const std::string router =
      FindProgram(absl::GetFlag(FLAGS_router_binary), "router", "reflect-router");
  std::string served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (served_model_name.empty()) served_model_name = DefaultServedModelName(model);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads)
                                                       : std::max(1, cores / (replicas * ranks));

  std::vector<Child> children(static_cast<size_t>(replicas * ranks) + 1);
  std::vector<std::string> replica_addresses;
  for (int index = 0; index < replicas; ++index) {
    const int port = FreeLoopbackPort();
    const std::string address = absl::StrCat("127.0.0.1:", port);
    replica_addresses.push_back(address);
    const std::string leader_address = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
    for (int rank = 0; rank < ranks; ++rank) {
      Child& child = children[static_cast<size_t>(index * ranks + rank)];
      child.name = rank == 0 ? absl::StrCat("replica-", index)
                             : absl::StrCat("replica-", index, "-rank-", rank);
      child.group = ranks > 1 ? index : -1;
      child.rank = rank;
      child.arguments =
          WorkerArguments(worker, model, port, index, threads, served_model_name, *backend);
      if (ranks > 1) {
        child.arguments.insert(
            child.arguments.end(),
            {"--tensor_parallel", absl::StrCat(tp), "--pipeline_parallel", absl::StrCat(pp),
             "--rank", absl::StrCat(rank), "--leader_address", leader_address});
      }
    }
  }
  std::vector<std::string> router_arguments = {router,
                                               "--model",
                                               model,
                                               "--replicas",
                                               absl::StrJoin(replica_addresses, ","),
                                               "--host",
                                               absl::GetFlag(FLAGS_host),
                                               "--grpc_port",
                                               absl::StrCat(grpc_port),
                                               "--http_port",
                                               absl::StrCat(http_port)};
  router_arguments.insert(router_arguments.end(), {"--served_model_name", served_model_name});
  if (!absl::GetFlag(FLAGS_api_key_file).empty()) {
    router_arguments.insert(router_arguments.end(),
                            {"--api_key_file", absl::GetFlag(FLAGS_api_key_file)});
  }
  children.back().name = "router";
  children.back().arguments = router_arguments;

  struct sigaction action {};
  action.sa_handler = RequestStop;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  for (Child& child : children) {
    if (!StartChild(child)) {
      std::fprintf(stderr, "reflect serve: cannot start %s\n", child.name.c_str());
      StopAll(children);
      return 1;
    }
  }
  const absl::Time started = absl::Now();
  if (WaitForReady(absl::GetFlag(FLAGS_host), http_port, absl::Minutes(10))) {
    std::printf(
        "%s",
        ServeExamples(absl::GetFlag(FLAGS_host), grpc_port, http_port, served_model_name).c_str());
    std::printf("%d replica(s) of %d rank(s) (tp %d × pp %d), %d engine thread(s) per rank\n",
                replicas, ranks, tp, pp, threads);
    std::printf("ready after %.1f s\n", absl::ToDoubleSeconds(absl::Now() - started));
    std::fflush(stdout);
  }
  while (!stop_requested) {
    ReapChildren(children);
    RestartChildren(children);
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::fprintf(stderr, "reflect serve: stopping\n");
  StopAll(children);
  return 0;
}

const CommandRegistration kRegistration(
    {"serve", "run a router and model replicas on this machine (the embedded cluster)", &Run});

}  // namespace
}  // namespace reflect::cli
