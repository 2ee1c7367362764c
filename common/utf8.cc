#include "common/utf8.h"

#include <cstdint>

namespace reflect {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// The allowed range of the second byte depends on the first (Unicode Table 3-7): this is what
// rules out overlong forms, surrogates and code points above U+10FFFF.
struct LeadByteRule {
  std::size_t length;
  uint8_t second_low;
  uint8_t second_high;
};

LeadByteRule RuleFor(uint8_t lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  return {0, 0, 0};
}

}  // namespace

Utf8Character ReadUtf8Character(std::string_view bytes) {
  using Kind = Utf8Character::Kind;
  const auto lead = static_cast<uint8_t>(bytes[0]);
  if (lead < 0x80) return {Kind::kValid, lead, 1};
  const LeadByteRule rule = RuleFor(lead);
  if (rule.length == 0) return {Kind::kInvalid, 0, 1};
  char32_t code_point = lead & (0xFF >> (rule.length + 1));
  for (std::size_t index = 1; index < rule.length; ++index) {
    if (index >= bytes.size()) return {Kind::kIncomplete, 0, index};
    const auto byte = static_cast<uint8_t>(bytes[index]);
    const uint8_t low = index == 1 ? rule.second_low : 0x80;
    const uint8_t high = index == 1 ? rule.second_high : 0xBF;
    if (byte < low || byte > high) return {Kind::kInvalid, 0, index};
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  return {Kind::kValid, code_point, rule.length};
}

void AppendUtf8(char32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

std::string ReplaceInvalidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    const Utf8Character character = ReadUtf8Character(bytes);
    if (character.kind == Utf8Character::Kind::kValid) {
      out.append(bytes.substr(0, character.length));
    } else {
      out.append(kReplacementCharacter);
    }
    bytes.remove_prefix(character.length);
  }
  return out;
}

}  // namespace reflect
