// Stop strings over streamed text, with OpenAI semantics: the text before the first stop string is
// returned, the stop string and everything after it are not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace reflect {

struct StopMatch {
  size_t stop_index = 0;  // index of the matched string in the constructor's list
};

struct StopMatcherResult {
  std::string text;                // safe to send now; never part of a stop string
  std::optional<StopMatch> match;  // set once, on the push that completed a stop string
};

// Matches a set of stop strings over text that arrives in pieces.
//
// The stream stops where the first stop string ends; when several end at that byte, the longest
// (earliest-starting) one wins, and among equal strings the lowest index. The result is the same
// however the text is split. Between pushes the matcher holds back exactly the longest suffix of
// the stream that is a proper prefix of some stop string (what could still become a match) and
// releases everything before it. Matching is on bytes: a stop string of UTF-8 text starts and ends
// on character boundaries of valid UTF-8 text, so released text never splits a character that the
// input did not split.
//
// Built as an Aho–Corasick automaton (trie with failure links), so a push costs O(bytes pushed)
// amortized whatever the number of stop strings; construction is O(total stop string bytes).
// Empty stop strings never match. Thread-safety: none (one matcher per stream; construct a new one
// per request).
class StopMatcher {
 public:
  explicit StopMatcher(const std::vector<std::string>& stop_strings);

  // Feeds the next text of the stream. After a match, further pushes return nothing.
  StopMatcherResult Push(std::string_view text);

  // End of stream without a match: the held-back text (empty after a match).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  struct Node {
    int32_t failure = 0;       // node of the longest proper suffix that is also in the trie
    int32_t depth = 0;         // bytes from the root
    int32_t match_length = 0;  // longest stop string ending here (via failure links); 0: none
    int32_t match_index = -1;  // its index
  };

  // The node after reading `byte` at `node` (follows failure links).
  int32_t Step(int32_t node, uint8_t byte) const;
  int32_t Child(int32_t node, uint8_t byte) const;

  std::vector<Node> nodes_;
  absl::flat_hash_map<uint64_t, int32_t> children_;  // (node << 8 | byte) → child node
  int32_t node_ = 0;                                 // automaton state after the stream so far
  std::string held_;  // the stream's last node_'s-depth bytes, not yet released
  bool stopped_ = false;
};

}  // namespace reflect
