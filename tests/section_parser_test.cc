#include "router/section_parser.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace reflect {
namespace {

// A long trace with every construct: text before any tag, nested and top-level reflections, a
// "</thinking>" inside a reflection, tag-like text that is no tag, text after "</output>".
const std::string kTrace =
    "Sure.\n<thinking>\nLet me think: 2 < 3, and <b>bold</b> is HTML; <Thinking> is not a tag, "
    "nor is <thinking> inside thinking.\n<reflection>\nWait, I was wrong: 2 + 2 = 4.\n"
    "</reflection>\nSo the answer is 4 </output>.\n<reflection>Check once more</thinking>"
    "<reflection> again</reflection>\n<output>\nThe answer is 4. <thinking>no</thinking> "
    "<output></output>\nBye <<reflection>late</reflection> <outp";

// Pieces with adjacent same-section pieces merged, so runs with different pushes compare equal.
std::vector<SectionPiece> Merge(const std::vector<SectionPiece>& pieces) {
  std::vector<SectionPiece> merged;
  for (const SectionPiece& piece : pieces) {
    EXPECT_FALSE(piece.text.empty());
    if (!merged.empty() && merged.back().section == piece.section) {
      merged.back().text += piece.text;
    } else {
      merged.push_back(piece);
    }
  }
  return merged;
}

struct RunResult {
  std::vector<SectionPiece> pieces;
  SectionCounts counts;
};

RunResult Parse(const std::vector<std::string>& tokens, SectionParserOptions options = {}) {
  SectionParser parser(options);
  std::vector<SectionPiece> all;
  for (const std::string& token : tokens) {
    for (SectionPiece& piece : parser.PushToken(token)) all.push_back(std::move(piece));
  }
  for (SectionPiece& piece : parser.Finish()) all.push_back(std::move(piece));
  return {Merge(all), parser.counts()};
}

std::vector<std::string> RandomChunks(const std::string& text, uint32_t seed, size_t max_chunk) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<size_t> length(0, max_chunk);
  std::vector<std::string> chunks;
  for (size_t position = 0; position < text.size();) {
    const size_t size = std::min(length(random), text.size() - position);
    chunks.push_back(text.substr(position, size));  // empty chunks too: empty tokens
    position += size;
  }
  return chunks;
}

std::string Concatenate(const std::vector<SectionPiece>& pieces) {
  std::string text;
  for (const SectionPiece& piece : pieces) text += piece.text;
  return text;
}

TEST(SectionParserTest, LabelsTheSampleTrace) {
  const RunResult result = Parse({kTrace});
  const std::vector<SectionPiece> expected = {
      {Section::kOutput, "Sure.\n"},
      {Section::kThinking,
       "\nLet me think: 2 < 3, and <b>bold</b> is HTML; <Thinking> is not a tag, nor is "
       "<thinking> inside thinking.\n"},
      {Section::kReflection, "\nWait, I was wrong: 2 + 2 = 4.\n"},
      {Section::kThinking, "\nSo the answer is 4 </output>.\n"},
      {Section::kReflection, "Check once more"},
      {Section::kReflection, " again"},
      {Section::kOutput, "\n\nThe answer is 4. <thinking>no</thinking> <output>\nBye <"},
      {Section::kReflection, "late"},
      {Section::kOutput, " <outp"},
  };
  // The two reflections after "Check once more" are separate sections, merged by Merge.
  EXPECT_EQ(result.pieces, Merge(expected));
  EXPECT_EQ(result.counts.reflections, 4);
}

TEST(SectionParserTest, KeepTagsReproducesTheTextExactly) {
  const RunResult result = Parse({kTrace}, SectionParserOptions{.keep_tags = true});
  EXPECT_EQ(Concatenate(result.pieces), kTrace);
  EXPECT_EQ(result.pieces.front(), (SectionPiece{Section::kOutput, "Sure.\n"}));
  EXPECT_EQ(result.pieces[1].text.substr(0, 10), "<thinking>");
  EXPECT_EQ(result.pieces[1].section, Section::kThinking);
}

TEST(SectionParserTest, EveryTwoWaySplitMatchesTheUnsplitRun) {
  for (const bool keep_tags : {false, true}) {
    const SectionParserOptions options{.keep_tags = keep_tags};
    const RunResult whole = Parse({kTrace}, options);
    for (size_t split = 0; split <= kTrace.size(); ++split) {
      const RunResult halves = Parse({kTrace.substr(0, split), kTrace.substr(split)}, options);
      ASSERT_EQ(halves.pieces, whole.pieces) << "split at byte " << split;
      ASSERT_EQ(halves.counts.reflections, whole.counts.reflections);
    }
  }
}

TEST(SectionParserTest, EveryRandomChunkingMatchesTheUnsplitRun) {
  for (const bool keep_tags : {false, true}) {
    const SectionParserOptions options{.keep_tags = keep_tags};
    const RunResult whole = Parse({kTrace}, options);
    for (uint32_t seed = 1; seed <= 300; ++seed) {
      const std::vector<std::string> chunks = RandomChunks(kTrace, seed, 1 + seed % 16);
      const RunResult chunked = Parse(chunks, options);
      ASSERT_EQ(chunked.pieces, whole.pieces) << "seed " << seed;
      const SectionCounts& counts = chunked.counts;
      EXPECT_EQ(counts.thinking_tokens + counts.reflection_tokens + counts.output_tokens,
                static_cast<int64_t>(chunks.size()));
    }
  }
}

TEST(SectionParserTest, TextBeforeAnyTagAndAfterOutputIsOutput) {
  EXPECT_EQ(Parse({"plain answer"}).pieces,
            (std::vector<SectionPiece>{{Section::kOutput, "plain answer"}}));
  EXPECT_EQ(Parse({"<output>a</output> b"}).pieces,
            (std::vector<SectionPiece>{{Section::kOutput, "a b"}}));
}

TEST(SectionParserTest, NestedReflectionReturnsToThinking) {
  const RunResult result =
      Parse({"<thinking>", "a", "<reflection>", "b", "</reflection>", "c", "<reflection>", "d",
             "</reflection>", "</thinking>", "<output>", "e", "</output>"});
  EXPECT_EQ(result.pieces, (std::vector<SectionPiece>{{Section::kThinking, "a"},
                                                      {Section::kReflection, "b"},
                                                      {Section::kThinking, "c"},
                                                      {Section::kReflection, "d"},
                                                      {Section::kOutput, "e"}}));
  EXPECT_EQ(result.counts.reflections, 2);
  EXPECT_EQ(result.counts.thinking_tokens, 4);    // <thinking> a c </thinking>
  EXPECT_EQ(result.counts.reflection_tokens, 6);  // both reflections, tags included
  EXPECT_EQ(result.counts.output_tokens, 3);
}

TEST(SectionParserTest, MalformedTagsAreText) {
  EXPECT_EQ(Parse({"<THINKING>x</reflection><thinking >"}).pieces,
            (std::vector<SectionPiece>{{Section::kOutput, "<THINKING>x</reflection><thinking >"}}));
  EXPECT_EQ(Parse({"<thinking><thinking></output>"}).pieces,
            (std::vector<SectionPiece>{{Section::kThinking, "<thinking></output>"}}));
}

TEST(SectionParserTest, HoldsBackOnlyAPossibleTagPrefix) {
  SectionParser parser;
  EXPECT_EQ(parser.PushToken("abc<thi"), (std::vector<SectionPiece>{{Section::kOutput, "abc"}}));
  EXPECT_EQ(parser.PushToken("x"), (std::vector<SectionPiece>{{Section::kOutput, "<thix"}}));
  EXPECT_EQ(parser.PushToken("a <b"), (std::vector<SectionPiece>{{Section::kOutput, "a <b"}}));
  EXPECT_EQ(parser.PushToken("<"), (std::vector<SectionPiece>{}));
  EXPECT_EQ(parser.PushToken("<"), (std::vector<SectionPiece>{{Section::kOutput, "<"}}));
  // Inside output only "</output>" is a tag, so "<thi" is text at once.
  EXPECT_EQ(parser.PushToken("output>y <thi"),
            (std::vector<SectionPiece>{{Section::kOutput, "y <thi"}}));
  EXPECT_EQ(parser.PushToken("</out"), (std::vector<SectionPiece>{}));
  EXPECT_EQ(parser.Finish(), (std::vector<SectionPiece>{{Section::kOutput, "</out"}}));
}

TEST(SectionParserTest, TokensCountInTheSectionOfTheirLastByte) {
  SectionParser parser;
  parser.PushToken("<");
  parser.PushToken("thinking");
  EXPECT_EQ(parser.counts().output_tokens, 0);  // both pending: they may still be a tag
  parser.PushToken(">");
  EXPECT_EQ(parser.counts().thinking_tokens, 3);
  parser.PushToken("Hi");
  parser.PushToken("</");
  parser.PushToken("thinking");
  parser.PushToken(">\n");  // last byte "\n" lies outside every tag
  parser.PushToken("<output>");
  parser.PushToken("");  // empty text: counts where the stream stands
  parser.PushToken("Yes");
  parser.PushToken("</output>");
  parser.Finish();
  EXPECT_EQ(parser.counts().thinking_tokens, 6);
  EXPECT_EQ(parser.counts().reflection_tokens, 0);
  EXPECT_EQ(parser.counts().output_tokens, 5);
}

TEST(SectionParserTest, EmptyTokensArePendingWhileBytesAreHeld) {
  SectionParser parser;
  parser.PushToken("");
  EXPECT_EQ(parser.counts().output_tokens, 1);  // before any byte: output
  parser.PushToken("<reflec");
  parser.PushToken("");
  EXPECT_EQ(parser.counts().output_tokens, 1);
  parser.PushToken("tion>");
  EXPECT_EQ(parser.counts().reflection_tokens, 3);
  EXPECT_EQ(parser.current_section(), Section::kReflection);
}

TEST(SectionParserTest, ThinkingBudgetForcesOutput) {
  SectionParser parser;
  parser.PushToken("<thinking>");
  parser.PushToken("a");
  EXPECT_FALSE(parser.ThinkingBudgetExhausted(4));
  parser.PushToken("<reflection>");
  EXPECT_FALSE(parser.ThinkingBudgetExhausted(4));
  parser.PushToken("b");
  EXPECT_TRUE(parser.ThinkingBudgetExhausted(4));
  EXPECT_FALSE(parser.ThinkingBudgetExhausted(0));  // 0: no budget
  const std::vector<SectionPiece> pieces = parser.PushToken(kThinkingBudgetCloseText);
  EXPECT_EQ(pieces, (std::vector<SectionPiece>{{Section::kOutput, "\n"}}));
  EXPECT_EQ(parser.current_section(), Section::kOutput);
  EXPECT_FALSE(parser.ThinkingBudgetExhausted(4));
  EXPECT_EQ(parser.PushToken("answer"), (std::vector<SectionPiece>{{Section::kOutput, "answer"}}));
}

TEST(SectionParserTest, SectionNames) {
  EXPECT_EQ(SectionName(Section::kThinking), "thinking");
  EXPECT_EQ(SectionName(Section::kReflection), "reflection");
  EXPECT_EQ(SectionName(Section::kOutput), "output");
}

}  // namespace
}  // namespace reflect
