#include "common/bpe_added_tokens.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

// `tokenizers` decides single_word / lstrip / rstrip with the Rust regex crate, whose Unicode \w
// and \s are these classes.
constexpr std::string_view kWordCharacter = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";
constexpr std::string_view kWhiteSpaceRun = R"(\p{White_Space}*)";

bool IsContinuationByte(char byte) { return (static_cast<uint8_t>(byte) & 0xC0) == 0x80; }

// Start of the character that ends just before `position` (which is > 0).
std::size_t PreviousCharacterStart(std::string_view text, std::size_t position) {
  std::size_t start = position - 1;
  while (start > 0 && position - start < 4 && IsContinuationByte(text[start])) --start;
  return start;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AddedTokenMatcher>> AddedTokenMatcher::Create(
    const std::vector<AddedToken>& tokens) {
  auto matcher = std::unique_ptr<AddedTokenMatcher>(new AddedTokenMatcher());
  REFLECT_ASSIGN_OR_RETURN(matcher->word_character_, UnicodeRegex::Compile(kWordCharacter));
  REFLECT_ASSIGN_OR_RETURN(matcher->white_space_run_, UnicodeRegex::Compile(kWhiteSpaceRun));
  matcher->accepting_token_.push_back(-1);
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("added token ", token.id, " is empty"));
    }
    int32_t node = 0;
    for (const char byte : token.content) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(byte);
      const auto [child, inserted] = matcher->transitions_.try_emplace(
          key, static_cast<int32_t>(matcher->accepting_token_.size()));
      if (inserted) matcher->accepting_token_.push_back(-1);
      node = child->second;
    }
    matcher->can_start_[static_cast<uint8_t>(token.content[0])] = true;
    // A repeated content keeps its last entry, as the token map of `tokenizers` does.
    matcher->accepting_token_[node] = static_cast<int32_t>(matcher->flags_.size());
    matcher->flags_.push_back({token.id, token.single_word, token.lstrip, token.rstrip});
  }
  return matcher;
}

std::size_t AddedTokenMatcher::LongestAt(std::string_view text, std::size_t start,
                                         int32_t* token_index) const {
  std::size_t longest_end = 0;
  int32_t node = 0;
  for (std::size_t position = start; position < text.size(); ++position) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[position]);
    const auto child = transitions_.find(key);
    if (child == transitions_.end()) break;
    node = child->second;
    if (accepting_token_[node] >= 0) {
      longest_end = position + 1;
      *token_index = accepting_token_[node];
    }
  }
  return longest_end;
}

bool AddedTokenMatcher::WordCharacterAt(std::string_view text, std::size_t position) const {
  std::size_t length = 0;
  return position < text.size() && word_character_->MatchesAt(text, position, &length);
}

bool AddedTokenMatcher::WordCharacterBefore(std::string_view text, std::size_t position) const {
  return position > 0 && WordCharacterAt(text, PreviousCharacterStart(text, position));
}

std::size_t AddedTokenMatcher::WhiteSpaceRunStartBefore(std::string_view text,
                                                        std::size_t position) const {
  while (position > 0) {
    const std::size_t previous = PreviousCharacterStart(text, position);
    std::size_t length = 0;
    white_space_run_->MatchesAt(text, previous, &length);
    if (length == 0) break;
    position = previous;
  }
  return position;
}

std::size_t AddedTokenMatcher::WhiteSpaceRunEndAfter(std::string_view text,
                                                     std::size_t position) const {
  std::size_t length = 0;
  white_space_run_->MatchesAt(text, position, &length);
  return position + length;
}

void AddedTokenMatcher::FindAll(std::string_view text, std::vector<AddedTokenSpan>* spans) const {
  if (flags_.empty()) return;
  // End of the previous span: lstrip never reaches back into it.
  std::size_t previous_end = 0;
  std::size_t search_from = 0;
  while (search_from < text.size()) {
    std::size_t start = search_from;
    std::size_t end = 0;
    int32_t token_index = -1;
    for (; start < text.size(); ++start) {
      if (!can_start_[static_cast<uint8_t>(text[start])]) continue;
      end = LongestAt(text, start, &token_index);
      if (end != 0) break;
    }
    if (end == 0) return;
    // Like the Aho-Corasick iterator of `tokenizers`, the search resumes after the raw match
    // even when the match is then discarded or stretched by rstrip.
    search_from = end;
    const Flags& flags = flags_[token_index];
    if (flags.single_word && (WordCharacterBefore(text, start) || WordCharacterAt(text, end))) {
      continue;
    }
    if (flags.lstrip) start = std::max(WhiteSpaceRunStartBefore(text, start), previous_end);
    if (flags.rstrip) end = WhiteSpaceRunEndAfter(text, end);
    start = std::max(start, previous_end);
    if (end <= start) continue;  // only possible for a token inside the previous rstrip
    spans->push_back({start, end, flags.id});
    previous_end = end;
  }
}

}  // namespace reflect
