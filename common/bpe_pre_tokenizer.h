// The regex split of a byte-level BPE pre-tokenizer (tokenizer.json "Split" with behavior
// "Isolated"): every regex match is one pre-token, and so is every stretch of text between
// matches. Compiled with PCRE2 in UTF + UCP mode with JIT, so \s, \p{L}, \p{N} are Unicode-aware
// like the Oniguruma regexes of Hugging Face `tokenizers`.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"

struct pcre2_real_code_8;
struct pcre2_real_match_data_8;

namespace reflect {

// A compiled PCRE2 pattern (UTF + UCP + JIT). Immutable after Compile and safe to share across
// threads; each walk over a text uses its own PreTokenCursor.
class UnicodeRegex {
 public:
  static absl::StatusOr<std::unique_ptr<UnicodeRegex>> Compile(std::string_view pattern);
  ~UnicodeRegex();
  UnicodeRegex(const UnicodeRegex&) = delete;
  UnicodeRegex& operator=(const UnicodeRegex&) = delete;

  // Whether the pattern matches at exactly `position` (anchored there); the match length is
  // stored in `length`. Allocates a match block per call: for rare paths, not per pre-token.
  bool MatchesAt(std::string_view text, std::size_t position, std::size_t* length) const;

 private:
  friend class PreTokenCursor;
  explicit UnicodeRegex(pcre2_real_code_8* code) : code_(code) {}
  pcre2_real_code_8* code_;
};

// Walks the pre-tokens of one text in order. Invalid UTF-8 never matches the regex, so it comes
// out as part of the in-between stretches and still reaches the byte-level model.
// Not thread-safe; owns one PCRE2 match block (one allocation per text, none per pre-token).
class PreTokenCursor {
 public:
  PreTokenCursor(const UnicodeRegex& regex, std::string_view text);
  ~PreTokenCursor();
  PreTokenCursor(const PreTokenCursor&) = delete;
  PreTokenCursor& operator=(const PreTokenCursor&) = delete;

  // The next pre-token (never empty); false at the end of the text.
  bool Next(std::string_view* pre_token);

 private:
  // Finds the next match at or after position_ into match_start_/match_end_; false if none.
  bool FindMatch();

  const UnicodeRegex& regex_;
  std::string_view text_;
  pcre2_real_match_data_8* match_data_;
  std::size_t position_ = 0;
  // A match found after a gap: the gap is returned first, the match on the next call.
  bool have_pending_match_ = false;
  std::size_t match_start_ = 0;
  std::size_t match_end_ = 0;
};

}  // namespace reflect
