#include "tests/support/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "absl/time/clock.h"
#include "tests/support/test_paths.h"

namespace reflect::testing {

ChildProcess::ChildProcess(std::vector<std::string> arguments) {
  int output[2];
  if (pipe2(output, O_CLOEXEC) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(output[1], STDOUT_FILENO);
    const int null_input = open("/dev/null", O_RDONLY);
    if (null_input >= 0) dup2(null_input, STDIN_FILENO);
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(output[1]);
  stdout_fd_ = output[0];
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

std::string ChildProcess::WaitForLine(const std::string& prefix, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (stdout_fd_ >= 0) {
    for (size_t end = buffered_.find('\n'); end != std::string::npos; end = buffered_.find('\n')) {
      const std::string line = buffered_.substr(0, end);
      buffered_.erase(0, end + 1);
      if (line.starts_with(prefix)) return line.substr(prefix.size());
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return "";
    pollfd descriptor{.fd = stdout_fd_, .events = POLLIN, .revents = 0};
    const int wait_ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left), 1000));
    if (poll(&descriptor, 1, std::max(wait_ms, 1)) <= 0) continue;
    char chunk[4096];
    const ssize_t bytes = read(stdout_fd_, chunk, sizeof(chunk));
    if (bytes <= 0) return "";
    buffered_.append(chunk, static_cast<size_t>(bytes));
  }
  return "";
}

void ChildProcess::Signal(int signal_number) {
  if (pid_ > 0 && !exited_) kill(pid_, signal_number);
}

int ChildProcess::WaitForExit(absl::Duration timeout) {
  if (exited_) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  while (pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      return exit_code_;
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return -1;
}

bool ChildProcess::running() {
  WaitForExit(absl::ZeroDuration());
  return pid_ > 0 && !exited_;
}

std::vector<std::string> WorkerArguments(const std::string& model_dir,
                                         const std::vector<std::string>& extra_flags) {
  std::vector<std::string> arguments = {std::string(REFLECT_BINARY_DIR) + "/worker/reflect-worker",
                                        "--model",
                                        model_dir,
                                        "--port",
                                        "0",
                                        "--threads",
                                        "2",
                                        "--num-kv-blocks",
                                        "512",
                                        "--max-num-batched-tokens",
                                        "256"};
  arguments.insert(arguments.end(), extra_flags.begin(), extra_flags.end());
  return arguments;
}

WorkerProcess::WorkerProcess(const std::string& model_dir, std::vector<std::string> extra_flags)
    : process_(WorkerArguments(model_dir, extra_flags)) {
  address_ = process_.WaitForLine("listening ", absl::Seconds(60));
}

}  // namespace reflect::testing
