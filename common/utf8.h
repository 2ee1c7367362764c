// UTF-8 reading and writing helpers shared by the tokenizer, the streaming detokenizer and the
// chat template. Pure functions over bytes; no allocation except where a string is returned.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace reflect {

// One step of reading UTF-8 from the front of a byte string.
struct Utf8Character {
  enum class Kind {
    kValid,       // `length` bytes form `code_point`
    kIncomplete,  // all `length` bytes are a valid start of a character that needs more bytes
    kInvalid,     // `length` bytes are a maximal ill-formed subpart (Unicode §3.9, as Python)
  };
  Kind kind;
  char32_t code_point;  // meaningful for kValid only
  std::size_t length;   // >= 1
};

// Reads the character at the front of `bytes` (which must not be empty).
Utf8Character ReadUtf8Character(std::string_view bytes);

// Appends the UTF-8 encoding of `code_point` (a Unicode scalar value).
void AppendUtf8(char32_t code_point, std::string* out);

// `bytes` with every ill-formed subpart (including a truncated tail) replaced by U+FFFD, the
// same text Python's bytes.decode("utf-8", errors="replace") gives.
std::string ReplaceInvalidUtf8(std::string_view bytes);

}  // namespace reflect
