// Incremental reader of a streamed OpenAI chat completion (text/event-stream body, as the router's
// /v1/chat/completions sends it with "stream": true): splits events as bytes arrive, feeds token
// arrivals to a TokenClock and keeps the usage and any error event.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "loadtest/load_client.h"

namespace reflect::loadtest {

// Token counts of the final usage chunk ("stream_options": {"include_usage": true}).
struct ChatCompletionUsage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t thinking_tokens = 0;  // completion_tokens_details, reflect's extension
  int32_t reflection_tokens = 0;
};

// Not thread-safe: one stream's bytes are fed in order. `clock` must outlive the reader.
class ChatCompletionStream {
 public:
  explicit ChatCompletionStream(TokenClock& clock) : clock_(clock) {}

  // Consumes the next bytes of the body, which arrived at `now`. A chunk whose delta has non-empty
  // `content` (OUTPUT) or `reasoning_content` (THINKING, REFLECTION) is one token arrival.
  void Feed(std::string_view bytes, absl::Time now);

  bool done() const { return done_; }  // "data: [DONE]" was read
  const std::optional<ChatCompletionUsage>& usage() const { return usage_; }
  // The message of an error event (or of an event that is not valid JSON), if one came.
  const std::optional<std::string>& error() const { return error_; }

 private:
  void OnData(std::string_view data, absl::Time now);

  TokenClock& clock_;
  std::string pending_;     // bytes of a line not complete yet
  std::string event_data_;  // the `data:` lines of the event being read
  bool event_has_data_ = false;
  bool done_ = false;
  std::optional<ChatCompletionUsage> usage_;
  std::optional<std::string> error_;
};

}  // namespace reflect::loadtest
