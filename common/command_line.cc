#include "common/command_line.h"

#include <signal.h>

#include <algorithm>
#include <string_view>

namespace reflect {
namespace {

sigset_t TerminationSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  return signals;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t signals = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

int WaitForTerminationSignal() {
  const sigset_t signals = TerminationSignals();
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  return signal_number;
}

void NormalizeFlagNames(std::vector<char*>& args, std::vector<std::string>& storage) {
  // One string per argument at most: reserving up front keeps earlier data() pointers valid.
  storage.reserve(storage.size() + args.size());
  for (char*& arg : args) {
    const std::string_view text = arg;
    if (text == "--") return;
    if (!text.starts_with("--")) continue;
    std::string normalized(text);
    const size_t name_end = std::min(normalized.find('='), normalized.size());
    std::replace(normalized.begin() + 2, normalized.begin() + name_end, '-', '_');
    storage.push_back(std::move(normalized));
    arg = storage.back().data();
  }
}

}  // namespace reflect
