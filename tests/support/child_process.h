// A long-running program (reflect-worker, reflect-router, reflect serve, prometheus) started as a
// real child process for a test, and killed when the test lets go of it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace reflect::testing {

// Starts arguments[0] with arguments[1...]; stdin is /dev/null, stderr is inherited (it lands in
// the test log), stdout is a pipe that ReadLine reads. Ownership: SIGKILLs and reaps the child in
// the destructor unless it has already exited. Thread-safety: none.
class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> arguments);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Reads stdout until a line starts with `prefix` and returns the rest of it (e.g. "listening "
  // → "127.0.0.1:40123"); empty when the output ends or `timeout` passes first.
  std::string WaitForLine(const std::string& prefix, absl::Duration timeout);

  pid_t pid() const { return pid_; }
  void Signal(int signal_number);
  // The exit code, or -1 on timeout or a death by signal.
  int WaitForExit(absl::Duration timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffered_;
  bool exited_ = false;
  int exit_code_ = -1;
};

// reflect-worker on `model_dir` with --port 0, waited for until it prints its address;
// `extra_flags` are appended. address() is empty when it failed to start.
class WorkerProcess {
 public:
  explicit WorkerProcess(const std::string& model_dir, std::vector<std::string> extra_flags = {});
  const std::string& address() const { return address_; }
  ChildProcess& process() { return process_; }

 private:
  ChildProcess process_;
  std::string address_;
};

// The arguments of reflect-worker on `model_dir` with the flags tests use (port 0, 2 threads,
// 512 KV blocks, 256 batched tokens) plus `extra_flags`.
std::vector<std::string> WorkerArguments(const std::string& model_dir,
                                         const std::vector<std::string>& extra_flags);

}  // namespace reflect::testing
