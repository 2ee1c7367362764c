// `reflect tokenize` run as a real process: encodes and decodes the Hugging Face fixture corpus
// line for line, and rejects bad lines with their line number and a non-zero exit.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using ::reflect::testing::FixturePath;
using ::reflect::testing::TokenizerDirectory;

struct TokenizeResult {
  int exit_code;
  std::vector<std::string> stdout_lines;
  std::string stderr_text;
};

// Runs `reflect tokenize --model <tokenizer dir> [flag]` with `input` on stdin.
TokenizeResult RunTokenize(const std::string& flag, const std::string& input) {
  std::vector<std::string> arguments{"--model", TokenizerDirectory().string()};
  if (!flag.empty()) arguments.push_back(flag);
  const testing::ProcessResult process = testing::RunReflect("tokenize", arguments, input);
  TokenizeResult result{process.exit_code, {}, process.standard_error};
  std::istringstream out(process.standard_output);
  for (std::string line; std::getline(out, line);) result.stdout_lines.push_back(line);
  return result;
}

std::vector<nlohmann::json> FixtureRows() {
  std::ifstream in(FixturePath("tokenizer/hf-encodings.jsonl"));
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

TEST(TokenizeCliTest, EncodesLikeHuggingFace) {
  const std::vector<nlohmann::json> rows = FixtureRows();
  ASSERT_FALSE(rows.empty());
  std::string input;
  for (const nlohmann::json& row : rows) input += row.at("text").dump() + "\n";
  const TokenizeResult result = RunTokenize("", input);
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  ASSERT_EQ(result.stdout_lines.size(), rows.size());
  for (std::size_t line = 0; line < rows.size(); ++line) {
    EXPECT_EQ(nlohmann::json::parse(result.stdout_lines[line]), rows[line].at("ids"))
        << "line " << line + 1;
  }
}

TEST(TokenizeCliTest, DecodesBackToTheText) {
  const std::vector<nlohmann::json> rows = FixtureRows();
  std::string input;
  for (const nlohmann::json& row : rows) input += row.at("ids").dump() + "\n";
  const TokenizeResult result = RunTokenize("--decode", input);
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  ASSERT_EQ(result.stdout_lines.size(), rows.size());
  for (std::size_t line = 0; line < rows.size(); ++line) {
    EXPECT_EQ(nlohmann::json::parse(result.stdout_lines[line]), rows[line].at("text"))
        << "line " << line + 1;
  }
}

TEST(TokenizeCliTest, BadLinesNameTheirLineNumber) {
  struct Case {
    std::string flags;
    std::string input;
    std::string expected_error;
  };
  for (const Case& bad : std::vector<Case>{
           {"", "\"fine\"\n\"also fine\"\n{\"not\": \"a string\"}\n",
            "line 3: expected a JSON string"},
           {"", "\"fine\"\n\"unterminated\n", "line 2: not valid JSON"},
           {"", "\n", "line 1: not valid JSON"},
           {"--decode", "[9906, 11]\n[1, 128256]\n",
            "line 2: element 1 (128256) is not a token id"},
           {"--decode", "[-5]\n", "line 1: element 0 (-5)"},
           {"--decode", "[1.5]\n", "line 1: element 0 (1.5)"},
           {"--decode", "\"text\"\n", "line 1: expected a JSON array"},
       }) {
    const TokenizeResult result = RunTokenize(bad.flags, bad.input);
    EXPECT_EQ(result.exit_code, 1) << bad.input;
    EXPECT_NE(result.stderr_text.find(bad.expected_error), std::string::npos)
        << "stderr: " << result.stderr_text;
  }
}

TEST(TokenizeCliTest, DecodeOfPartialCharacterGivesReplacementCharacter) {
  // 226 is the byte-level token of byte E2 alone: the start of a three-byte character.
  const TokenizeResult result = RunTokenize("--decode", "[9906, 226]\n");
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  ASSERT_EQ(result.stdout_lines.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(result.stdout_lines[0]), "Hello\xEF\xBF\xBD");
}

}  // namespace
}  // namespace reflect
