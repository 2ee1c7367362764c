#include "tests/support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>

#include "gtest/gtest.h"
#include "tests/support/test_paths.h"

namespace reflect::testing {
namespace {

// Reads what is available on `fd` into `sink`; returns false at end of file.
bool Drain(int fd, std::string& sink) {
  std::array<char, 65536> buffer;
  const ssize_t count = read(fd, buffer.data(), buffer.size());
  if (count > 0) {
    sink.append(buffer.data(), static_cast<size_t>(count));
    return true;
  }
  return count < 0 && (errno == EINTR || errno == EAGAIN);
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& arguments,
                         const std::string& standard_input) {
  ProcessResult result;
  int input_pipe[2], output_pipe[2], error_pipe[2];
  if (pipe2(input_pipe, O_CLOEXEC) != 0 || pipe2(output_pipe, O_CLOEXEC) != 0 ||
      pipe2(error_pipe, O_CLOEXEC) != 0) {
    return result;
  }
  std::vector<char*> argv;
  for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);

  const pid_t child = fork();
  if (child == 0) {
    dup2(input_pipe[0], STDIN_FILENO);
    dup2(output_pipe[1], STDOUT_FILENO);
    dup2(error_pipe[1], STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(input_pipe[0]);
  close(output_pipe[1]);
  close(error_pipe[1]);
  if (child < 0) {
    close(input_pipe[1]);
    close(output_pipe[0]);
    close(error_pipe[0]);
    return result;
  }
  // A child that exits before reading all of stdin must not kill us with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  fcntl(input_pipe[1], F_SETFL, O_NONBLOCK);
  size_t written = 0;
  int input_fd = input_pipe[1];
  if (standard_input.empty()) {
    close(input_fd);
    input_fd = -1;
  }
  bool output_open = true, error_open = true;
  while (output_open || error_open) {
    std::array<pollfd, 3> fds{{{output_open ? output_pipe[0] : -1, POLLIN, 0},
                               {error_open ? error_pipe[0] : -1, POLLIN, 0},
                               {input_fd, POLLOUT, 0}}};
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) output_open = Drain(output_pipe[0], result.standard_output);
    if (fds[1].revents != 0) error_open = Drain(error_pipe[0], result.standard_error);
    if (input_fd >= 0 && fds[2].revents != 0) {
      const ssize_t count =
          write(input_fd, standard_input.data() + written, standard_input.size() - written);
      if (count > 0) written += static_cast<size_t>(count);
      if (written == standard_input.size() || (count < 0 && errno != EAGAIN && errno != EINTR)) {
        close(input_fd);
        input_fd = -1;
      }
    }
  }
  if (input_fd >= 0) close(input_fd);
  close(output_pipe[0]);
  close(error_pipe[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

ProcessResult RunReflect(const std::string& command, const std::vector<std::string>& arguments,
                         const std::string& standard_input) {
  std::vector<std::string> full{ReflectBinary().string(), command};
  full.insert(full.end(), arguments.begin(), arguments.end());
  return RunProcess(full, standard_input);
}

std::filesystem::path MakeTestDirectory(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string test_name = test != nullptr ? test->name() : "global";
  std::filesystem::path directory = std::filesystem::path(::testing::TempDir()) /
                                    (prefix + "-" + test_name + "-" + std::to_string(getpid()) +
                                     "-" + std::to_string(counter.fetch_add(1)));
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  return directory;
}

}  // namespace reflect::testing
