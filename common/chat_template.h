// The Llama 3.1 chat format, rendered natively (no Jinja), giving the same text as
// transformers' apply_chat_template with the model's tokenizer_config.json template.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace reflect {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// DESIGN §7: the reflection system prompt preset.
inline constexpr std::string_view kReflectionSystemPrompt =
    "You are a world-class AI system, capable of complex reasoning and reflection. Reason through "
    "the query inside <thinking> tags, and then provide your final response inside <output> tags. "
    "If you detect that you made a mistake in your reasoning at any point, correct yourself inside "
    "<reflection> tags.";

// "<|begin_of_text|>" + each message as a header block; with `add_generation_prompt`, the open
// assistant header. Encode the result with Tokenizer::Encode (specials are matched in text).
std::string RenderLlama31Chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace reflect
