// `reflect serve` as a user runs it: a real process that starts replicas and a router, answers on
// both public ports, restarts a replica that dies, and stops everything on Ctrl-C (SIGINT).
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tests/support/child_process.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using testing::ChildProcess;
using testing::HttpCall;

// Pids of the children of `parent` whose command line starts with a path ending in `program`.
std::set<pid_t> ChildrenRunning(pid_t parent, const std::string& program) {
  std::set<pid_t> pids;
  std::ifstream children("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) +
                         "/children");
  for (pid_t pid; children >> pid;) {
    std::ifstream command_line("/proc/" + std::to_string(pid) + "/cmdline");
    std::string first;
    std::getline(command_line, first, '\0');
    if (first.ends_with(program)) pids.insert(pid);
  }
  return pids;
}

bool ProcessExists(pid_t pid) { return kill(pid, 0) == 0; }

TEST(ServeCliTest, ServesRestartsADeadReplicaAndStopsOnCtrlC) {
  ChildProcess serve({testing::ReflectBinary().string(), "serve", "--model",
                      testing::TestModelPath("tiny").string(), "--replicas", "2", "--grpc_port",
                      "0", "--http_port", "0", "--kv_cache_gib", "0.05", "--threads", "1"});
  const std::string http = serve.WaitForLine("[router] http ", absl::Seconds(60));
  ASSERT_FALSE(http.empty());
  ASSERT_FALSE(serve.WaitForLine("ready after ", absl::Seconds(60)).empty());

  const nlohmann::json body = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                               {"max_tokens", 4}};
  testing::HttpReply reply = HttpCall(http, "POST", "/v1/chat/completions", body.dump());
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(nlohmann::json::parse(reply.body)["model"], "tiny");

  const std::set<pid_t> workers = ChildrenRunning(serve.pid(), "reflect-worker");
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(ChildrenRunning(serve.pid(), "reflect-router").size(), 1u);
  const pid_t victim = *workers.begin();
  kill(victim, SIGKILL);
  // Serve notices, restarts it on the same port, and the cluster keeps answering.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::set<pid_t> now;
  while (absl::Now() < deadline) {
    now = ChildrenRunning(serve.pid(), "reflect-worker");
    if (now.size() == 2 && !now.contains(victim)) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(now.size(), 2u);
  EXPECT_FALSE(now.contains(victim));
  for (int attempt = 0; attempt < 4; ++attempt) {
    reply = HttpCall(http, "POST", "/v1/chat/completions", body.dump());
    EXPECT_EQ(reply.status, 200) << reply.body;
  }

  const std::set<pid_t> all = [&] {
    std::set<pid_t> pids = ChildrenRunning(serve.pid(), "reflect-worker");
    pids.merge(ChildrenRunning(serve.pid(), "reflect-router"));
    return pids;
  }();
  serve.Signal(SIGINT);
  EXPECT_EQ(serve.WaitForExit(absl::Seconds(90)), 0);
  for (pid_t pid : all) EXPECT_FALSE(ProcessExists(pid)) << "child " << pid << " outlived serve";
}

TEST(ServeCliTest, RefusesBadFlags) {
  const testing::ProcessResult no_model = testing::RunReflect("serve", {});
  EXPECT_EQ(no_model.exit_code, 2);
  const testing::ProcessResult bad_replicas = testing::RunReflect(
      "serve", {"--model", testing::TestModelPath("tiny").string(), "--replicas", "0"});
  EXPECT_EQ(bad_replicas.exit_code, 2);
  EXPECT_NE(bad_replicas.standard_error.find("replicas"), std::string::npos);
  const testing::ProcessResult missing =
      testing::RunReflect("serve", {"--model", "/nonexistent/model"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.standard_error.find("config.json"), std::string::npos);
  const testing::ProcessResult bad_backend = testing::RunReflect(
      "serve", {"--model", testing::TestModelPath("tiny").string(), "--backend", "tpu"});
  EXPECT_EQ(bad_backend.exit_code, 2);
  EXPECT_NE(bad_backend.standard_error.find("--backend"), std::string::npos);
  const testing::ProcessResult cuda_group = testing::RunReflect(
      "serve",
      {"--model", testing::TestModelPath("tiny").string(), "--backend", "cuda", "--tp", "2"});
  EXPECT_EQ(cuda_group.exit_code, 2);
  EXPECT_NE(cuda_group.standard_error.find("one rank per replica"), std::string::npos);
  const testing::ProcessResult bad_fraction =
      testing::RunReflect("serve", {"--model", testing::TestModelPath("tiny").string(), "--backend",
                                    "cuda", "--gpu_memory_utilization", "1.5"});
  EXPECT_EQ(bad_fraction.exit_code, 2);
  EXPECT_NE(bad_fraction.standard_error.find("--gpu_memory_utilization"), std::string::npos);
}

// --backend and the CUDA flags reach every worker, replica i on device --device + i. The workers
// here are a stand-in script that records its command line (this machine has no GPU for a real
// CUDA worker; tests/backend_flags_test.cc covers what reflect-worker does with these flags).
TEST(ServeCliTest, PassesTheBackendFlagsToItsWorkers) {
  const std::filesystem::path directory = testing::MakeTestDirectory("serve_backend");
  const std::filesystem::path stand_in = directory / "record-worker.sh";
  std::ofstream(stand_in) << "#!/bin/sh\necho \"$*\" > \"" << directory.string()
                          << "/args-$$\"\nexec sleep 60\n";
  std::filesystem::permissions(stand_in, std::filesystem::perms::owner_all);
  ChildProcess serve({testing::ReflectBinary().string(), "serve", "--model",
                      testing::TestModelPath("tiny").string(), "--replicas", "2", "--grpc_port",
                      "0", "--http_port", "0", "--worker_binary", stand_in.string(), "--backend",
                      "cuda", "--gpu_memory_utilization", "0.5", "--deterministic", "--device",
                      "3"});
  std::vector<std::string> recorded;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (recorded.size() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
    recorded.clear();
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      if (!entry.path().filename().string().starts_with("args-")) continue;
      std::ifstream file(entry.path());
      std::string line;
      if (std::getline(file, line)) recorded.push_back(line);
    }
  }
  serve.Signal(SIGINT);
  EXPECT_EQ(serve.WaitForExit(absl::Seconds(90)), 0);
  ASSERT_EQ(recorded.size(), 2u);
  std::set<std::string> devices;
  for (const std::string& line : recorded) {
    SCOPED_TRACE(line);
    EXPECT_NE(line.find("--backend cuda --gpu_memory_utilization 0.5 --deterministic=true "
                        "--cuda_graphs=true --device "),
              std::string::npos);
    devices.insert(line.substr(line.rfind(' ') + 1));
  }
  EXPECT_EQ(devices, (std::set<std::string>{"3", "4"}));
}

}  // namespace
}  // namespace reflect
