// Runs a program as a real child process for tests: no shell, no temporary files, so tests that
// run concurrently (ctest -j) never share anything.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace reflect::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when the child did not exit normally (signal, spawn failure)
  std::string standard_output;
  std::string standard_error;
};

// Runs arguments[0] with arguments[1...], writes `standard_input` to its stdin (then closes it),
// and collects stdout and stderr until the child exits. Blocks; never deadlocks on full pipes.
ProcessResult RunProcess(const std::vector<std::string>& arguments,
                         const std::string& standard_input = "");

// RunProcess of `reflect <command> <arguments...>` from this build tree.
ProcessResult RunReflect(const std::string& command, const std::vector<std::string>& arguments,
                         const std::string& standard_input = "");

// A new, empty directory private to this process and test (under ::testing::TempDir()).
std::filesystem::path MakeTestDirectory(const std::string& prefix);

}  // namespace reflect::testing
