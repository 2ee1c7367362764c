// RenderLlama31Chat against transformers' apply_chat_template with the template shipped in
// third_party/llama-3.1-tokenizer/tokenizer_config.json (fixtures from
// tools/fixtures/make_tokenizer_fixtures.py): same text, and the same ids once encoded.
#include "common/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using ::reflect::testing::FixturePath;
using ::reflect::testing::TokenizerDirectory;

TEST(ChatTemplateTest, MatchesTransformers) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(TokenizerDirectory());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::ifstream in(FixturePath("tokenizer/chat-template.jsonl"));
  ASSERT_TRUE(in.good());
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const nlohmann::json row = nlohmann::json::parse(line);
    std::vector<ChatMessage> messages;
    for (const nlohmann::json& message : row.at("messages")) {
      messages.push_back(
          {message.at("role").get<std::string>(), message.at("content").get<std::string>()});
    }
    const std::string text =
        RenderLlama31Chat(messages, row.at("add_generation_prompt").get<bool>());
    EXPECT_EQ(text, row.at("text").get<std::string>()) << "line " << line_number;
    EXPECT_EQ((*tokenizer)->Encode(text), row.at("ids").get<std::vector<int32_t>>())
        << "line " << line_number;
  }
  EXPECT_GE(line_number, 20);
}

TEST(ChatTemplateTest, ReflectionPresetConversation) {
  const std::string text =
      RenderLlama31Chat({{"system", std::string(kReflectionSystemPrompt)}, {"user", "2+2?"}}, true);
  EXPECT_EQ(text, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
                      std::string(kReflectionSystemPrompt) +
                      "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, TrimsPythonWhiteSpaceOnly) {
  // U+200B (zero width space) is not white space to Python; U+3000 and U+0085 are.
  const std::string text =
      RenderLlama31Chat({{"user", "\xE3\x80\x80\xC2\x85 hi \xE2\x80\x8B \t\n"}}, false);
  EXPECT_EQ(text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi "
            "\xE2\x80\x8B<|eot_id|>");
}

}  // namespace
}  // namespace reflect
