#include "router/generation_pipeline.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/tokenizer.h"
#include "common/utf8.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

// The Llama 3.1 tokenizer, loaded once for every test of this file.
const Tokenizer& TheTokenizer() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded =
        Tokenizer::Load(testing::TokenizerDirectory());
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *tokenizer;
}

// The token of each single byte (byte-level BPE has all 256), to split text anywhere, even
// inside a UTF-8 character or a tag.
int32_t ByteToken(uint8_t byte) {
  static const std::map<uint8_t, int32_t> tokens = [] {
    std::map<uint8_t, int32_t> found;
    const Tokenizer& tokenizer = TheTokenizer();
    for (int32_t id = 0; id < tokenizer.vocab_size() && found.size() < 256; ++id) {
      const absl::StatusOr<std::string> bytes = tokenizer.TokenBytes(id);
      if (bytes.ok() && bytes->size() == 1) {
        found.try_emplace(static_cast<uint8_t>((*bytes)[0]), id);
      }
    }
    return found;
  }();
  return tokens.at(byte);
}

std::vector<int32_t> ByteTokens(std::string_view text) {
  std::vector<int32_t> ids;
  for (const char character : text) ids.push_back(ByteToken(static_cast<uint8_t>(character)));
  return ids;
}

std::vector<int32_t> Encode(std::string_view text) { return TheTokenizer().Encode(text); }

std::vector<int32_t> Concat(std::vector<std::vector<int32_t>> parts) {
  std::vector<int32_t> all;
  for (const std::vector<int32_t>& part : parts) all.insert(all.end(), part.begin(), part.end());
  return all;
}

// How many of `ids` it takes for their text to reach `bytes` bytes.
int64_t TokensCovering(const std::vector<int32_t>& ids, size_t bytes) {
  size_t length = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    length += TheTokenizer().TokenBytes(ids[i])->size();
    if (length >= bytes) return static_cast<int64_t>(i + 1);
  }
  return static_cast<int64_t>(ids.size());
}

std::vector<ReplicaToken> ToReplicaTokens(const std::vector<int32_t>& ids, int64_t first_index) {
  std::vector<ReplicaToken> tokens;
  for (size_t i = 0; i < ids.size(); ++i) {
    ReplicaToken token;
    token.index = first_index + static_cast<int64_t>(i);
    token.token_id = ids[i];
    token.logprob = -0.5f - static_cast<float>(i);
    token.top = {{ids[i], token.logprob}};
    tokens.push_back(token);
  }
  return tokens;
}

// Everything a run produced, pieces of a section concatenated.
struct RunResult {
  std::vector<OutputPiece> pieces;
  std::string all_text;
  std::map<Section, std::string> text_by_section;
  std::vector<int32_t> token_ids;  // in the pieces, in order
  std::map<Section, int64_t> ids_by_section;
  SectionCounts counts;
  int64_t completion_tokens = 0;
  bool stopped = false;
  std::string matched_stop;
};

std::string TextOf(const RunResult& result, Section section) {
  const auto found = result.text_by_section.find(section);
  return found == result.text_by_section.end() ? std::string() : found->second;
}

void Collect(std::vector<OutputPiece> pieces, RunResult& result) {
  for (OutputPiece& piece : pieces) {
    EXPECT_EQ(ReplaceInvalidUtf8(piece.text), piece.text) << "broken UTF-8 in a piece";
    result.all_text += piece.text;
    result.text_by_section[piece.section] += piece.text;
    result.token_ids.insert(result.token_ids.end(), piece.token_ids.begin(), piece.token_ids.end());
    result.ids_by_section[piece.section] += static_cast<int64_t>(piece.token_ids.size());
    result.pieces.push_back(std::move(piece));
  }
}

// Feeds `ids` in chunks of the given sizes (the last chunk takes the rest), then Finish.
RunResult RunPipeline(const std::vector<int32_t>& ids, GenerationPipelineOptions options,
                      const std::vector<size_t>& chunk_sizes = {}) {
  GenerationPipeline pipeline(TheTokenizer(), std::move(options));
  RunResult result;
  const std::vector<ReplicaToken> tokens = ToReplicaTokens(ids, 0);
  size_t position = 0;
  for (size_t chunk = 0; position < tokens.size(); ++chunk) {
    const size_t size = chunk < chunk_sizes.size() ? chunk_sizes[chunk] : tokens.size() - position;
    const size_t end = std::min(tokens.size(), position + size);
    Collect(pipeline.PushTokens(
                std::vector<ReplicaToken>(tokens.begin() + position, tokens.begin() + end)),
            result);
    position = end;
  }
  Collect(pipeline.Finish(), result);
  result.counts = pipeline.section_counts();
  result.completion_tokens = pipeline.completion_tokens();
  result.stopped = pipeline.stopped_by_string();
  result.matched_stop = pipeline.matched_stop();
  return result;
}

int64_t SectionSum(const SectionCounts& counts) {
  return counts.thinking_tokens + counts.reflection_tokens + counts.output_tokens;
}

// The ids in the pieces of each section are the tokens counted in it.
void ExpectIdsMatchCounts(const RunResult& result, TraceMode mode) {
  const auto ids = [&](Section section) {
    const auto found = result.ids_by_section.find(section);
    return found == result.ids_by_section.end() ? int64_t{0} : found->second;
  };
  EXPECT_EQ(ids(Section::kOutput), result.counts.output_tokens);
  const bool all = mode != TraceMode::kOutputOnly;
  EXPECT_EQ(ids(Section::kThinking), all ? result.counts.thinking_tokens : 0);
  EXPECT_EQ(ids(Section::kReflection), all ? result.counts.reflection_tokens : 0);
}

const std::string kTrace =
    "<thinking>Let me see: 2 + 2.<reflection>Is it 5? No, 4.</reflection> Yes, 4.</thinking>\n"
    "<output>The answer is 4 — naïve € 😀.</output>";

TEST(GenerationPipelineTest, SectionsFromWholeTokensAndFromSingleBytes) {
  for (const std::vector<int32_t>& ids : {Encode(kTrace), ByteTokens(kTrace)}) {
    const RunResult result = RunPipeline(ids, {});
    EXPECT_EQ(TextOf(result, Section::kThinking), "Let me see: 2 + 2. Yes, 4.");
    EXPECT_EQ(TextOf(result, Section::kReflection), "Is it 5? No, 4.");
    EXPECT_EQ(TextOf(result, Section::kOutput), "\nThe answer is 4 — naïve € 😀.");
    EXPECT_EQ(result.completion_tokens, static_cast<int64_t>(ids.size()));
    EXPECT_EQ(SectionSum(result.counts), result.completion_tokens);
    EXPECT_EQ(result.counts.reflections, 1);
    EXPECT_EQ(result.token_ids, ids);  // kFull keeps every id, in order
    EXPECT_FALSE(result.stopped);
  }
}

TEST(GenerationPipelineTest, ByteTokensCountInTheSectionOfTheirLastByte) {
  // "<output>" is 8 byte tokens counted in output, "</thinking>" 11 counted in thinking.
  const RunResult result = RunPipeline(ByteTokens("<thinking>ab</thinking><output>cd"), {});
  EXPECT_EQ(result.counts.thinking_tokens, 10 + 2 + 11);
  EXPECT_EQ(result.counts.output_tokens, 8 + 2);
  EXPECT_EQ(result.counts.reflection_tokens, 0);
}

TEST(GenerationPipelineTest, StopStringSplitAcrossTokensEndsBeforeIt) {
  for (const std::vector<int32_t>& ids :
       {Concat({Encode("Hello wor"), Encode("ld! and more text")}),
        ByteTokens("Hello world! and more text")}) {
    GenerationPipelineOptions options;
    options.stop_strings = {"xyz", "world"};
    GenerationPipeline pipeline(TheTokenizer(), options);
    RunResult result;
    const std::vector<ReplicaToken> tokens = ToReplicaTokens(ids, 0);
    for (const ReplicaToken& token : tokens) Collect(pipeline.PushTokens({token}), result);
    Collect(pipeline.Finish(), result);  // no effect after a stop
    EXPECT_TRUE(pipeline.stopped_by_string());
    EXPECT_EQ(pipeline.matched_stop(), "world");
    EXPECT_EQ(result.all_text, "Hello ");
    // Tokens up to the one that completed "world" are accepted, none after.
    EXPECT_EQ(pipeline.completion_tokens(), TokensCovering(ids, std::string("Hello world").size()));
    EXPECT_EQ(SectionSum(pipeline.section_counts()), pipeline.completion_tokens());
    EXPECT_EQ(static_cast<int64_t>(result.token_ids.size()), pipeline.completion_tokens());
  }
}

TEST(GenerationPipelineTest, HeldStopPrefixIsTextAfterAll) {
  GenerationPipelineOptions options;
  options.stop_strings = {"world"};
  const RunResult result = RunPipeline(Encode("Hello wor"), options);
  EXPECT_FALSE(result.stopped);
  EXPECT_EQ(result.all_text, "Hello wor");
  EXPECT_EQ(SectionSum(result.counts), result.completion_tokens);
}

TEST(GenerationPipelineTest, StopStringInsideThinkingEndsTheRequest) {
  GenerationPipelineOptions options;
  options.stop_strings = {"STOP"};
  const RunResult result = RunPipeline(ByteTokens("<thinking>abc STOP def</thinking>"), options);
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(TextOf(result, Section::kThinking), "abc ");
  EXPECT_EQ(result.completion_tokens, 18);  // through the 'P'
  EXPECT_EQ(SectionSum(result.counts), 18);
}

TEST(GenerationPipelineTest, MultiByteCharactersSplitAcrossTokensStayWhole) {
  const std::string text = "é€😀 ü 中文 🎉";
  GenerationPipeline pipeline(TheTokenizer(), {});
  RunResult result;
  for (const ReplicaToken& token : ToReplicaTokens(ByteTokens(text), 0)) {
    std::vector<OutputPiece> pieces = pipeline.PushTokens({token});
    Collect(pieces, result);  // checks each piece is whole UTF-8
  }
  Collect(pipeline.Finish(), result);
  EXPECT_EQ(result.all_text, text);
  EXPECT_EQ(SectionSum(pipeline.section_counts()), pipeline.completion_tokens());
}

TEST(GenerationPipelineTest, TruncatedCharacterAtTheEndBecomesReplacement) {
  const std::string euro = "€";
  const RunResult result = RunPipeline(ByteTokens("ok " + euro.substr(0, 2)), {});
  EXPECT_EQ(result.all_text, "ok \xEF\xBF\xBD");
  EXPECT_EQ(result.completion_tokens, 5);
  EXPECT_EQ(SectionSum(result.counts), 5);
  EXPECT_EQ(result.token_ids.size(), 5u);
}

TEST(GenerationPipelineTest, TraceModes) {
  const std::vector<int32_t> ids = Encode(kTrace);

  const RunResult full = RunPipeline(ids, {});
  EXPECT_EQ(full.all_text.find('<'), std::string::npos);

  GenerationPipelineOptions verbatim_options;
  verbatim_options.trace_mode = TraceMode::kVerbatim;
  const RunResult verbatim = RunPipeline(ids, verbatim_options);
  EXPECT_EQ(verbatim.all_text, kTrace);
  EXPECT_EQ(TextOf(verbatim, Section::kReflection), "<reflection>Is it 5? No, 4.</reflection>");
  EXPECT_EQ(verbatim.counts.output_tokens, full.counts.output_tokens);
  EXPECT_EQ(verbatim.token_ids, ids);

  GenerationPipelineOptions output_only_options;
  output_only_options.trace_mode = TraceMode::kOutputOnly;
  const RunResult output_only = RunPipeline(ids, output_only_options);
  EXPECT_EQ(output_only.all_text, "\nThe answer is 4 — naïve € 😀.");
  for (const OutputPiece& piece : output_only.pieces) EXPECT_EQ(piece.section, Section::kOutput);
  // Every token still counts; only the output tokens' ids are in the pieces.
  EXPECT_EQ(output_only.completion_tokens, static_cast<int64_t>(ids.size()));
  EXPECT_EQ(output_only.counts.thinking_tokens, full.counts.thinking_tokens);
  EXPECT_EQ(output_only.counts.reflection_tokens, full.counts.reflection_tokens);
  EXPECT_EQ(static_cast<int64_t>(output_only.token_ids.size()), full.counts.output_tokens);
  ExpectIdsMatchCounts(full, TraceMode::kFull);
  ExpectIdsMatchCounts(verbatim, TraceMode::kVerbatim);
  ExpectIdsMatchCounts(output_only, TraceMode::kOutputOnly);
}

TEST(GenerationPipelineTest, SpecialTokensCountButRenderAsNothing) {
  const std::optional<int32_t> eot = TheTokenizer().TokenId("<|eot_id|>");
  ASSERT_TRUE(eot.has_value());
  const RunResult result = RunPipeline(Concat({Encode("Hi there"), {*eot}}), {});
  EXPECT_EQ(result.all_text, "Hi there");
  EXPECT_EQ(result.completion_tokens, static_cast<int64_t>(Encode("Hi there").size()) + 1);
  EXPECT_EQ(result.counts.output_tokens, result.completion_tokens);
  EXPECT_EQ(result.token_ids.back(), *eot);
}

TEST(GenerationPipelineTest, LogprobsFollowTheirTokens) {
  GenerationPipelineOptions options;
  options.logprobs = true;
  const std::vector<int32_t> ids = Encode("<thinking>a b</thinking>c d");
  const RunResult result = RunPipeline(ids, options);
  std::vector<TokenLogprobs> logprobs;
  for (const OutputPiece& piece : result.pieces) {
    ASSERT_EQ(piece.logprobs.size(), piece.token_ids.size());
    logprobs.insert(logprobs.end(), piece.logprobs.begin(), piece.logprobs.end());
  }
  ASSERT_EQ(logprobs.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(logprobs[i].token_id, ids[i]);
    EXPECT_FLOAT_EQ(logprobs[i].logprob, -0.5f - static_cast<float>(i));
    ASSERT_EQ(logprobs[i].top.size(), 1u);
  }

  const RunResult without = RunPipeline(ids, {});
  for (const OutputPiece& piece : without.pieces) EXPECT_TRUE(piece.logprobs.empty());
}

TEST(GenerationPipelineTest, ThinkingBudgetForcesTheCloseTextOnce) {
  // The "<thinking>" tag's tokens count as thinking, then one byte token per letter: the budget
  // is hit after the fourth letter; the tokens after it in the same push are ignored.
  const int64_t budget = static_cast<int64_t>(Encode("<thinking>").size()) + 4;
  GenerationPipelineOptions options;
  options.thinking_budget_tokens = budget;
  GenerationPipeline pipeline(TheTokenizer(), options);
  RunResult result;
  const std::vector<int32_t> thinking = Concat({Encode("<thinking>"), ByteTokens("abcdefgh")});
  Collect(pipeline.PushTokens(ToReplicaTokens(thinking, 0)), result);
  EXPECT_TRUE(pipeline.thinking_budget_exhausted());
  const std::optional<ForcedTokens> forced = pipeline.TakeForcedTokens();
  ASSERT_TRUE(forced.has_value());
  EXPECT_FALSE(pipeline.TakeForcedTokens().has_value());  // once
  EXPECT_EQ(forced->token_ids, Encode(kThinkingBudgetCloseText));
  EXPECT_EQ(forced->at_index, pipeline.completion_tokens());
  EXPECT_EQ(pipeline.section_counts().thinking_tokens, budget);
  const int64_t at = forced->at_index;

  // The replica keeps streaming what it sampled before it saw the force: ignored.
  Collect(pipeline.PushTokens(ToReplicaTokens(ByteTokens("zzzz"), at)), result);
  Collect(pipeline.PushTokens(ToReplicaTokens(ByteTokens("yy"), at + 4)), result);
  EXPECT_EQ(pipeline.completion_tokens(), at);

  // The rewound stream: the forced tokens, then sampling resumes after them.
  const std::vector<int32_t> after = Concat({forced->token_ids, Encode("Answer.</output>")});
  Collect(pipeline.PushTokens(ToReplicaTokens(after, at)), result);
  Collect(pipeline.Finish(), result);
  EXPECT_EQ(TextOf(result, Section::kThinking), "abcd");
  EXPECT_EQ(TextOf(result, Section::kOutput), "\nAnswer.");
  EXPECT_EQ(result.all_text.find('z'), std::string::npos);
  EXPECT_EQ(pipeline.completion_tokens(), at + static_cast<int64_t>(after.size()));
  EXPECT_EQ(SectionSum(pipeline.section_counts()), pipeline.completion_tokens());
  EXPECT_TRUE(pipeline.output_started());
}

TEST(GenerationPipelineTest, ThinkingBudgetInsideAReflection) {
  // Two letters into the reflection: its tag's tokens count as reflection.
  GenerationPipelineOptions options;
  options.thinking_budget_tokens =
      static_cast<int64_t>(Encode("<thinking>").size() + Encode("<reflection>").size() + 2);
  GenerationPipeline pipeline(TheTokenizer(), options);
  RunResult result;
  const std::vector<int32_t> ids =
      Concat({Encode("<thinking>"), Encode("<reflection>"), ByteTokens("abcdef")});
  Collect(pipeline.PushTokens(ToReplicaTokens(ids, 0)), result);
  const std::optional<ForcedTokens> forced = pipeline.TakeForcedTokens();
  ASSERT_TRUE(forced.has_value());
  const std::vector<int32_t> after = Concat({forced->token_ids, Encode("Done")});
  Collect(pipeline.PushTokens(ToReplicaTokens(after, forced->at_index)), result);
  Collect(pipeline.Finish(), result);
  EXPECT_EQ(TextOf(result, Section::kReflection), "ab");
  EXPECT_EQ(TextOf(result, Section::kOutput), "\nDone");
  EXPECT_FALSE(pipeline.TakeForcedTokens().has_value());
  EXPECT_EQ(SectionSum(pipeline.section_counts()), pipeline.completion_tokens());
}

TEST(GenerationPipelineTest, ReplayedAndOutOfOrderIndicesAreIgnored) {
  GenerationPipeline pipeline(TheTokenizer(), {});
  RunResult result;
  const std::vector<ReplicaToken> tokens = ToReplicaTokens(Encode("one two three"), 0);
  Collect(pipeline.PushTokens({tokens[0], tokens[1]}), result);
  Collect(pipeline.PushTokens({tokens[0], tokens[1], tokens[2]}), result);  // replay
  Collect(pipeline.Finish(), result);
  EXPECT_EQ(result.all_text, "one two three");
  EXPECT_EQ(pipeline.completion_tokens(), 3);
}

TEST(GenerationPipelineTest, NoTokensGivesNothing) {
  const RunResult result = RunPipeline({}, {});
  EXPECT_TRUE(result.pieces.empty());
  EXPECT_EQ(result.completion_tokens, 0);
  EXPECT_FALSE(result.stopped);
}

// Every chunking of one token stream gives the same text, sections, ids and counts.
TEST(GenerationPipelineTest, ChunkingDoesNotChangeTheResult) {
  const std::string trace = kTrace + " trailing <outp";
  for (const TraceMode mode : {TraceMode::kFull, TraceMode::kVerbatim, TraceMode::kOutputOnly}) {
    for (const std::vector<std::string>& stops :
         {std::vector<std::string>{}, std::vector<std::string>{"naïve €", "No, 4.</"}}) {
      for (const std::vector<int32_t>& ids :
           {Encode(trace), ByteTokens(trace), Concat({Encode(kTrace), ByteTokens(" trail")})}) {
        GenerationPipelineOptions options;
        options.trace_mode = mode;
        options.stop_strings = stops;
        options.logprobs = true;
        const RunResult one_by_one = RunPipeline(ids, options, std::vector<size_t>(ids.size(), 1));
        EXPECT_EQ(SectionSum(one_by_one.counts), one_by_one.completion_tokens);
        ExpectIdsMatchCounts(one_by_one, mode);
        std::mt19937 random(17);
        for (int trial = 0; trial < 20; ++trial) {
          std::vector<size_t> sizes;
          std::uniform_int_distribution<size_t> size(0, 9);
          for (size_t total = 0; total < ids.size(); total += sizes.back()) {
            sizes.push_back(size(random));
          }
          const RunResult chunked = RunPipeline(ids, options, sizes);
          EXPECT_EQ(chunked.all_text, one_by_one.all_text);
          EXPECT_EQ(chunked.text_by_section, one_by_one.text_by_section);
          EXPECT_EQ(chunked.token_ids, one_by_one.token_ids);
          EXPECT_EQ(chunked.completion_tokens, one_by_one.completion_tokens);
          EXPECT_EQ(chunked.counts.thinking_tokens, one_by_one.counts.thinking_tokens);
          EXPECT_EQ(chunked.counts.reflection_tokens, one_by_one.counts.reflection_tokens);
          EXPECT_EQ(chunked.counts.output_tokens, one_by_one.counts.output_tokens);
          EXPECT_EQ(chunked.counts.reflections, one_by_one.counts.reflections);
          EXPECT_EQ(chunked.stopped, one_by_one.stopped);
        }
      }
    }
  }
}

TEST(GenerationPipelineTest, StopStringsDoNotChangeSectionCountsBeforeTheMatch) {
  // Holding back a possible stop-string prefix must not move a token to another section.
  const std::string trace = "<thinking>ab<</thinking><output>x<y</output>";
  GenerationPipelineOptions with_stop;
  with_stop.stop_strings = {"<z", "</outputX"};
  for (const std::vector<int32_t>& ids : {Encode(trace), ByteTokens(trace)}) {
    const RunResult plain = RunPipeline(ids, {});
    const RunResult stopped = RunPipeline(ids, with_stop);
    EXPECT_FALSE(stopped.stopped);
    EXPECT_EQ(stopped.text_by_section, plain.text_by_section);
    EXPECT_EQ(stopped.counts.thinking_tokens, plain.counts.thinking_tokens);
    EXPECT_EQ(stopped.counts.output_tokens, plain.counts.output_tokens);
    EXPECT_EQ(stopped.token_ids, plain.token_ids);
  }
}

}  // namespace
}  // namespace reflect
