// Subcommands of the `reflect` binary. Each lives in its own *_command.cc and registers itself:
//
//   static const CommandRegistration kRegistration({"tokenize", "text <-> token ids", &Run});
//
// `run` receives argv with the subcommand removed, flags already parsed by absl (positional
// arguments remain). It returns the process exit code.
#pragma once

#include <string_view>
#include <vector>

namespace reflect::cli {

struct Command {
  std::string_view name;
  std::string_view summary;
  int (*run)(const std::vector<char*>& positional_args);
};

struct CommandRegistration {
  explicit CommandRegistration(const Command& command);
};

const std::vector<Command>& RegisteredCommands();

}  // namespace reflect::cli
