#include "router/openai_protocol.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "router/http_errors.h"
#include "router/openai_responses.h"

namespace reflect {
namespace {

using Json = nlohmann::json;

OpenAiLimits TestLimits() {
  OpenAiLimits limits;
  limits.served_model_names = {"reflection-70b", "alias"};
  limits.context_length_tokens = 4096;
  limits.vocab_size = 1000;
  limits.max_n = 8;
  limits.max_stop_strings = 4;
  limits.max_stop_string_bytes = 16;
  return limits;
}

absl::StatusOr<CompletionRequest> ParseChat(const std::string& body) {
  return ParseCompletionRequest(CompletionEndpoint::kChatCompletions, body, TestLimits());
}

absl::StatusOr<CompletionRequest> ParseLegacy(const std::string& body) {
  return ParseCompletionRequest(CompletionEndpoint::kCompletions, body, TestLimits());
}

// ---- The bad-request table: each case is one test, named after what is wrong. ----

struct BadRequest {
  std::string name;
  CompletionEndpoint endpoint;
  std::string body;
  std::string field;  // the field the error must name
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
};

std::ostream& operator<<(std::ostream& stream, const BadRequest& bad) { return stream << bad.name; }

constexpr CompletionEndpoint kChat = CompletionEndpoint::kChatCompletions;
constexpr CompletionEndpoint kLegacy = CompletionEndpoint::kCompletions;

// A valid chat body with `extra` members added (a JSON fragment starting with a comma).
std::string Chat(const std::string& extra) {
  return R"({"model": "reflection-70b", "messages": [{"role": "user", "content": "hi"}])" + extra +
         "}";
}

std::string Legacy(const std::string& extra) { return R"({"prompt": "hi")" + extra + "}"; }

const BadRequest kBadRequests[] = {
    {"BadJson", kChat, R"({"model": "reflection-70b", "messages": [)", "body"},
    {"NotAnObject", kChat, R"([1, 2, 3])", "body"},
    {"InvalidUtf8", kChat, Chat(", \"user\": \"caf\xC3\x28\""), "body"},
    {"NestedTooDeep", kChat,
     Chat(", \"metadata\": " + std::string(100, '[') + std::string(100, ']')), "body"},
    {"UnknownModel", kChat,
     R"({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})", "model",
     absl::StatusCode::kNotFound},
    {"ModelNotString", kChat, R"({"model": 7, "messages": [{"role": "user", "content": "hi"}]})",
     "model"},
    {"MissingMessages", kChat, R"({"model": "reflection-70b"})", "messages"},
    {"EmptyMessages", kChat, R"({"messages": []})", "messages"},
    {"MessagesNotList", kChat, R"({"messages": "hi"})", "messages"},
    {"MessageBadRole", kChat, R"({"messages": [{"role": "wizard", "content": "hi"}]})",
     "messages[0].role"},
    {"MessageToolRole", kChat,
     R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]})",
     "messages[1].role"},
    {"MessageMissingContent", kChat, R"({"messages": [{"role": "user"}]})", "messages[0].content"},
    {"MessageImagePart", kChat,
     R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
     "messages[0].content[0].type"},
    {"MessageUnknownPartType", kChat,
     R"({"messages": [{"role": "user", "content": [{"type": "audio"}]}]})",
     "messages[0].content[0].type"},
    {"MessageUnknownField", kChat, R"({"messages": [{"role": "user", "content": "a", "mood": 1}]})",
     "messages[0].mood"},
    {"NegativeTemperature", kChat, Chat(R"(, "temperature": -1)"), "temperature"},
    // JSON has no NaN or infinity: such numbers are invalid JSON, and so is a number beyond double.
    {"NanTemperatureLiteral", kChat, Chat(R"(, "temperature": NaN)"), "body"},
    {"TemperatureOverflowsDouble", kChat, Chat(R"(, "temperature": 1e999)"), "body"},
    {"NanTemperatureAsString", kChat, Chat(R"(, "temperature": "NaN")"), "temperature"},
    {"TemperatureTooHigh", kChat, Chat(R"(, "temperature": 2.5)"), "temperature"},
    {"TopPZero", kChat, Chat(R"(, "top_p": 0)"), "top_p"},
    {"TopPAboveOne", kChat, Chat(R"(, "top_p": 1.01)"), "top_p"},
    {"MaxTokensZero", kChat, Chat(R"(, "max_tokens": 0)"), "max_tokens"},
    {"MaxTokensNegative", kChat, Chat(R"(, "max_tokens": -5)"), "max_tokens"},
    {"MaxTokensBeyondContext", kChat, Chat(R"(, "max_tokens": 4097)"), "max_tokens"},
    {"MaxTokensFractional", kChat, Chat(R"(, "max_tokens": 1.5)"), "max_tokens"},
    {"MaxCompletionTokensConflict", kChat, Chat(R"(, "max_tokens": 5, "max_completion_tokens": 6)"),
     "max_completion_tokens"},
    {"NZero", kChat, Chat(R"(, "n": 0)"), "n"},
    {"NTooLarge", kChat, Chat(R"(, "n": 9)"), "n"},
    {"TooManyStopStrings", kChat, Chat(R"(, "stop": ["a", "b", "c", "d", "e"])"), "stop"},
    {"HugeStopList", kChat,
     Chat(", \"stop\": [" +
          [] {
            std::string list;
            for (int index = 0; index < 10000; ++index) list += (index ? ",\"x\"" : "\"x\"");
            return list;
          }() +
          "]"),
     "stop"},
    {"StopStringTooLong", kChat, Chat(R"(, "stop": ["this stop string is too long"])"), "stop[0]"},
    {"StopStringEmpty", kChat, Chat(R"(, "stop": "")"), "stop"},
    {"StopNotString", kChat, Chat(R"(, "stop": ["a", 5])"), "stop[1]"},
    {"UnknownFieldTypo", kChat, Chat(R"(, "max_token": 5)"), "max_token"},
    {"StreamNotBool", kChat, Chat(R"(, "stream": "yes")"), "stream"},
    {"StreamOptionsWithoutStream", kChat, Chat(R"(, "stream_options": {"include_usage": true})"),
     "stream_options"},
    {"StreamOptionsUnknownField", kChat,
     Chat(R"(, "stream": true, "stream_options": {"include_usage": true, "every": 1})"),
     "stream_options.every"},
    {"TopLogprobsWithoutLogprobs", kChat, Chat(R"(, "top_logprobs": 3)"), "top_logprobs"},
    {"TopLogprobsTooMany", kChat, Chat(R"(, "logprobs": true, "top_logprobs": 21)"),
     "top_logprobs"},
    {"ChatLogprobsNotBool", kChat, Chat(R"(, "logprobs": 3)"), "logprobs"},
    {"NegativeSeed", kChat, Chat(R"(, "seed": -1)"), "seed"},
    {"FrequencyPenaltyOutOfRange", kChat, Chat(R"(, "frequency_penalty": 2.5)"),
     "frequency_penalty"},
    {"TopKNegative", kChat, Chat(R"(, "top_k": -5)"), "top_k"},
    {"MinPAboveOne", kChat, Chat(R"(, "min_p": 1.5)"), "min_p"},
    {"RepetitionPenaltyZero", kChat, Chat(R"(, "repetition_penalty": 0)"), "repetition_penalty"},
    {"IgnoreEosNotBool", kChat, Chat(R"(, "ignore_eos": 1)"), "ignore_eos"},
    {"StopTokenIdOutsideVocabulary", kChat, Chat(R"(, "stop_token_ids": [5, 1000])"),
     "stop_token_ids[1]"},
    {"PriorityOutOfRange", kChat, Chat(R"(, "priority": 101)"), "priority"},
    {"TraceModeUnknown", kChat, Chat(R"(, "trace_mode": "everything")"), "trace_mode"},
    {"ThinkingBudgetNegative", kChat, Chat(R"(, "thinking_budget": -1)"), "thinking_budget"},
    {"ReflectionNotBool", kChat, Chat(R"(, "reflection": "on")"), "reflection"},
    {"ToolsGiven", kChat, Chat(R"(, "tools": [{"type": "function"}])"), "tools"},
    {"LogitBiasGiven", kChat, Chat(R"(, "logit_bias": {"50256": -100})"), "logit_bias"},
    {"JsonResponseFormat", kChat, Chat(R"(, "response_format": {"type": "json_object"})"),
     "response_format"},
    {"PromptOnChat", kChat, Chat(R"(, "prompt": "hi")"), "prompt"},
    {"LegacyMissingPrompt", kLegacy, R"({"model": "reflection-70b"})", "prompt"},
    {"LegacyEmptyPrompt", kLegacy, R"({"prompt": ""})", "prompt"},
    {"LegacyEmptyPromptInBatch", kLegacy, R"({"prompt": ["a", ""]})", "prompt[1]"},
    {"LegacyPromptWrongType", kLegacy, R"({"prompt": {"text": "hi"}})", "prompt"},
    {"LegacyTokenOutsideVocabulary", kLegacy, R"({"prompt": [1, 2, 1000]})", "prompt[2]"},
    {"LegacyNegativeTokenInBatch", kLegacy, R"({"prompt": [[1], [2, -1]]})", "prompt[1][1]"},
    {"LegacyLogprobsTooMany", kLegacy, Legacy(R"(, "logprobs": 21)"), "logprobs"},
    {"LegacyEcho", kLegacy, Legacy(R"(, "echo": true)"), "echo"},
    {"LegacySuffix", kLegacy, Legacy(R"(, "suffix": "end")"), "suffix"},
    {"LegacyBestOfNotN", kLegacy, Legacy(R"(, "best_of": 3)"), "best_of"},
    {"LegacyMessages", kLegacy, Legacy(R"(, "messages": [])"), "messages"},
    {"LegacyReflection", kLegacy, Legacy(R"(, "reflection": true)"), "reflection"},
};

class BadRequestTest : public testing::TestWithParam<BadRequest> {};

TEST_P(BadRequestTest, RejectedNamingTheField) {
  const BadRequest& bad = GetParam();
  const absl::StatusOr<CompletionRequest> request =
      ParseCompletionRequest(bad.endpoint, bad.body, TestLimits());
  ASSERT_FALSE(request.ok()) << bad.body;
  const absl::Status& status = request.status();
  EXPECT_EQ(status.code(), bad.code) << status;
  EXPECT_EQ(HttpStatusFromCode(status.code()), bad.code == absl::StatusCode::kNotFound ? 404 : 400);
  EXPECT_EQ(ErrorField(status), bad.field) << status;
  EXPECT_EQ(status.message().substr(0, bad.field.size() + 2), bad.field + ": ") << status;

  const Json body = Json::parse(ErrorBody(status));
  EXPECT_EQ(body["error"]["param"], bad.field);
  EXPECT_EQ(body["error"]["message"], std::string(status.message()));
}

INSTANTIATE_TEST_SUITE_P(OpenAiProtocol, BadRequestTest, testing::ValuesIn(kBadRequests),
                         [](const testing::TestParamInfo<BadRequest>& info) {
                           return info.param.name;
                         });

TEST(OpenAiProtocolTest, BadRequestTableIsLargeAndNamesAreUnique) {
  std::set<std::string> names;
  for (const BadRequest& bad : kBadRequests) names.insert(bad.name);
  EXPECT_EQ(names.size(), std::size(kBadRequests));
  EXPECT_GE(names.size(), 25u);
}

TEST(OpenAiProtocolTest, ErrorMessagesSayWhatWasWrong) {
  EXPECT_EQ(ParseChat(Chat(R"(, "temperature": -1)")).status().message(),
            "temperature: must be a finite number in [0, 2], got -1");
  EXPECT_EQ(ParseChat(Chat(R"(, "top_p": 1.5)")).status().message(),
            "top_p: must be a finite number in (0, 1], got 1.5");
  EXPECT_EQ(ParseChat(Chat(R"(, "max_token": 5)")).status().message(),
            "max_token: unknown field for /v1/chat/completions");
}

// ---- Good requests. ----

TEST(OpenAiProtocolTest, MinimalChatGetsDefaults) {
  const absl::StatusOr<CompletionRequest> request =
      ParseChat(R"({"messages": [{"role": "user", "content": "How many r in strawberry?"}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->endpoint, CompletionEndpoint::kChatCompletions);
  EXPECT_EQ(request->model, "reflection-70b");
  ASSERT_EQ(request->messages.size(), 1u);
  EXPECT_EQ(request->messages[0].role, "user");
  EXPECT_EQ(request->messages[0].content, "How many r in strawberry?");
  EXPECT_DOUBLE_EQ(request->sampling.temperature, 0.7);
  EXPECT_DOUBLE_EQ(request->sampling.top_p, 0.95);
  EXPECT_EQ(request->n, 1);
  EXPECT_FALSE(request->stream);
  EXPECT_FALSE(request->include_usage);
  EXPECT_FALSE(request->max_tokens.has_value());
  EXPECT_FALSE(request->seed.has_value());
  EXPECT_FALSE(request->logprobs.has_value());
  EXPECT_EQ(request->trace_mode, TraceMode::kFull);
  EXPECT_EQ(request->thinking_budget_tokens, 0);
  EXPECT_FALSE(request->reflection);
}

TEST(OpenAiProtocolTest, FullChatRequest) {
  const absl::StatusOr<CompletionRequest> request = ParseChat(R"({
    "model": "alias",
    "messages": [{"role": "developer", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                              {"type": "text", "text": "world"}], "name": "ann"}],
    "temperature": 0, "top_p": 0.5, "n": 2, "stream": true,
    "stream_options": {"include_usage": true}, "stop": ["</output>", "END"],
    "seed": 18446744073709551615, "max_completion_tokens": 100,
    "logprobs": true, "top_logprobs": 3, "frequency_penalty": 0.5, "presence_penalty": -0.5,
    "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": true,
    "stop_token_ids": [7, 8], "priority": -3, "trace_mode": "output_only",
    "thinking_budget": 512, "user": "u-1", "metadata": {"a": "b"}, "store": false,
    "service_tier": "auto", "parallel_tool_calls": false, "tools": [], "tool_choice": "none",
    "response_format": {"type": "text"}, "logit_bias": {}, "modalities": ["text"]
  })");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model, "alias");
  ASSERT_EQ(request->messages.size(), 2u);
  EXPECT_EQ(request->messages[0].role, "system");
  EXPECT_EQ(request->messages[1].content, "Hello, world");
  const SamplingParams& sampling = request->sampling;
  EXPECT_EQ(sampling.temperature, 0);
  EXPECT_EQ(sampling.top_p, 0.5);
  EXPECT_EQ(request->n, 2);
  EXPECT_TRUE(request->stream);
  EXPECT_TRUE(request->include_usage);
  EXPECT_EQ(sampling.stop, (std::vector<std::string>{"</output>", "END"}));
  EXPECT_EQ(request->seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(request->max_tokens, 100);
  EXPECT_EQ(request->logprobs, 3);
  EXPECT_EQ(sampling.logprobs, 3);
  EXPECT_EQ(sampling.frequency_penalty, 0.5);
  EXPECT_EQ(sampling.presence_penalty, -0.5);
  EXPECT_EQ(sampling.top_k, 40);
  EXPECT_EQ(sampling.min_p, 0.05);
  EXPECT_EQ(sampling.repetition_penalty, 1.1);
  EXPECT_TRUE(sampling.ignore_eos);
  EXPECT_EQ(sampling.stop_token_ids, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(request->priority, -3);
  EXPECT_EQ(request->trace_mode, TraceMode::kOutputOnly);
  EXPECT_EQ(request->thinking_budget_tokens, 512);
}

TEST(OpenAiProtocolTest, NullFieldsCountAsAbsentAndIntegralFloatsAsIntegers) {
  const absl::StatusOr<CompletionRequest> request =
      ParseChat(Chat(R"(, "temperature": null, "stop": null, "max_tokens": 16.0, "top_k": -1)"));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_DOUBLE_EQ(request->sampling.temperature, 0.7);
  EXPECT_TRUE(request->sampling.stop.empty());
  EXPECT_EQ(request->max_tokens, 16);
  EXPECT_EQ(request->sampling.top_k, 0);
}

TEST(OpenAiProtocolTest, ReflectionAddsTheSystemPromptOnlyWithoutOne) {
  absl::StatusOr<CompletionRequest> request =
      ParseChat(R"({"reflection": true, "messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->messages.size(), 2u);
  EXPECT_EQ(request->messages[0].role, "system");
  EXPECT_EQ(request->messages[0].content, kReflectionSystemPrompt);
  EXPECT_TRUE(request->reflection);

  request = ParseChat(
      R"({"reflection": true, "messages": [{"role": "system", "content": "Mine."},
                                           {"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->messages.size(), 2u);
  EXPECT_EQ(request->messages[0].content, "Mine.");
}

TEST(OpenAiProtocolTest, CompletionPromptShapes) {
  using Prompts = std::vector<CompletionPrompt>;
  absl::StatusOr<CompletionRequest> request = ParseLegacy(R"({"prompt": "Once"})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->prompts, (Prompts{std::string("Once")}));
  EXPECT_EQ(request->trace_mode, TraceMode::kVerbatim);

  request = ParseLegacy(R"({"prompt": ["a", "b"], "n": 2, "best_of": 2, "logprobs": 0})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->prompts, (Prompts{std::string("a"), std::string("b")}));
  EXPECT_EQ(request->logprobs, 0);

  request = ParseLegacy(R"({"prompt": [1, 2, 3], "echo": false, "suffix": null})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->prompts, (Prompts{std::vector<int32_t>{1, 2, 3}}));

  request = ParseLegacy(R"({"prompt": [[1], [2, 999]]})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->prompts, (Prompts{std::vector<int32_t>{1}, std::vector<int32_t>{2, 999}}));
}

TEST(OpenAiProtocolTest, IgnoredFieldsAreAccepted) {
  for (std::string_view field : IgnoredRequestFields()) {
    const std::string value = field == "metadata"                                  ? "{}"
                              : field == "store" || field == "parallel_tool_calls" ? "true"
                                                                                   : "\"x\"";
    const std::string extra = ", \"" + std::string(field) + "\": " + value;
    EXPECT_TRUE(ParseChat(Chat(extra)).ok()) << field;
  }
}

TEST(OpenAiProtocolTest, ResolveSamplingFillsMaxTokensAndSeed) {
  const OpenAiLimits limits = TestLimits();
  absl::StatusOr<CompletionRequest> request = ParseChat(Chat(""));
  ASSERT_TRUE(request.ok());
  absl::StatusOr<SamplingParams> sampling = ResolveSampling(*request, 96, limits, 42);
  ASSERT_TRUE(sampling.ok()) << sampling.status();
  EXPECT_EQ(sampling->max_tokens, 4000);
  EXPECT_EQ(sampling->seed, 42u);

  request = ParseChat(Chat(R"(, "max_tokens": 100, "seed": 7)"));
  ASSERT_TRUE(request.ok());
  sampling = ResolveSampling(*request, 3996, limits, 42);
  ASSERT_TRUE(sampling.ok()) << sampling.status();
  EXPECT_EQ(sampling->max_tokens, 100);
  EXPECT_EQ(sampling->seed, 7u);

  sampling = ResolveSampling(*request, 3997, limits, 42);
  EXPECT_EQ(sampling.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(sampling.status()), "max_tokens");

  sampling = ResolveSampling(*request, 4096, limits, 42);
  EXPECT_EQ(ErrorField(sampling.status()), "messages");
  EXPECT_EQ(sampling.status().message(),
            "messages: the prompt is 4096 tokens, more than the limit of 4095 (context length "
            "4096)");

  OpenAiLimits small = limits;
  small.max_prompt_tokens = 10;
  request = ParseLegacy(R"({"prompt": "x"})");
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(ErrorField(ResolveSampling(*request, 11, small, 0).status()), "prompt");
  EXPECT_TRUE(ResolveSampling(*request, 10, small, 0).ok());
}

// ---- Responses. ----

CompletionIdentity ChatIdentity() {
  return {CompletionEndpoint::kChatCompletions,
          CompletionId(CompletionEndpoint::kChatCompletions, "r1"), 1700000000, "reflection-70b"};
}

CompletionUsage SampleUsage() {
  CompletionUsage usage;
  usage.prompt_tokens = 10;
  usage.cached_prompt_tokens = 4;
  usage.completion_tokens = 7;
  usage.sections = {
      .thinking_tokens = 3, .reflection_tokens = 1, .output_tokens = 3, .reflections = 1};
  return usage;
}

TEST(OpenAiResponsesTest, ChatCompletionShape) {
  ChoiceResult choice;
  choice.content = "3";
  choice.reasoning = "Count them.";
  choice.finish_reason = FinishReason::kStop;
  choice.logprobs_requested = true;
  choice.logprobs = {{"3", -0.25, {{"3", -0.25}, {"2", -1.5}}}};
  const Json response =
      Json::parse(CompletionResponseJson(ChatIdentity(), {choice}, SampleUsage()));
  EXPECT_EQ(response["id"], "chatcmpl-r1");
  EXPECT_EQ(response["object"], "chat.completion");
  EXPECT_EQ(response["created"], 1700000000);
  EXPECT_EQ(response["model"], "reflection-70b");
  const Json& first = response["choices"][0];
  EXPECT_EQ(first["index"], 0);
  EXPECT_EQ(first["message"],
            (Json{{"role", "assistant"}, {"content", "3"}, {"reasoning_content", "Count them."}}));
  EXPECT_EQ(first["finish_reason"], "stop");
  EXPECT_EQ(first["logprobs"]["content"][0]["token"], "3");
  EXPECT_EQ(first["logprobs"]["content"][0]["bytes"], Json::array({51}));
  EXPECT_EQ(first["logprobs"]["content"][0]["top_logprobs"][1]["logprob"], -1.5);
  const Json& usage = response["usage"];
  EXPECT_EQ(usage["prompt_tokens"], 10);
  EXPECT_EQ(usage["completion_tokens"], 7);
  EXPECT_EQ(usage["total_tokens"], 17);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 4);
  EXPECT_EQ(usage["completion_tokens_details"]["reasoning_tokens"], 4);
  EXPECT_EQ(usage["completion_tokens_details"]["thinking_tokens"], 3);
  EXPECT_EQ(usage["completion_tokens_details"]["reflection_tokens"], 1);
  EXPECT_EQ(usage["completion_tokens_details"]["output_tokens"], 3);
  EXPECT_EQ(usage["completion_tokens_details"]["reflections"], 1);
}

TEST(OpenAiResponsesTest, ChatChunks) {
  ChoiceResult piece;
  Json chunk = Json::parse(CompletionChunkJson(ChatIdentity(), piece, /*first_chunk=*/true,
                                               /*include_usage=*/true));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["id"], "chatcmpl-r1");
  EXPECT_EQ(chunk["choices"][0]["delta"], (Json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(chunk["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());

  piece.reasoning = "Let me think";
  chunk = Json::parse(CompletionChunkJson(ChatIdentity(), piece, false, false));
  EXPECT_EQ(chunk["choices"][0]["delta"], (Json{{"reasoning_content", "Let me think"}}));
  EXPECT_FALSE(chunk.contains("usage"));

  piece = ChoiceResult{};
  piece.index = 1;
  piece.finish_reason = FinishReason::kLength;
  chunk = Json::parse(CompletionChunkJson(ChatIdentity(), piece, false, false));
  EXPECT_EQ(chunk["choices"][0]["index"], 1);
  EXPECT_EQ(chunk["choices"][0]["delta"], Json::object());
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "length");

  chunk = Json::parse(UsageChunkJson(ChatIdentity(), SampleUsage()));
  EXPECT_EQ(chunk["choices"], Json::array());
  EXPECT_EQ(chunk["usage"]["total_tokens"], 17);
}

TEST(OpenAiResponsesTest, TextCompletionShapes) {
  const CompletionIdentity identity{CompletionEndpoint::kCompletions,
                                    CompletionId(CompletionEndpoint::kCompletions, "r2"), 5, "m"};
  ChoiceResult choice;
  choice.content = "ab c";
  choice.finish_reason = FinishReason::kLength;
  choice.logprobs_requested = true;
  choice.text_offset = 10;
  choice.logprobs = {{"ab", -0.5, {{"ab", -0.5}}}, {" c", -1.0, {}}};
  Json response = Json::parse(CompletionResponseJson(identity, {choice}, SampleUsage()));
  EXPECT_EQ(response["id"], "cmpl-r2");
  EXPECT_EQ(response["object"], "text_completion");
  EXPECT_EQ(response["choices"][0]["text"], "ab c");
  EXPECT_EQ(response["choices"][0]["finish_reason"], "length");
  const Json& logprobs = response["choices"][0]["logprobs"];
  EXPECT_EQ(logprobs["tokens"], (Json{"ab", " c"}));
  EXPECT_EQ(logprobs["token_logprobs"], (Json{-0.5, -1.0}));
  EXPECT_EQ(logprobs["top_logprobs"][0], (Json{{"ab", -0.5}}));
  EXPECT_EQ(logprobs["text_offset"], (Json{10, 12}));

  choice.logprobs_requested = false;
  choice.finish_reason.reset();
  const Json chunk = Json::parse(CompletionChunkJson(identity, choice, true, false));
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "ab c");
  EXPECT_TRUE(chunk["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
}

TEST(OpenAiResponsesTest, ModelList) {
  const Json list = Json::parse(ModelListJson({{"reflection-70b", 1, 8192}}));
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["data"][0], (Json{{"id", "reflection-70b"},
                                   {"object", "model"},
                                   {"created", 1},
                                   {"owned_by", "reflect"},
                                   {"max_model_len", 8192}}));
}

TEST(HttpErrorsTest, StatusMapping) {
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kDeadlineExceeded), 504);
}

TEST(HttpErrorsTest, ErrorBodyAndRetryAfter) {
  absl::Status status = absl::ResourceExhaustedError("queue full");
  SetRetryAfter(std::chrono::milliseconds(1500), status);
  EXPECT_EQ(RetryAfter(status), std::chrono::milliseconds(1500));
  const HttpResponse response = ErrorResponse(status);
  EXPECT_EQ(response.status, 429);
  ASSERT_EQ(response.headers.size(), 1u);
  EXPECT_EQ(response.headers[0].name, "Retry-After");
  EXPECT_EQ(response.headers[0].value, "2");
  EXPECT_EQ(Json::parse(response.body), (Json{{"error",
                                               {{"message", "queue full"},
                                                {"type", "rate_limit_error"},
                                                {"param", nullptr},
                                                {"code", "resource_exhausted"}}}}));

  const Json field = Json::parse(ErrorBody(InvalidFieldError("n", "too big")));
  EXPECT_EQ(field["error"]["type"], "invalid_request_error");
  EXPECT_EQ(field["error"]["param"], "n");
  EXPECT_EQ(field["error"]["code"], "invalid_argument");
}

}  // namespace
}  // namespace reflect
