// Added tokens of a tokenizer.json ("added_tokens": the Llama 3 specials <|begin_of_text|>,
// <|eot_id|>, <|reserved_special_token_N|>, ...): found in the raw text before any
// pre-tokenization and emitted as single ids, the way Hugging Face `tokenizers` does it —
// leftmost-longest, non-overlapping, honouring single_word / lstrip / rstrip.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/bpe_pre_tokenizer.h"

namespace reflect {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false;  // only matches when not inside a word (Rust regex \w)
  bool lstrip = false;       // swallows the whitespace before it
  bool rstrip = false;       // swallows the whitespace after it
  bool normalized = false;   // matched after normalization (in a second pass)
  bool special = false;
};

// Where one added token sits in a text: bytes [start, end), stripped whitespace included.
struct AddedTokenSpan {
  std::size_t start;
  std::size_t end;
  int32_t id;
};

// One matching pass over a fixed set of added tokens. Immutable after Create; FindAll may run
// concurrently. Cost: one table lookup per byte, plus a trie walk where a token could start.
class AddedTokenMatcher {
 public:
  static absl::StatusOr<std::unique_ptr<AddedTokenMatcher>> Create(
      const std::vector<AddedToken>& tokens);

  // Appends, in text order, the spans of the tokens found in `text`.
  void FindAll(std::string_view text, std::vector<AddedTokenSpan>* spans) const;

 private:
  struct Flags {
    int32_t id;
    bool single_word;
    bool lstrip;
    bool rstrip;
  };
  // The longest token starting exactly at `start`: its end, or 0 when none.
  std::size_t LongestAt(std::string_view text, std::size_t start, int32_t* token_index) const;
  bool WordCharacterAt(std::string_view text, std::size_t position) const;
  bool WordCharacterBefore(std::string_view text, std::size_t position) const;
  std::size_t WhiteSpaceRunStartBefore(std::string_view text, std::size_t position) const;
  std::size_t WhiteSpaceRunEndAfter(std::string_view text, std::size_t position) const;

  std::vector<Flags> flags_;
  // Byte trie: (node << 8 | byte) -> child node. Node 0 is the root.
  absl::flat_hash_map<uint64_t, int32_t> transitions_;
  std::vector<int32_t> accepting_token_;  // per node: token index, or -1
  bool can_start_[256] = {};
  std::unique_ptr<UnicodeRegex> word_character_;   // Rust regex \w
  std::unique_ptr<UnicodeRegex> white_space_run_;  // Rust regex \s*
};

}  // namespace reflect
