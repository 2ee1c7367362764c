// Command-line helpers shared by the `reflect` CLI and the server programs.
#pragma once

#include <string>
#include <vector>

namespace reflect {

// absl spells flags with underscores; users may write dashes (--max-tokens). Rewrites the name
// part of every "--name[=value]" in `args` before the first bare "--"; the rewritten strings
// live in `storage`, which must outlive `args`.
void NormalizeFlagNames(std::vector<char*>& args, std::vector<std::string>& storage);

// Blocks SIGTERM and SIGINT in the calling thread. Call it first in main, before any thread
// starts: every thread inherits the mask, so the signals wait for WaitForTerminationSignal
// instead of interrupting some thread in signal context.
void BlockTerminationSignals();

// Waits until SIGTERM or SIGINT arrives (blocked by BlockTerminationSignals) and returns it.
int WaitForTerminationSignal();

}  // namespace reflect
