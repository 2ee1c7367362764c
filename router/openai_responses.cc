#include "router/openai_responses.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

using Json = nlohmann::json;

bool IsChat(const CompletionIdentity& identity) {
  return identity.endpoint == CompletionEndpoint::kChatCompletions;
}

// Model text is valid UTF-8 (the detokenizer guarantees it); replace anything else rather than
// fail a response.
std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json Bytes(std::string_view token) {
  Json bytes = Json::array();
  for (const char byte : token) bytes.push_back(static_cast<unsigned char>(byte));
  return bytes;
}

Json FinishReasonJson(const std::optional<FinishReason>& reason) {
  if (!reason) return nullptr;
  return *reason == FinishReason::kStop ? "stop" : "length";
}

Json ChatLogprobs(const ChoiceResult& choice) {
  if (!choice.logprobs_requested) return nullptr;
  Json content = Json::array();
  for (const TokenLogprob& token : choice.logprobs) {
    Json top = Json::array();
    for (const TopLogprob& alternative : token.top) {
      top.push_back({{"token", alternative.token},
                     {"logprob", alternative.logprob},
                     {"bytes", Bytes(alternative.token)}});
    }
    content.push_back({{"token", token.token},
                       {"logprob", token.logprob},
                       {"bytes", Bytes(token.token)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

Json CompletionLogprobs(const ChoiceResult& choice) {
  if (!choice.logprobs_requested) return nullptr;
  Json tokens = Json::array();
  Json token_logprobs = Json::array();
  Json top_logprobs = Json::array();
  Json text_offsets = Json::array();
  int64_t offset = choice.text_offset;
  for (const TokenLogprob& token : choice.logprobs) {
    tokens.push_back(token.token);
    token_logprobs.push_back(token.logprob);
    Json top = Json::object();
    for (const TopLogprob& alternative : token.top) top[alternative.token] = alternative.logprob;
    top_logprobs.push_back(std::move(top));
    text_offsets.push_back(offset);
    offset += static_cast<int64_t>(token.token.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(text_offsets)}};
}

Json UsageJson(const CompletionUsage& usage) {
  const SectionCounts& sections = usage.sections;
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_prompt_tokens}}},
          {"completion_tokens_details",
           {{"reasoning_tokens", sections.thinking_tokens + sections.reflection_tokens},
            {"thinking_tokens", sections.thinking_tokens},
            {"reflection_tokens", sections.reflection_tokens},
            {"output_tokens", sections.output_tokens},
            {"reflections", sections.reflections}}}};
}

Json Envelope(const CompletionIdentity& identity, std::string_view object) {
  return {{"id", identity.id},
          {"object", object},
          {"created", identity.created_unix_seconds},
          {"model", identity.model}};
}

}  // namespace

std::string CompletionId(CompletionEndpoint endpoint, std::string_view request_id) {
  std::string id = endpoint == CompletionEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-";
  id.append(request_id);
  return id;
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string CompletionResponseJson(const CompletionIdentity& identity,
                                   const std::vector<ChoiceResult>& choices,
                                   const CompletionUsage& usage) {
  const bool chat = IsChat(identity);
  Json response = Envelope(identity, chat ? "chat.completion" : "text_completion");
  Json choices_json = Json::array();
  for (const ChoiceResult& choice : choices) {
    if (chat) {
      Json message = {{"role", "assistant"}, {"content", choice.content}};
      if (!choice.reasoning.empty()) message["reasoning_content"] = choice.reasoning;
      choices_json.push_back({{"index", choice.index},
                              {"message", std::move(message)},
                              {"logprobs", ChatLogprobs(choice)},
                              {"finish_reason", FinishReasonJson(choice.finish_reason)}});
    } else {
      choices_json.push_back({{"index", choice.index},
                              {"text", choice.content},
                              {"logprobs", CompletionLogprobs(choice)},
                              {"finish_reason", FinishReasonJson(choice.finish_reason)}});
    }
  }
  response["choices"] = std::move(choices_json);
  response["usage"] = UsageJson(usage);
  return Dump(response);
}

std::string CompletionChunkJson(const CompletionIdentity& identity, const ChoiceResult& piece,
                                bool first_chunk, bool include_usage,
                                const CompletionUsage* running_usage) {
  const bool chat = IsChat(identity);
  Json chunk = Envelope(identity, chat ? "chat.completion.chunk" : "text_completion");
  Json choice;
  if (chat) {
    Json delta = Json::object();
    if (first_chunk) delta["role"] = "assistant";
    if (first_chunk || !piece.content.empty()) delta["content"] = piece.content;
    if (!piece.reasoning.empty()) delta["reasoning_content"] = piece.reasoning;
    choice = {{"index", piece.index},
              {"delta", std::move(delta)},
              {"logprobs", ChatLogprobs(piece)},
              {"finish_reason", FinishReasonJson(piece.finish_reason)}};
  } else {
    choice = {{"index", piece.index},
              {"text", piece.content},
              {"logprobs", CompletionLogprobs(piece)},
              {"finish_reason", FinishReasonJson(piece.finish_reason)}};
  }
  chunk["choices"] = Json::array({std::move(choice)});
  if (include_usage) chunk["usage"] = running_usage ? UsageJson(*running_usage) : Json(nullptr);
  return Dump(chunk);
}

std::string UsageChunkJson(const CompletionIdentity& identity, const CompletionUsage& usage) {
  Json chunk = Envelope(identity, IsChat(identity) ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = Json::array();
  chunk["usage"] = UsageJson(usage);
  return Dump(chunk);
}

std::string ModelListJson(const std::vector<ServedModel>& models) {
  Json data = Json::array();
  for (const ServedModel& model : models) {
    data.push_back({{"id", model.name},
                    {"object", "model"},
                    {"created", model.created_unix_seconds},
                    {"owned_by", "reflect"},
                    {"max_model_len", model.context_length_tokens}});
  }
  return Dump(Json{{"object", "list"}, {"data", std::move(data)}});
}

}  // namespace reflect
