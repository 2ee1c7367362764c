// Command-line helpers shared by the `reflect` CLI and the server programs.
#pragma once

#include <string>
#include <vector>

namespace reflect {

// absl spells flags with underscores; users may write dashes (--max-tokens). Rewrites the name
// part of every "--name[=value]" in `args` before the first bare "--"; the rewritten strings
// live in `storage`, which must outlive `args`.
void NormalizeFlagNames(std::vector<char*>& args, std::vector<std::string>& storage);

}  // namespace reflect
