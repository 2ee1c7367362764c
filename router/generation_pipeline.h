// GenerationPipeline: one request's token stream → client output (DESIGN §7). Takes the token ids a
// replica generates, detokenizes them incrementally (never splitting a UTF-8 character), matches
// stop strings on the text as the model wrote it, labels sections with the SectionParser, applies
// the trace mode, counts tokens per section, and says when the thinking budget is spent.
//
// Pure logic: no I/O, no threads, no clock (times are passed in). The request router owns one per
// request and calls it from that request's replica stream callbacks.
//
// Order of operations per token: detokenize → stop matcher (text released by the matcher can no
// longer be part of a stop string) → section parser → trace-mode filter. A stop string ends the
// request: the text before it is emitted, the matched string and everything after are dropped, and
// stopped_by_string() becomes true; the caller then cancels the replica stream. The tokenizer's
// special tokens ("<|eot_id|>", reserved ones) count as tokens but render as no text.
//
// Token ids and sections: text released by the stop matcher goes to the section parser one push
// per token, cut at that token's own end, so a token counts in the section of its own last byte
// as SectionParser documents, with or without stop strings, however the tokens are batched. A
// token's id (and logprobs) goes with a piece of the section it is counted in, once counted: in
// the piece holding its text, or in an empty-text piece (a removed tag, a special token, a
// partial character). A token held back as a possible tag prefix ("<th") is counted, and its id
// emitted, when the parser resolves it, so per section the ids in the pieces equal the counts; in
// kOutputOnly the ids of non-output tokens are dropped with their text (they still count).
//
// Thinking budget: after each token the pipeline checks SectionParser::ThinkingBudgetExhausted;
// when true (once per request), TakeForcedTokens() returns the token ids of
// kThinkingBudgetCloseText and the generated index where they go; the caller sends them to the
// replica (ForceTokens), which drops what it generated from that index on and streams the forced
// tokens back as ordinary tokens. PushTokens ignores tokens whose index is past the forced index
// until the forced tokens arrive (the replica's rewind), so nothing generated after the budget
// was hit reaches the client. Precisely: a token is taken only at the next expected index (lower
// indices are replays, higher ones are gaps or stale), and while forced tokens are outstanding
// only when its id is the forced id for that index (a stale sampled token equal to it is the
// same text, so taking it is harmless).
//
// Thread-safety: none (one pipeline per request). Cost: O(bytes) per token plus the stop matcher
// and section parser's linear costs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/sampling_params.h"
#include "common/tokenizer.h"
#include "router/generation_output.h"
#include "router/section_parser.h"
#include "router/stop_matcher.h"

namespace reflect {

struct GenerationPipelineOptions {
  TraceMode trace_mode = TraceMode::kFull;
  std::vector<std::string> stop_strings;  // SamplingParams.stop
  int64_t thinking_budget_tokens = 0;     // 0: no budget
  bool logprobs = false;                  // keep per-token logprobs in the pieces
};

// A token as a replica reports it.
struct ReplicaToken {
  int64_t index = 0;  // among the request's generated tokens
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<TopTokenLogprob> top;
};

// Forced tokens to send to the replica.
struct ForcedTokens {
  int64_t at_index = 0;
  std::vector<int32_t> token_ids;
};

class GenerationPipeline {
 public:
  // `tokenizer` must outlive the pipeline.
  GenerationPipeline(const Tokenizer& tokenizer, GenerationPipelineOptions options);
  ~GenerationPipeline();
  GenerationPipeline(GenerationPipeline&&) noexcept;
  GenerationPipeline& operator=(GenerationPipeline&&) noexcept;

  // Feeds tokens in index order and returns the pieces that became final (possibly none).
  // Tokens after a stop-string match are ignored; so are tokens past a pending force (above).
  std::vector<OutputPiece> PushTokens(const std::vector<ReplicaToken>& tokens);

  // The replica finished normally (end of sequence, stop token, length): releases held-back text
  // (a pending stop-string or tag prefix is text after all) and returns the last pieces. Not
  // called after a stop-string match.
  std::vector<OutputPiece> Finish();

  // True once a stop string matched; matched_stop() says which.
  bool stopped_by_string() const;
  const std::string& matched_stop() const;

  // Set once, when the thinking budget is hit; the caller sends it to the replica.
  std::optional<ForcedTokens> TakeForcedTokens();
  bool thinking_budget_exhausted() const;

  // Tokens accepted so far (forced ones included) and their section counts (pending tokens
  // are counted after Finish or a stop match).
  int64_t completion_tokens() const;
  const SectionCounts& section_counts() const;
  // True once a token counted in kOutput has produced text (for time to first OUTPUT token).
  bool output_started() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace reflect
