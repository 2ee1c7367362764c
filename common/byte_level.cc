#include "common/byte_level.h"

#include <array>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/utf8.h"

namespace reflect {
namespace {

// Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, and a few
// Latin-1 gaps) take code points 256, 257, ... in byte order, exactly as GPT-2's bytes_to_unicode.
constexpr bool StandsForItself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
         (byte >= 0xAE && byte <= 0xFF);
}

// Index: code point (< 324). Value: the byte, or -1 for code points outside the alphabet.
constexpr std::size_t kAlphabetLimit = 256 + 68;
constexpr std::array<int16_t, kAlphabetLimit> MakeCodePointToByte() {
  std::array<int16_t, kAlphabetLimit> table{};
  for (auto& entry : table) entry = -1;
  int next_code_point = 256;
  for (int byte = 0; byte < 256; ++byte) {
    if (StandsForItself(byte)) {
      table[byte] = static_cast<int16_t>(byte);
    } else {
      table[next_code_point++] = static_cast<int16_t>(byte);
    }
  }
  return table;
}
constexpr std::array<int16_t, kAlphabetLimit> kCodePointToByte = MakeCodePointToByte();

}  // namespace

absl::StatusOr<std::string> ByteLevelToBytes(std::string_view byte_level_text) {
  std::string bytes;
  bytes.reserve(byte_level_text.size());
  std::string_view rest = byte_level_text;
  while (!rest.empty()) {
    const Utf8Character character = ReadUtf8Character(rest);
    if (character.kind != Utf8Character::Kind::kValid) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte-level token is not valid UTF-8: ", std::string(byte_level_text)));
    }
    if (character.code_point >= kAlphabetLimit || kCodePointToByte[character.code_point] < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "character U+%04X of token '%s' is not in the byte-level alphabet",
          static_cast<uint32_t>(character.code_point), std::string(byte_level_text)));
    }
    bytes.push_back(static_cast<char>(kCodePointToByte[character.code_point]));
    rest.remove_prefix(character.length);
  }
  return bytes;
}

}  // namespace reflect
