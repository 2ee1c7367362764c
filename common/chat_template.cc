#include "common/chat_template.h"

#include "common/utf8.h"

namespace reflect {
namespace {

// The characters Python's str.strip() removes (str.isspace): the template trims each message
// with Jinja's `trim` filter, which is str.strip().
bool IsPythonWhiteSpace(char32_t code_point) {
  switch (code_point) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x1C:
    case 0x1D:
    case 0x1E:
    case 0x1F:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return code_point >= 0x2000 && code_point <= 0x200A;
  }
}

std::string_view TrimPythonWhiteSpace(std::string_view text) {
  std::size_t first_kept = text.size();
  std::size_t end_kept = 0;
  std::size_t position = 0;
  while (position < text.size()) {
    const Utf8Character character = ReadUtf8Character(text.substr(position));
    // Ill-formed bytes are not white space: they are kept, like any other character.
    const bool white_space =
        character.kind == Utf8Character::Kind::kValid && IsPythonWhiteSpace(character.code_point);
    if (!white_space) {
      if (first_kept == text.size()) first_kept = position;
      end_kept = position + character.length;
    }
    position += character.length;
  }
  if (first_kept == text.size()) return {};
  return text.substr(first_kept, end_kept - first_kept);
}

}  // namespace

// Mirrors the Jinja template of third_party/llama-3.1-tokenizer/tokenizer_config.json:
//   for each message: '<|start_header_id|>' + role + '<|end_header_id|>\n\n'
//                     + content | trim + '<|eot_id|>', with bos_token before the first one;
//   then, with add_generation_prompt, the open assistant header.
// This template injects no default system message (no "Cutting Knowledge Date" block).
std::string RenderLlama31Chat(const std::vector<ChatMessage>& messages,
                              bool add_generation_prompt) {
  std::string text;
  for (std::size_t index = 0; index < messages.size(); ++index) {
    if (index == 0) text += "<|begin_of_text|>";
    text += "<|start_header_id|>";
    text += messages[index].role;
    text += "<|end_header_id|>\n\n";
    text += TrimPythonWhiteSpace(messages[index].content);
    text += "<|eot_id|>";
  }
  if (add_generation_prompt) text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return text;
}

}  // namespace reflect
