// The Llama 3.1 tokenizer against Hugging Face `tokenizers`: every fixture line must give the
// same ids (fixtures: tools/fixtures/make_tokenizer_fixtures.py), and decoding gives the text
// back byte for byte.
#include "common/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using ::reflect::testing::FixturePath;
using ::reflect::testing::TokenizerDirectory;

struct Encoding {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Encoding> ReadEncodings(const std::string& relative_path) {
  std::ifstream in(FixturePath(relative_path));
  EXPECT_TRUE(in.good()) << relative_path;
  std::vector<Encoding> encodings;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json row = nlohmann::json::parse(line);
    encodings.push_back(
        {row.at("text").get<std::string>(), row.at("ids").get<std::vector<int32_t>>()});
  }
  return encodings;
}

const Tokenizer& Llama31() {
  static const std::unique_ptr<Tokenizer> tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(TokenizerDirectory());
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? std::move(*loaded) : nullptr;
  }();
  return *tokenizer;
}

// `round_trips`: false where lstrip/rstrip tokens swallow white space, which decoding cannot
// bring back.
void ExpectSameAsHuggingFace(const Tokenizer& tokenizer, const std::string& fixture,
                             bool round_trips = true) {
  const std::vector<Encoding> encodings = ReadEncodings(fixture);
  ASSERT_FALSE(encodings.empty());
  for (std::size_t line = 0; line < encodings.size(); ++line) {
    const Encoding& expected = encodings[line];
    EXPECT_EQ(tokenizer.Encode(expected.text), expected.ids)
        << fixture << " line " << line + 1 << ": " << expected.text.substr(0, 200);
    if (round_trips) {
      EXPECT_EQ(tokenizer.Decode(expected.ids), expected.text) << fixture << " line " << line + 1;
    }
  }
}

TEST(TokenizerTest, MatchesReferenceEncodings) {
  ExpectSameAsHuggingFace(Llama31(), "tokenizer/reference-encodings.jsonl");
}

TEST(TokenizerTest, MatchesHuggingFaceOnMixedCorpus) {
  ExpectSameAsHuggingFace(Llama31(), "tokenizer/hf-encodings.jsonl");
}

TEST(TokenizerTest, AddedTokenFlagsMatchHuggingFace) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::Load(FixturePath("tokenizer/added-token-flags"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ExpectSameAsHuggingFace(**tokenizer, "tokenizer/added-token-flags/encodings.jsonl",
                          /*round_trips=*/false);
}

TEST(TokenizerTest, VocabularyLookups) {
  const Tokenizer& tokenizer = Llama31();
  EXPECT_EQ(tokenizer.vocab_size(), 128256);
  EXPECT_EQ(tokenizer.TokenId("<|begin_of_text|>"), 128000);
  EXPECT_EQ(tokenizer.TokenId("<|eot_id|>"), 128009);
  EXPECT_EQ(tokenizer.TokenId(" world"), 1917);
  EXPECT_EQ(tokenizer.TokenId("no such token at all"), std::nullopt);
  EXPECT_EQ(*tokenizer.TokenBytes(1917), " world");
  EXPECT_EQ(*tokenizer.TokenBytes(128009), "<|eot_id|>");
  EXPECT_EQ(tokenizer.TokenBytes(128256).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(tokenizer.TokenBytes(-1).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(TokenizerTest, EmptyTextHasNoTokens) { EXPECT_TRUE(Llama31().Encode("").empty()); }

TEST(TokenizerTest, InvalidUtf8RoundTripsThroughByteTokens) {
  const std::string text = "ok \xFF\xFE half \xE2\x82 end \xC0\xAF";
  EXPECT_EQ(Llama31().Decode(Llama31().Encode(text)), text);
}

TEST(TokenizerTest, HugeRunsRoundTrip) {
  for (const std::string& text :
       {std::string(1 << 20, ' '), std::string(200000, 'a'), std::string(100000, '\n'),
        std::string(300000, '7'), "x" + std::string(100000, '\t') + "y"}) {
    EXPECT_EQ(Llama31().Decode(Llama31().Encode(text)), text) << text.size();
  }
}

TEST(TokenizerTest, LoadReportsMissingAndMalformedFiles) {
  EXPECT_EQ(Tokenizer::Load("/nonexistent/model").status().code(), absl::StatusCode::kNotFound);
  const std::filesystem::path directory = testing::MakeTestDirectory("malformed-tokenizer");
  for (const std::string contents :
       {"{not json", R"({"model": {"type": "WordPiece"}})", R"({"model": {"type": "BPE",
        "vocab": {"a": 0}, "merges": []}})",
        R"({"model": 7})"}) {
    std::ofstream(directory / "tokenizer.json") << contents;
    const absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(directory);
    EXPECT_FALSE(loaded.ok()) << contents;
  }
}

TEST(StreamingDetokenizerTest, HoldsPartialCharactersUntilComplete) {
  const Tokenizer& tokenizer = Llama31();
  const std::string text =
      "Emoji 👨‍👩‍👧‍👦 and 日本語 and café 🧑🏽‍🚀!";
  StreamingDetokenizer detokenizer(tokenizer);
  std::string streamed;
  for (const int32_t id : tokenizer.Encode(text)) {
    const std::string delta = detokenizer.Push(id);
    // Each delta is whole characters by itself.
    EXPECT_EQ(tokenizer.Decode(tokenizer.Encode(delta)), delta);
    std::string_view rest = delta;
    while (!rest.empty()) {
      const unsigned char lead = rest[0];
      const std::size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
      ASSERT_LE(length, rest.size()) << "delta ends inside a character";
      rest.remove_prefix(length);
    }
    streamed += delta;
  }
  streamed += detokenizer.Flush();
  EXPECT_EQ(streamed, text);
}

TEST(StreamingDetokenizerTest, FlushReplacesLeftoverBytes) {
  const Tokenizer& tokenizer = Llama31();
  // Byte tokens: the first two bytes of "€" (E2 82 AC), then the end of the stream.
  const std::optional<int32_t> byte_e2 = tokenizer.TokenId("\xE2");
  const std::optional<int32_t> byte_82 = tokenizer.TokenId("\x82");
  ASSERT_TRUE(byte_e2.has_value() && byte_82.has_value());
  StreamingDetokenizer detokenizer(tokenizer);
  EXPECT_EQ(detokenizer.Push(*tokenizer.TokenId("a")), "a");
  EXPECT_EQ(detokenizer.Push(*byte_e2), "");
  EXPECT_EQ(detokenizer.Push(*byte_82), "");
  EXPECT_EQ(detokenizer.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(detokenizer.Flush(), "");
}

TEST(StreamingDetokenizerTest, SkipsSpecialTokensOnlyWhenAsked) {
  const Tokenizer& tokenizer = Llama31();
  const std::optional<int32_t> end_of_turn = tokenizer.TokenId("<|eot_id|>");
  ASSERT_EQ(end_of_turn, 128009);
  StreamingDetokenizer verbatim(tokenizer);
  EXPECT_EQ(verbatim.Push(*end_of_turn), "<|eot_id|>");
  StreamingDetokenizer skipping(tokenizer, /*skip_special_tokens=*/true);
  EXPECT_EQ(skipping.Push(*end_of_turn), "");
  // Ordinary text that looks like a tag's start is not special.
  std::string text;
  for (const int32_t id : tokenizer.Encode("a <|b|> c")) text += skipping.Push(id);
  EXPECT_EQ(text + skipping.Flush(), "a <|b|> c");
}

TEST(StreamingDetokenizerTest, DiscardDropsHeldBytes) {
  const Tokenizer& tokenizer = Llama31();
  StreamingDetokenizer detokenizer(tokenizer);
  EXPECT_FALSE(detokenizer.holds_bytes());
  EXPECT_EQ(detokenizer.Push(*tokenizer.TokenId("\xE2")), "");
  EXPECT_TRUE(detokenizer.holds_bytes());
  detokenizer.Discard();
  EXPECT_FALSE(detokenizer.holds_bytes());
  EXPECT_EQ(detokenizer.Flush(), "");
}

TEST(StreamingDetokenizerTest, ReplacesBytesThatCanNeverComplete) {
  const Tokenizer& tokenizer = Llama31();
  StreamingDetokenizer detokenizer(tokenizer);
  EXPECT_EQ(detokenizer.Push(*tokenizer.TokenId("\xE2")), "");
  // "a" cannot continue E2: the held byte is ill-formed, the "a" is whole.
  EXPECT_EQ(detokenizer.Push(*tokenizer.TokenId("a")),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(detokenizer.Push(999999), "");
  EXPECT_EQ(detokenizer.Flush(), "");
}

}  // namespace
}  // namespace reflect
