#include "loadtest/chat_completion_stream.h"

#include "nlohmann/json.hpp"

namespace reflect::loadtest {
namespace {

using Json = nlohmann::json;

int32_t CountAt(const Json& object, const char* key) {
  const auto found = object.find(key);
  if (found == object.end() || !found->is_number_integer()) return 0;
  return found->get<int32_t>();
}

bool NonEmptyString(const Json& object, const char* key) {
  const auto found = object.find(key);
  return found != object.end() && found->is_string() &&
         !found->get_ref<const std::string&>().empty();
}

}  // namespace

void ChatCompletionStream::Feed(std::string_view bytes, absl::Time now) {
  pending_.append(bytes);
  size_t line_start = 0;
  for (size_t line_end = pending_.find('\n'); line_end != std::string::npos;
       line_end = pending_.find('\n', line_start)) {
    std::string_view line(pending_.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {  // the blank line that ends an event
      if (event_has_data_) OnData(event_data_, now);
      event_data_.clear();
      event_has_data_ = false;
      continue;
    }
    if (line.substr(0, 5) != "data:") continue;  // comments, `event:`, `id:`, `retry:`
    line.remove_prefix(5);
    if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (event_has_data_) event_data_.push_back('\n');
    event_data_.append(line);
    event_has_data_ = true;
  }
  pending_.erase(0, line_start);
}

void ChatCompletionStream::OnData(std::string_view data, absl::Time now) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  const Json event = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (!event.is_object()) {
    error_ = "malformed event: " + std::string(data.substr(0, 200));
    return;
  }
  if (const auto found = event.find("error"); found != event.end()) {
    const Json& error = *found;
    error_ = error.is_object() && error.contains("message") && error["message"].is_string()
                 ? error["message"].get<std::string>()
                 : error.dump();
    return;
  }
  if (const auto choices = event.find("choices");
      choices != event.end() && choices->is_array() && !choices->empty()) {
    const Json& delta = (*choices)[0].value("delta", Json::object());
    const bool output = NonEmptyString(delta, "content");
    if (output || NonEmptyString(delta, "reasoning_content")) clock_.OnTokens(now, 1, output);
  }
  if (const auto usage = event.find("usage"); usage != event.end() && usage->is_object()) {
    ChatCompletionUsage counts;
    counts.prompt_tokens = CountAt(*usage, "prompt_tokens");
    counts.completion_tokens = CountAt(*usage, "completion_tokens");
    if (const auto details = usage->find("completion_tokens_details");
        details != usage->end() && details->is_object()) {
      counts.thinking_tokens = CountAt(*details, "thinking_tokens");
      counts.reflection_tokens = CountAt(*details, "reflection_tokens");
    }
    usage_ = counts;
  }
}

}  // namespace reflect::loadtest
