// The GPT-2 "byte-level" alphabet: every byte 0..255 is spelled as one printable Unicode
// character, so vocabularies can be stored as JSON strings. tokenizer.json stores tokens and
// merges in this alphabet; the tokenizer works on raw bytes and converts once, at load.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace reflect {

// The raw bytes spelled by a byte-level string ("Ġhello" -> " hello"); an error when a
// character is outside the 256-character alphabet or the text is not valid UTF-8.
absl::StatusOr<std::string> ByteLevelToBytes(std::string_view byte_level_text);

}  // namespace reflect
