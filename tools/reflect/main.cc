// `reflect <command> [flags]`: the one command-line entry point (mkmodel, tokenize, generate,
// bench, ...). See command.h for how subcommands plug in.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/command_line.h"
#include "tools/reflect/command.h"

namespace reflect::cli {
namespace {

std::vector<Command>& MutableCommands() {
  static std::vector<Command> commands;
  return commands;
}

void PrintUsage() {
  std::fprintf(stderr, "usage: reflect <command> [--flags]\n\ncommands:\n");
  for (const Command& command : RegisteredCommands()) {
    std::fprintf(stderr, "  %-10s %.*s\n", std::string(command.name).c_str(),
                 static_cast<int>(command.summary.size()), command.summary.data());
  }
  std::fprintf(
      stderr,
      "\n`reflect <command> --help` lists the flags; --a-flag and --a_flag are the same.\n");
}

}  // namespace

CommandRegistration::CommandRegistration(const Command& command) {
  MutableCommands().push_back(command);
}

const std::vector<Command>& RegisteredCommands() { return MutableCommands(); }

}  // namespace reflect::cli

int main(int argc, char** argv) {
  using reflect::cli::Command;
  absl::SetProgramUsageMessage("reflect <command> [--flags]");
  if (argc < 2 || argv[1][0] == '-') {
    reflect::cli::PrintUsage();
    return 2;
  }
  const std::string_view name = argv[1];
  for (const Command& command : reflect::cli::RegisteredCommands()) {
    if (command.name != name) continue;
    // Parse flags as if the subcommand were the program: argv[0] stays, argv[1] goes.
    std::vector<char*> args(argv, argv + argc);
    args.erase(args.begin() + 1);
    std::vector<std::string> normalized_storage;
    reflect::NormalizeFlagNames(args, normalized_storage);
    std::vector<char*> positional =
        absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
    positional.erase(positional.begin());  // program name
    return command.run(positional);
  }
  std::fprintf(stderr, "reflect: unknown command '%s'\n\n", argv[1]);
  reflect::cli::PrintUsage();
  return 2;
}
