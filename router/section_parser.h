// Labels a streamed reflection trace by section (DESIGN §7):
//
//     <thinking> … <reflection> … </reflection> … </thinking> <output> … </output>
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace reflect {

// Part of a reflection trace. Text outside every tag (before the first one, between sections,
// after "</output>") is kOutput, so a model that never writes tags is all output.
enum class Section { kThinking, kReflection, kOutput };

// "thinking", "reflection" or "output".
std::string_view SectionName(Section section);

// What the router appends when a request has spent its thinking budget (DESIGN §7). The parser
// recognizes "</thinking>" inside a nested reflection too, so this text ends thinking from any
// point inside it.
inline constexpr std::string_view kThinkingBudgetCloseText = "</thinking>\n<output>";

struct SectionPiece {
  Section section;
  std::string text;  // never empty

  bool operator==(const SectionPiece&) const = default;
};

struct SectionCounts {
  int64_t thinking_tokens = 0;
  int64_t reflection_tokens = 0;
  int64_t output_tokens = 0;
  int64_t reflections = 0;  // "<reflection>" tags recognized
};

struct SectionParserOptions {
  // Keep the recognized tags in the emitted text (full-trace verbatim mode): an opening tag goes
  // with the section it opens, a closing tag with the section it closes. Off: tags are removed.
  bool keep_tags = false;
};

// A streaming parser that splits generated text into (section, text) pieces and counts tokens per
// section.
//
// Grammar. Tags are matched byte for byte, case included, whether the model wrote them as one
// special token or as plain text in several tokens. Only the tags that make sense where the
// parser stands are recognized; any other tag-like text (wrong case, "<thinking>" inside thinking,
// "</output>" outside output, "<b>") is ordinary text of the current section:
//   outside every tag (kOutput): <thinking> opens thinking; <reflection> opens a reflection that
//       returns here when closed; <output> opens output.
//   thinking (kThinking): <reflection> opens a nested reflection; </thinking> closes thinking;
//       <output> closes thinking and opens output (a forgotten "</thinking>").
//   reflection (kReflection): </reflection> returns to the enclosing section; inside thinking,
//       </thinking> closes both; <output> closes everything open and opens output.
//   output (kOutput): </output> closes output; everything else is text.
//
// Holding back. A piece never ends in the middle of a tag: the parser holds back the longest
// suffix of the text so far that is a proper prefix of a tag recognized in the current state
// (at most 12 bytes) and nothing else, so the pieces, and how tokens are counted, do not depend on
// how the text was split. Finish() releases what is held as text.
//
// Token attribution. Each PushToken call is one token. Every byte of the stream gets a section:
// text bytes that of the current state, tag bytes that of their tag (above). A token counts in the
// section of the last byte of the stream once its own text has been pushed: its own last byte, or
// for a token with empty text (a special token rendered as nothing, a partial UTF-8 character)
// the last byte before it; kOutput before any byte. While that byte is held back the token is
// pending, and counts() includes it once the byte is resolved (or at Finish). So "<", "output",
// ">" count as output, and "</", "thinking", ">" count as thinking.
//
// Thread-safety: none (one parser per stream). Cost: O(bytes pushed) over the stream.
class SectionParser {
 public:
  explicit SectionParser(SectionParserOptions options = {});

  // Feeds the text of the next generated token (may be empty) and returns the pieces that became
  // final, in stream order, adjacent pieces of one section merged.
  std::vector<SectionPiece> PushToken(std::string_view text);

  // End of stream: releases held-back bytes as text of the current section and counts every
  // pending token. Further pushes are a programmer error.
  std::vector<SectionPiece> Finish();

  // Tokens counted so far (pending ones excluded) and reflections opened.
  const SectionCounts& counts() const { return counts_; }

  // The section text pushed next would land in, if it is no tag.
  Section current_section() const;

  // True while thinking is open (kThinking, or a reflection inside thinking) and thinking plus
  // reflection tokens have reached `budget_tokens` (> 0): the caller should append
  // kThinkingBudgetCloseText, once, and push its tokens like any others.
  bool ThinkingBudgetExhausted(int64_t budget_tokens) const;

 private:
  // Where the parser stands in the grammar above.
  enum class State { kOutside, kThinking, kReflectionInThinking, kReflectionOutside, kOutput };

  struct TagRule;
  static std::span<const TagRule> TagRules();

  // Labels the `text` not yet resolved (held-back bytes first) and holds back a possible tag
  // prefix at its end.
  void Process(std::string_view text, std::vector<SectionPiece>& pieces);
  // Appends `length` bytes of `section` to the resolved stream, emitting `text` when non-empty,
  // and counts the pending tokens that end within them.
  void Resolve(std::string_view text, int64_t length, Section section,
               std::vector<SectionPiece>& pieces);
  // Counts pending tokens ending at or before the resolved end, in the last resolved section.
  void CountResolvedTokens();
  void CountToken(Section section);
  // The rule of the recognized tag `remaining` starts with, or null.
  const TagRule* MatchTag(std::string_view remaining) const;
  // True when `candidate` is a proper prefix of a tag recognized in the current state.
  bool IsTagPrefix(std::string_view candidate) const;

  SectionParserOptions options_;
  State state_ = State::kOutside;
  std::string held_;                         // bytes that may still start a tag
  int64_t pushed_bytes_ = 0;                 // stream bytes pushed so far
  int64_t resolved_bytes_ = 0;               // stream bytes labelled so far (pushed minus held)
  Section last_section_ = Section::kOutput;  // section of the last resolved byte
  std::deque<int64_t> pending_token_ends_;   // stream offsets where uncounted tokens end
  SectionCounts counts_;
};

}  // namespace reflect
