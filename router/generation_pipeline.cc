#include "router/generation_pipeline.h"

#include <algorithm>
#include <deque>
#include <utility>

namespace reflect {

namespace {

// A token accepted from the replica whose text has not yet gone through the section parser.
struct AcceptedToken {
  int32_t token_id = 0;
  TokenLogprobs logprobs;
  // Offset in the detokenized stream where this token's text ends. Stop-matcher releases are
  // cut at these offsets so the section parser sees one push per token, with that token's text:
  // its counts then match what the parser would give on the unfiltered stream.
  int64_t end_offset = 0;
};

// True for the tokenizer's special tokens (Llama 3's "<|eot_id|>", "<|reserved_special_token_N|>"
// ...): the model emits them as control, not text, so they render as nothing (as
// skip_special_tokens does in Hugging Face) and never reach the client or the stop matcher.
}  // namespace

struct GenerationPipeline::State {
  State(const Tokenizer& tokenizer_in, GenerationPipelineOptions options_in)
      : tokenizer(tokenizer_in),
        options(std::move(options_in)),
        stop_matcher(options.stop_strings),
        parser(SectionParserOptions{.keep_tags = options.trace_mode == TraceMode::kVerbatim}),
        tag_parser(SectionParserOptions{.keep_tags = true}),
        detokenizer(tokenizer_in, /*skip_special_tokens=*/true) {}

  // Accepts one token in index order and returns false when it must be ignored.
  bool Accept(const ReplicaToken& token);
  // Runs one accepted token through the stop matcher and on into the section parser.
  void Process(AcceptedToken token, std::vector<OutputPiece>& out);
  // Pushes to the section parser every accepted token whose text the stop matcher has released.
  // `final`: the stream ends; every remaining token is pushed, cut at what was released.
  void Drain(bool final, std::vector<OutputPiece>& out);
  // One section-parser push for `token` with `text`, and its pieces into `out`, each token's id
  // with a piece of the section it was counted in.
  void PushToParser(AcceptedToken token, std::string_view text, std::vector<OutputPiece>& out);
  // The parser's Finish, the last held tokens' ids included.
  void FinishParser(std::vector<OutputPiece>& out);
  // Moves the tokens the parser just counted from `uncounted` into `out`: the oldest `count` of
  // them; those that were pending before this push in `first_section`, a token counted by its own
  // push in `last_section`.
  void AttachCounted(int64_t count, size_t pending_before, Section first_section,
                     Section last_section, std::vector<OutputPiece>& out);
  void AttachToken(Section section, AcceptedToken token, std::vector<OutputPiece>& out);
  int64_t CountedTokens() const;
  // Appends section pieces (no token ids) to `out`, applying the trace mode.
  void AppendPieces(std::vector<SectionPiece> pieces, std::vector<OutputPiece>& out);
  void AppendPiece(Section section, std::string text, std::vector<OutputPiece>& out);
  // After a token: when the thinking budget is spent, prepares the forced close text (once).
  void CheckThinkingBudget();
  // The stop matcher matched: pushes what is left and ends the stream.
  void EndAtStop(size_t stop_index, std::vector<OutputPiece>& out);

  const Tokenizer& tokenizer;
  GenerationPipelineOptions options;
  StopMatcher stop_matcher;
  SectionParser parser;
  // The same stream with tags kept, outside kVerbatim: its pieces give the section of every
  // resolved byte (tags included), which tells in which section the tokens counted by a push were
  // counted. Parsing twice costs O(bytes) more.
  SectionParser tag_parser;
  std::deque<AcceptedToken> uncounted;  // pushed to the parser, not yet counted (held tag prefix)
  Section last_resolved_section = Section::kOutput;  // of the last resolved byte of the stream

  // Held bytes of an incomplete UTF-8 character belong to the newest token (at Finish it carries
  // their replacement text). Special tokens (<|eot_id|>…) give no text.
  StreamingDetokenizer detokenizer;
  int64_t detokenized_bytes = 0;  // detokenized stream length so far

  std::string released;                // stop-matcher output not yet pushed to the parser
  int64_t parsed_bytes = 0;            // stream bytes pushed to the parser (released starts here)
  std::deque<AcceptedToken> accepted;  // accepted tokens not yet pushed to the parser

  int64_t next_index = 0;  // index of the next token to accept (= tokens accepted)
  bool stopped = false;
  bool finished = false;
  std::string matched_stop;
  bool output_started = false;

  bool budget_exhausted = false;
  std::optional<ForcedTokens> forced_to_send;
  // The force sent to the replica while its tokens have not all come back.
  int64_t force_at_index = 0;
  std::vector<int32_t> forced_token_ids;
  bool force_pending = false;
};

bool GenerationPipeline::State::Accept(const ReplicaToken& token) {
  // Below next_index: a replay after the replica's rewind (already accepted). Above: generated
  // after a force point the replica had not yet seen, or a gap; either way not ours to use.
  if (token.index != next_index) return false;
  if (force_pending) {
    // Between the force and the rewound stream the replica may still send what it sampled from
    // force_at_index on; only the forced ids themselves are taken. A sampled token equal to the
    // forced one at that place is the same text, so taking it changes nothing.
    const int64_t offset = next_index - force_at_index;
    if (token.token_id != forced_token_ids[static_cast<size_t>(offset)]) return false;
    if (offset + 1 == static_cast<int64_t>(forced_token_ids.size())) force_pending = false;
  }
  ++next_index;
  return true;
}

void GenerationPipeline::State::Process(AcceptedToken token, std::vector<OutputPiece>& out) {
  const std::string text = detokenizer.Push(token.token_id);
  detokenized_bytes += static_cast<int64_t>(text.size());
  token.end_offset = detokenized_bytes;
  accepted.push_back(std::move(token));
  StopMatcherResult result = stop_matcher.Push(text);
  released += result.text;
  if (result.match.has_value()) {
    EndAtStop(result.match->stop_index, out);
    return;
  }
  Drain(/*final=*/false, out);
  CheckThinkingBudget();
}

void GenerationPipeline::State::Drain(bool final, std::vector<OutputPiece>& out) {
  const int64_t released_end = parsed_bytes + static_cast<int64_t>(released.size());
  while (!accepted.empty()) {
    const AcceptedToken& token = accepted.front();
    // The newest token keeps its place while the detokenizer holds bytes of it: at the end of the
    // stream they become its text.
    const bool holds_bytes = accepted.size() == 1 && detokenizer.holds_bytes();
    int64_t end = token.end_offset;
    if (final) {
      end = accepted.size() == 1 ? released_end : std::min(end, released_end);
    } else if (end > released_end || holds_bytes) {
      break;
    }
    end = std::max(end, parsed_bytes);
    const size_t length = static_cast<size_t>(end - parsed_bytes);
    const std::string text = released.substr(0, length);
    released.erase(0, length);
    parsed_bytes = end;
    AcceptedToken current = std::move(accepted.front());
    accepted.pop_front();
    PushToParser(std::move(current), text, out);
  }
}

int64_t GenerationPipeline::State::CountedTokens() const {
  const SectionCounts& counts = parser.counts();
  return counts.thinking_tokens + counts.reflection_tokens + counts.output_tokens;
}

void GenerationPipeline::State::PushToParser(AcceptedToken token, std::string_view text,
                                             std::vector<OutputPiece>& out) {
  const size_t pending_before = uncounted.size();
  const int64_t counted_before = CountedTokens();
  uncounted.push_back(std::move(token));
  std::vector<SectionPiece> pieces = parser.PushToken(text);
  const std::vector<SectionPiece> tagged =
      options.trace_mode == TraceMode::kVerbatim ? pieces : tag_parser.PushToken(text);
  // The parser resolves tokens it held back all at once, in the first section this push resolves
  // (a tag prefix is resolved whole: as its tag, or as text), and this push's own token, when
  // resolved, in the section of its last byte: the last one resolved.
  const Section first_section = tagged.empty() ? last_resolved_section : tagged.front().section;
  const Section last_section = tagged.empty() ? last_resolved_section : tagged.back().section;
  if (!tagged.empty()) last_resolved_section = tagged.back().section;
  const int64_t counted = CountedTokens() - counted_before;
  // Held ids first so that they precede this push's text; a same-section piece merges with them.
  const size_t old_counted = std::min(pending_before, static_cast<size_t>(counted));
  AttachCounted(static_cast<int64_t>(old_counted), old_counted, first_section, last_section, out);
  AppendPieces(std::move(pieces), out);
  AttachCounted(counted - static_cast<int64_t>(old_counted), 0, first_section, last_section, out);
}

void GenerationPipeline::State::FinishParser(std::vector<OutputPiece>& out) {
  const int64_t counted_before = CountedTokens();
  std::vector<SectionPiece> pieces = parser.Finish();
  const std::vector<SectionPiece> tagged =
      options.trace_mode == TraceMode::kVerbatim ? pieces : tag_parser.Finish();
  // Finish resolves the held bytes as text of the current section, counting every held token.
  const Section section = tagged.empty() ? last_resolved_section : tagged.front().section;
  const int64_t counted = CountedTokens() - counted_before;
  AttachCounted(counted, static_cast<size_t>(counted), section, section, out);
  AppendPieces(std::move(pieces), out);
}

void GenerationPipeline::State::AttachCounted(int64_t count, size_t pending_before,
                                              Section first_section, Section last_section,
                                              std::vector<OutputPiece>& out) {
  for (int64_t i = 0; i < count && !uncounted.empty(); ++i) {
    AcceptedToken token = std::move(uncounted.front());
    uncounted.pop_front();
    AttachToken(static_cast<size_t>(i) < pending_before ? first_section : last_section,
                std::move(token), out);
  }
}

void GenerationPipeline::State::AttachToken(Section section, AcceptedToken token,
                                            std::vector<OutputPiece>& out) {
  if (options.trace_mode == TraceMode::kOutputOnly && section != Section::kOutput) return;
  if (out.empty() || out.back().section != section) {
    OutputPiece piece;
    piece.section = section;
    out.push_back(std::move(piece));
  }
  out.back().token_ids.push_back(token.token_id);
  if (options.logprobs) out.back().logprobs.push_back(std::move(token.logprobs));
}

void GenerationPipeline::State::AppendPieces(std::vector<SectionPiece> pieces,
                                             std::vector<OutputPiece>& out) {
  for (SectionPiece& piece : pieces) AppendPiece(piece.section, std::move(piece.text), out);
}

void GenerationPipeline::State::AppendPiece(Section section, std::string text,
                                            std::vector<OutputPiece>& out) {
  if (section == Section::kOutput && !output_started) {
    // A verbatim "<output>" tag is markup, not the first output text.
    std::string_view content = text;
    while (content.starts_with("<output>")) content.remove_prefix(8);
    while (content.starts_with("</output>")) content.remove_prefix(9);
    output_started = !content.empty();
  }
  if (options.trace_mode == TraceMode::kOutputOnly && section != Section::kOutput) return;
  // Adjacent text of one section is one piece, token ids of both kept in order.
  if (!out.empty() && out.back().section == section) {
    out.back().text += text;
  } else {
    OutputPiece piece;
    piece.section = section;
    piece.text = std::move(text);
    out.push_back(std::move(piece));
  }
}

void GenerationPipeline::State::CheckThinkingBudget() {
  if (budget_exhausted || options.thinking_budget_tokens <= 0 ||
      !parser.ThinkingBudgetExhausted(options.thinking_budget_tokens)) {
    return;
  }
  budget_exhausted = true;
  force_at_index = next_index;
  forced_token_ids = tokenizer.Encode(kThinkingBudgetCloseText);
  force_pending = !forced_token_ids.empty();
  forced_to_send = ForcedTokens{.at_index = force_at_index, .token_ids = forced_token_ids};
}

void GenerationPipeline::State::EndAtStop(size_t stop_index, std::vector<OutputPiece>& out) {
  stopped = true;
  matched_stop = options.stop_strings[stop_index];
  // The held UTF-8 bytes lie after the stop string (released text ends where it starts).
  detokenizer.Discard();
  Drain(/*final=*/true, out);
  FinishParser(out);
}

GenerationPipeline::GenerationPipeline(const Tokenizer& tokenizer,
                                       GenerationPipelineOptions options)
    : state_(std::make_unique<State>(tokenizer, std::move(options))) {}

GenerationPipeline::~GenerationPipeline() = default;
GenerationPipeline::GenerationPipeline(GenerationPipeline&&) noexcept = default;
GenerationPipeline& GenerationPipeline::operator=(GenerationPipeline&&) noexcept = default;

std::vector<OutputPiece> GenerationPipeline::PushTokens(const std::vector<ReplicaToken>& tokens) {
  std::vector<OutputPiece> out;
  State& state = *state_;
  for (const ReplicaToken& token : tokens) {
    if (state.stopped || state.finished) break;
    if (!state.Accept(token)) continue;
    AcceptedToken accepted;
    accepted.token_id = token.token_id;
    if (state.options.logprobs) {
      accepted.logprobs =
          TokenLogprobs{.token_id = token.token_id, .logprob = token.logprob, .top = token.top};
    }
    state.Process(std::move(accepted), out);
  }
  return out;
}

std::vector<OutputPiece> GenerationPipeline::Finish() {
  std::vector<OutputPiece> out;
  State& state = *state_;
  if (state.stopped || state.finished) return out;
  state.finished = true;
  // A truncated character at the very end becomes U+FFFD, the text of the last token.
  const std::string tail = state.detokenizer.Flush();
  state.detokenized_bytes += static_cast<int64_t>(tail.size());
  if (!state.accepted.empty()) state.accepted.back().end_offset = state.detokenized_bytes;
  StopMatcherResult result = state.stop_matcher.Push(tail);
  state.released += result.text;
  if (result.match.has_value()) {
    state.EndAtStop(result.match->stop_index, out);
    return out;
  }
  state.released += state.stop_matcher.Flush();
  state.Drain(/*final=*/true, out);
  state.FinishParser(out);
  return out;
}

bool GenerationPipeline::stopped_by_string() const { return state_->stopped; }

const std::string& GenerationPipeline::matched_stop() const { return state_->matched_stop; }

std::optional<ForcedTokens> GenerationPipeline::TakeForcedTokens() {
  return std::exchange(state_->forced_to_send, std::nullopt);
}

bool GenerationPipeline::thinking_budget_exhausted() const { return state_->budget_exhausted; }

int64_t GenerationPipeline::completion_tokens() const { return state_->next_index; }

const SectionCounts& GenerationPipeline::section_counts() const { return state_->parser.counts(); }

bool GenerationPipeline::output_started() const { return state_->output_started; }

}  // namespace reflect
