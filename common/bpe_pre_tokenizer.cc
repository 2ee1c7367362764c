#include "common/bpe_pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace reflect {
namespace {

std::string Pcre2ErrorMessage(int error_code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnicodeRegex>> UnicodeRegex::Compile(std::string_view pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // MATCH_INVALID_UTF: Encode takes arbitrary bytes; ill-formed UTF-8 must not fail the match.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("pre-tokenizer regex does not compile at offset ", error_offset, ": ",
                     Pcre2ErrorMessage(error_code)));
  }
  const int jit_result = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  if (jit_result != 0) {
    pcre2_code_free(code);
    return absl::InternalError(
        absl::StrCat("PCRE2 JIT compilation failed: ", Pcre2ErrorMessage(jit_result)));
  }
  return std::unique_ptr<UnicodeRegex>(new UnicodeRegex(code));
}

UnicodeRegex::~UnicodeRegex() { pcre2_code_free(code_); }

bool UnicodeRegex::MatchesAt(std::string_view text, std::size_t position,
                             std::size_t* length) const {
  pcre2_match_data* match_data = pcre2_match_data_create_from_pattern(code_, nullptr);
  const int result = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                                 position, PCRE2_ANCHORED, match_data, nullptr);
  if (result >= 0) {
    const PCRE2_SIZE* offsets = pcre2_get_ovector_pointer(match_data);
    *length = offsets[1] - offsets[0];
  }
  pcre2_match_data_free(match_data);
  return result >= 0;
}

PreTokenCursor::PreTokenCursor(const UnicodeRegex& regex, std::string_view text)
    : regex_(regex),
      text_(text),
      match_data_(pcre2_match_data_create_from_pattern(regex.code_, nullptr)) {}

PreTokenCursor::~PreTokenCursor() { pcre2_match_data_free(match_data_); }

bool PreTokenCursor::FindMatch() {
  // NOTEMPTY: an empty match would make no progress; the Llama 3 pattern never matches empty.
  const int result = pcre2_jit_match(regex_.code_, reinterpret_cast<PCRE2_SPTR>(text_.data()),
                                     text_.size(), position_, PCRE2_NOTEMPTY, match_data_, nullptr);
  // Any failure ends the split: the rest becomes one pre-token, still encoded losslessly.
  // Only "no match" happens with the Llama 3 pattern: on megabyte runs of spaces, tabs,
  // newlines, letters and digits its ids still equal Hugging Face's (no JIT stack limit hit).
  if (result < 0) return false;
  const PCRE2_SIZE* offsets = pcre2_get_ovector_pointer(match_data_);
  match_start_ = offsets[0];
  match_end_ = offsets[1];
  return true;
}

bool PreTokenCursor::Next(std::string_view* pre_token) {
  if (!have_pending_match_) {
    if (position_ >= text_.size()) return false;
    if (!FindMatch()) {
      *pre_token = text_.substr(position_);
      position_ = text_.size();
      return true;
    }
    if (match_start_ > position_) {
      *pre_token = text_.substr(position_, match_start_ - position_);
      position_ = match_start_;
      have_pending_match_ = true;
      return true;
    }
  }
  have_pending_match_ = false;
  *pre_token = text_.substr(match_start_, match_end_ - match_start_);
  position_ = match_end_;
  return true;
}

}  // namespace reflect
