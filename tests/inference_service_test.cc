// The public gRPC API end to end: a real reflect-worker process on the tiny model, the real
// RequestRouter in-process, InferenceService on a real gRPC server (port 0), and a real stub.
// Covers ListModels, Tokenize, a streamed Chat (sections, request id, one final Finish with
// usage, timings and logprobs), greedy Chat = Tokenize + Generate(token ids), seed replay, stop
// strings, trace modes, validation errors naming their field, API keys, cancellation and
// deadlines freeing the router.
#include "router/inference_service.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/chat_template.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "reflect/v1/inference.grpc.pb.h"
#include "router/generation_pipeline.h"
#include "router/http_errors.h"
#include "tests/support/child_process.h"
#include "tests/support/router_over_worker.h"

namespace reflect {
namespace {

using testing::WorkerProcess;

constexpr absl::Duration kTimeout = absl::Seconds(60);
constexpr int64_t kContextLength = 4096;
constexpr char kApiKey[] = "test-key-123";

// A gRPC server with one InferenceService on 127.0.0.1, port 0.
struct ServedInference {
  std::unique_ptr<InferenceService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Inference::Stub> stub;
};

ServedInference Serve(RequestRouter& router, const Tokenizer& tokenizer, ApiKeys keys) {
  ServedInference served;
  InferenceServiceOptions options;
  options.limits.served_model_names = {"tiny", "tiny-alias"};
  options.limits.context_length_tokens = kContextLength;
  options.limits.vocab_size = tokenizer.vocab_size();
  options.api_keys = std::move(keys);
  served.service =
      std::make_unique<InferenceService>(router, tokenizer, std::move(options), nullptr);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(served.service.get());
  served.server = builder.BuildAndStart();
  EXPECT_NE(port, 0);
  served.stub = v1::Inference::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  return served;
}

// Everything a stream returned.
struct StreamResult {
  std::vector<v1::GenerationChunk> chunks;
  grpc::Status status;
  std::multimap<std::string, std::string> trailing_metadata;

  std::string Text() const {
    std::string text;
    for (const v1::GenerationChunk& chunk : chunks) text += chunk.text();
    return text;
  }
  std::vector<int32_t> TokenIds() const {
    std::vector<int32_t> ids;
    for (const v1::GenerationChunk& chunk : chunks) {
      ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    }
    return ids;
  }
  const v1::Finish& Finish() const { return chunks.back().finish(); }
};

template <typename Reader>
StreamResult ReadAll(grpc::ClientContext& context, Reader reader) {
  StreamResult result;
  v1::GenerationChunk chunk;
  while (reader->Read(&chunk)) result.chunks.push_back(chunk);
  result.status = reader->Finish();
  for (const auto& [key, value] : context.GetServerTrailingMetadata()) {
    result.trailing_metadata.emplace(std::string(key.data(), key.size()),
                                     std::string(value.data(), value.size()));
  }
  return result;
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

class InferenceServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<testing::RouterOverWorker>> started =
        testing::StartRouterOverWorker();
    ASSERT_TRUE(started.ok()) << started.status();
    started_ = started->release();
    worker_ = started_->worker.get();
    tokenizer_ = started_->tokenizer.get();
    router_ = started_->router.get();
    served_ = new ServedInference(Serve(*router_, *tokenizer_, ApiKeys()));
  }

  static void TearDownTestSuite() {
    if (served_ != nullptr) served_->server->Shutdown(absl::ToChronoTime(absl::Now()));
    delete served_;
    delete started_;
  }

  static v1::Inference::Stub& Stub() { return *served_->stub; }

  static StreamResult Generate(const v1::GenerateRequest& request,
                               absl::Duration timeout = kTimeout) {
    grpc::ClientContext context;
    SetDeadline(context, timeout);
    return ReadAll(context, Stub().Generate(&context, request));
  }
  static StreamResult Chat(const v1::ChatRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context, kTimeout);
    return ReadAll(context, Stub().Chat(&context, request));
  }

  // Waits until the router has nothing queued or running.
  static bool WaitForIdleRouter() {
    const absl::Time deadline = absl::Now() + kTimeout;
    while (absl::Now() < deadline) {
      const RouterLoad load = router_->Load();
      if (load.queued_requests == 0 && load.running_requests == 0) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  static v1::ChatRequest SimpleChat(int max_tokens) {
    v1::ChatRequest request;
    v1::ChatMessage& message = *request.add_messages();
    message.set_role(v1::ROLE_USER);
    message.set_content("How many r are in strawberry?");
    request.set_add_reflection_system_prompt(true);
    request.mutable_sampling()->set_temperature(0);
    request.mutable_sampling()->set_max_tokens(max_tokens);
    return request;
  }

  static inline testing::RouterOverWorker* started_ = nullptr;
  // Views into started_.
  static inline WorkerProcess* worker_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline RequestRouter* router_ = nullptr;
  static inline ServedInference* served_ = nullptr;
};

// The stream's shape: a request id on the first chunk only, a section on every chunk, exactly one
// finish, on the last chunk.
void ExpectWellFormed(const StreamResult& result, const std::string& request_id) {
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_FALSE(result.chunks.empty());
  for (size_t index = 0; index < result.chunks.size(); ++index) {
    const v1::GenerationChunk& chunk = result.chunks[index];
    EXPECT_NE(chunk.section(), v1::SECTION_UNSPECIFIED) << "chunk " << index;
    EXPECT_EQ(chunk.has_finish(), index + 1 == result.chunks.size()) << "chunk " << index;
    if (index == 0) {
      if (!request_id.empty()) {
        EXPECT_EQ(chunk.request_id(), request_id);
      }
      EXPECT_FALSE(chunk.request_id().empty());
    } else {
      EXPECT_TRUE(chunk.request_id().empty()) << "chunk " << index;
    }
  }
  const v1::Usage& usage = result.Finish().usage();
  EXPECT_EQ(usage.thinking_tokens() + usage.reflection_tokens() + usage.output_tokens(),
            usage.completion_tokens());
}

TEST_F(InferenceServiceTest, ListModelsReportsTheServedNames) {
  grpc::ClientContext context;
  v1::ListModelsResponse response;
  ASSERT_TRUE(Stub().ListModels(&context, v1::ListModelsRequest(), &response).ok());
  ASSERT_EQ(response.models_size(), 2);
  EXPECT_EQ(response.models(0).name(), "tiny");
  EXPECT_EQ(response.models(1).name(), "tiny-alias");
  EXPECT_EQ(response.models(0).context_length_tokens(), kContextLength);
  EXPECT_EQ(response.models(0).ready_replicas(), 1);
}

TEST_F(InferenceServiceTest, TokenizeTextAndChat) {
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("Hello, world<|eot_id|>");
    v1::TokenizeResponse response;
    ASSERT_TRUE(Stub().Tokenize(&context, request, &response).ok());
    const std::vector<int32_t> expected = tokenizer_->Encode("Hello, world<|eot_id|>");
    EXPECT_EQ(std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end()),
              expected);
    ASSERT_EQ(response.token_bytes_size(), response.token_ids_size());
    std::string joined;
    for (const std::string& bytes : response.token_bytes()) joined += bytes;
    EXPECT_EQ(joined, "Hello, world<|eot_id|>");
    EXPECT_TRUE(response.rendered_prompt().empty());
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    v1::ChatMessage& message = *request.mutable_chat()->add_messages();
    message.set_role(v1::ROLE_USER);
    message.set_content("Hi");
    request.set_add_reflection_system_prompt(true);
    v1::TokenizeResponse response;
    ASSERT_TRUE(Stub().Tokenize(&context, request, &response).ok());
    const std::string rendered =
        RenderLlama31Chat({{"system", std::string(kReflectionSystemPrompt)}, {"user", "Hi"}}, true);
    EXPECT_EQ(response.rendered_prompt(), rendered);
    EXPECT_EQ(std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end()),
              tokenizer_->Encode(rendered));
  }
}

TEST_F(InferenceServiceTest, ChatStreamsLabelledChunksAndOneFinish) {
  v1::ChatRequest request = SimpleChat(24);
  request.set_request_id("chat-request-1");
  request.mutable_sampling()->set_logprobs(2);
  const StreamResult result = Chat(request);
  ExpectWellFormed(result, "chat-request-1");
  const v1::Finish& finish = result.Finish();
  EXPECT_TRUE(finish.reason() == v1::FINISH_REASON_LENGTH ||
              finish.reason() == v1::FINISH_REASON_EOS)
      << finish.reason();
  const std::vector<int32_t> ids = result.TokenIds();
  EXPECT_EQ(static_cast<int32_t>(ids.size()), finish.usage().completion_tokens());
  if (finish.reason() == v1::FINISH_REASON_LENGTH) {
    EXPECT_EQ(ids.size(), 24u);
  }

  // The prompt is the template with the reflection system prompt, as Tokenize renders it.
  const std::string rendered = RenderLlama31Chat(
      {{"system", std::string(kReflectionSystemPrompt)}, {"user", "How many r are in strawberry?"}},
      true);
  EXPECT_EQ(finish.usage().prompt_tokens(),
            static_cast<int32_t>(tokenizer_->Encode(rendered).size()));

  // Per section, the ids in the chunks are the tokens counted there.
  std::map<v1::Section, int32_t> ids_by_section;
  for (const v1::GenerationChunk& chunk : result.chunks) {
    ids_by_section[chunk.section()] += chunk.token_ids_size();
    ASSERT_EQ(chunk.logprobs_size(), chunk.token_ids_size());
    for (int index = 0; index < chunk.logprobs_size(); ++index) {
      const v1::TokenLogprobs& logprobs = chunk.logprobs(index);
      EXPECT_EQ(logprobs.token_id(), chunk.token_ids(index));
      EXPECT_LE(logprobs.logprob(), 0.0);
      // The alternatives asked for, most likely first; greedy sampled the first one, whose
      // logprob is the token's own.
      ASSERT_EQ(logprobs.top_size(), 2);
      EXPECT_FALSE(logprobs.top(0).token_bytes().empty());
      EXPECT_EQ(logprobs.top(0).token_id(), logprobs.token_id());
      EXPECT_EQ(logprobs.top(0).logprob(), logprobs.logprob());
      EXPECT_GE(logprobs.top(0).logprob(), logprobs.top(1).logprob());
      EXPECT_NE(logprobs.top(1).token_id(), logprobs.token_id());
      EXPECT_LE(logprobs.top(1).logprob(), 0.0);
    }
  }
  EXPECT_EQ(ids_by_section[v1::SECTION_THINKING], finish.usage().thinking_tokens());
  EXPECT_EQ(ids_by_section[v1::SECTION_REFLECTION], finish.usage().reflection_tokens());
  EXPECT_EQ(ids_by_section[v1::SECTION_OUTPUT], finish.usage().output_tokens());

  // The text and sections are what the router's pipeline makes of these ids.
  GenerationPipeline pipeline(*tokenizer_, {});
  std::vector<ReplicaToken> tokens;
  for (size_t index = 0; index < ids.size(); ++index) {
    tokens.push_back(ReplicaToken{static_cast<int64_t>(index), ids[index], 0.0f, {}});
  }
  std::string expected_text;
  for (const OutputPiece& piece : pipeline.PushTokens(tokens)) expected_text += piece.text;
  for (const OutputPiece& piece : pipeline.Finish()) expected_text += piece.text;
  EXPECT_EQ(result.Text(), expected_text);
  EXPECT_EQ(pipeline.section_counts().output_tokens, finish.usage().output_tokens());

  const v1::Timings& timings = finish.timings();
  EXPECT_GE(timings.queue_seconds(), 0.0);
  EXPECT_GE(timings.time_to_first_token_seconds(), timings.queue_seconds());
  EXPECT_GE(timings.e2e_seconds(), timings.time_to_first_token_seconds());
  EXPECT_EQ(finish.usage().output_tokens() > 0, timings.has_time_to_first_output_token_seconds());
}

TEST_F(InferenceServiceTest, GreedyChatEqualsTokenizeThenGenerateWithTokenIds) {
  const v1::ChatRequest chat = SimpleChat(16);
  const StreamResult chat_result = Chat(chat);
  ExpectWellFormed(chat_result, "");

  grpc::ClientContext context;
  v1::TokenizeRequest tokenize;
  *tokenize.mutable_chat()->mutable_messages() = chat.messages();
  tokenize.set_add_reflection_system_prompt(true);
  v1::TokenizeResponse tokenized;
  ASSERT_TRUE(Stub().Tokenize(&context, tokenize, &tokenized).ok());

  v1::GenerateRequest generate;
  *generate.mutable_token_ids()->mutable_ids() = tokenized.token_ids();
  *generate.mutable_sampling() = chat.sampling();
  const StreamResult generate_result = Generate(generate);
  ExpectWellFormed(generate_result, "");
  EXPECT_EQ(generate_result.TokenIds(), chat_result.TokenIds());
  EXPECT_EQ(generate_result.Text(), chat_result.Text());

  // The rendered text tokenizes to the same ids, so Generate(text) agrees too.
  v1::GenerateRequest by_text;
  by_text.set_text(tokenized.rendered_prompt());
  *by_text.mutable_sampling() = chat.sampling();
  EXPECT_EQ(Generate(by_text).TokenIds(), chat_result.TokenIds());
}

TEST_F(InferenceServiceTest, ServerChosenSeedReplays) {
  v1::GenerateRequest request;
  request.set_text("Once upon a time");
  request.mutable_sampling()->set_temperature(1.0);
  request.mutable_sampling()->set_max_tokens(12);
  const StreamResult first = Generate(request);
  ExpectWellFormed(first, "");
  request.mutable_sampling()->set_seed(first.Finish().seed());
  const StreamResult replay = Generate(request);
  ExpectWellFormed(replay, "");
  EXPECT_EQ(replay.TokenIds(), first.TokenIds());
  EXPECT_EQ(replay.Finish().seed(), first.Finish().seed());
}

TEST_F(InferenceServiceTest, StopStringEndsTheStreamBeforeIt) {
  v1::GenerateRequest request;
  request.set_text("The quick brown fox");
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_max_tokens(32);
  request.mutable_reflection()->set_trace_mode(v1::TRACE_MODE_VERBATIM);
  const StreamResult full = Generate(request);
  ExpectWellFormed(full, "");
  const std::string text = full.Text();
  ASSERT_GE(text.size(), 12u) << "the model wrote too little text to pick a stop string";
  // A stop string from the middle of the text, on character boundaries.
  size_t start = text.size() / 2;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t end = start + 3;
  while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
  const std::string stop = text.substr(start, end - start);
  request.mutable_sampling()->add_stop(stop);
  const StreamResult stopped = Generate(request);
  ExpectWellFormed(stopped, "");
  EXPECT_EQ(stopped.Finish().reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(stopped.Finish().matched_stop(), stop);
  EXPECT_EQ(stopped.Text(), text.substr(0, text.find(stop)));
  EXPECT_LT(stopped.Finish().usage().completion_tokens(),
            full.Finish().usage().completion_tokens());
}

TEST_F(InferenceServiceTest, OutputOnlySendsOnlyOutputChunks) {
  v1::ChatRequest request = SimpleChat(20);
  request.mutable_reflection()->set_trace_mode(v1::TRACE_MODE_OUTPUT_ONLY);
  const StreamResult result = Chat(request);
  ExpectWellFormed(result, "");
  for (const v1::GenerationChunk& chunk : result.chunks) {
    EXPECT_EQ(chunk.section(), v1::SECTION_OUTPUT);
  }
  EXPECT_EQ(result.TokenIds().size(), static_cast<size_t>(result.Finish().usage().output_tokens()));
}

struct InvalidCase {
  std::string name;
  std::function<void(v1::GenerateRequest&)> change;
  grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
  std::string field;  // the message starts with it
};

TEST_F(InferenceServiceTest, InvalidRequestsNameTheirField) {
  const std::vector<InvalidCase> cases = {
      {"unknown model", [](v1::GenerateRequest& r) { r.set_model("gpt-5"); },
       grpc::StatusCode::NOT_FOUND, "model"},
      {"no prompt", [](v1::GenerateRequest& r) { r.clear_prompt(); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt"},
      {"empty text", [](v1::GenerateRequest& r) { r.set_text(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "text"},
      {"empty token ids", [](v1::GenerateRequest& r) { r.mutable_token_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids.ids"},
      {"token id outside the vocabulary",
       [](v1::GenerateRequest& r) {
         r.mutable_token_ids()->add_ids(9906);
         r.mutable_token_ids()->add_ids(999999);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids.ids[1]"},
      {"negative temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-0.5); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"NaN temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(std::nan("")); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"top_p zero", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"negative top_k", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(-3); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_k"},
      {"min_p above one", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_min_p(1.5); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.min_p"},
      {"zero repetition penalty",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_repetition_penalty(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"frequency penalty too high",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_frequency_penalty(2.5); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.frequency_penalty"},
      {"presence penalty too low",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_presence_penalty(-3); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.presence_penalty"},
      {"zero max_tokens", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_max_tokens(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.max_tokens"},
      {"max_tokens past the context",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_max_tokens(kContextLength); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.max_tokens"},
      {"empty stop string", [](v1::GenerateRequest& r) { r.mutable_sampling()->add_stop(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.stop[0]"},
      {"too many stop strings",
       [](v1::GenerateRequest& r) {
         for (int index = 0; index < 65; ++index) {
           r.mutable_sampling()->add_stop(absl::StrCat("stop", index));
         }
       },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.stop"},
      {"stop token outside the vocabulary",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->add_stop_token_ids(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.stop_token_ids[0]"},
      {"too many logprobs", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_logprobs(21); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.logprobs"},
      {"unknown trace mode",
       [](v1::GenerateRequest& r) {
         r.mutable_reflection()->set_trace_mode(static_cast<v1::TraceMode>(9));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "reflection.trace_mode"},
      {"negative thinking budget",
       [](v1::GenerateRequest& r) { r.mutable_reflection()->set_thinking_budget_tokens(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "reflection.thinking_budget_tokens"},
      {"priority too high", [](v1::GenerateRequest& r) { r.set_priority(101); },
       grpc::StatusCode::INVALID_ARGUMENT, "priority"},
      {"request id too long",
       [](v1::GenerateRequest& r) { r.set_request_id(std::string(129, 'a')); },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id"},
      {"request id not printable", [](v1::GenerateRequest& r) { r.set_request_id("id\nline"); },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id"},
  };
  for (const InvalidCase& invalid : cases) {
    SCOPED_TRACE(invalid.name);
    v1::GenerateRequest request;
    request.set_text("Hello");
    request.mutable_sampling()->set_max_tokens(4);
    invalid.change(request);
    const StreamResult result = Generate(request);
    EXPECT_TRUE(result.chunks.empty());
    EXPECT_EQ(result.status.error_code(), invalid.code) << result.status.error_message();
    EXPECT_TRUE(result.status.error_message().starts_with(invalid.field + ": "))
        << result.status.error_message();
  }

  // Chat's own fields.
  v1::ChatRequest no_messages;
  const StreamResult empty = Chat(no_messages);
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(empty.status.error_message().starts_with("messages: "))
      << empty.status.error_message();
  v1::ChatRequest bad_role = SimpleChat(4);
  bad_role.add_messages()->set_content("who am I?");
  const StreamResult role = Chat(bad_role);
  EXPECT_EQ(role.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(role.status.error_message().starts_with("messages[1].role: "))
      << role.status.error_message();

  // Tokenize with nothing to tokenize.
  grpc::ClientContext context;
  v1::TokenizeResponse response;
  const grpc::Status tokenize = Stub().Tokenize(&context, v1::TokenizeRequest(), &response);
  EXPECT_EQ(tokenize.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(tokenize.error_message().starts_with("input: ")) << tokenize.error_message();
}

TEST_F(InferenceServiceTest, ApiKeyIsRequiredWhenConfigured) {
  ServedInference secured = Serve(*router_, *tokenizer_, ApiKeys({kApiKey}));
  v1::GenerateRequest generate;
  generate.set_text("Hello");
  generate.mutable_sampling()->set_max_tokens(2);

  for (const std::string& authorization :
       {std::string(), std::string("Bearer wrong-key"), std::string("Bearer ") + kApiKey}) {
    SCOPED_TRACE(authorization);
    const grpc::StatusCode expected = authorization == std::string("Bearer ") + kApiKey
                                          ? grpc::StatusCode::OK
                                          : grpc::StatusCode::UNAUTHENTICATED;
    {
      grpc::ClientContext context;
      if (!authorization.empty()) context.AddMetadata("authorization", authorization);
      SetDeadline(context, kTimeout);
      const StreamResult result = ReadAll(context, secured.stub->Generate(&context, generate));
      EXPECT_EQ(result.status.error_code(), expected) << result.status.error_message();
      EXPECT_EQ(result.chunks.empty(), expected != grpc::StatusCode::OK);
    }
    {
      grpc::ClientContext context;
      if (!authorization.empty()) context.AddMetadata("authorization", authorization);
      SetDeadline(context, kTimeout);
      const StreamResult result = ReadAll(context, secured.stub->Chat(&context, SimpleChat(2)));
      EXPECT_EQ(result.status.error_code(), expected);
    }
    {
      grpc::ClientContext context;
      if (!authorization.empty()) context.AddMetadata("authorization", authorization);
      v1::TokenizeRequest request;
      request.set_text("Hi");
      v1::TokenizeResponse response;
      EXPECT_EQ(secured.stub->Tokenize(&context, request, &response).error_code(), expected);
    }
    {
      grpc::ClientContext context;
      if (!authorization.empty()) context.AddMetadata("authorization", authorization);
      v1::ListModelsResponse response;
      EXPECT_EQ(secured.stub->ListModels(&context, v1::ListModelsRequest(), &response).error_code(),
                expected);
    }
  }
  secured.server->Shutdown(absl::ToChronoTime(absl::Now()));
}

TEST_F(InferenceServiceTest, CancellingMidStreamCancelsTheRequest) {
  v1::GenerateRequest request;
  request.set_text("Count forever:");
  request.mutable_sampling()->set_ignore_eos(true);
  request.mutable_sampling()->set_max_tokens(3000);
  grpc::ClientContext context;
  SetDeadline(context, kTimeout);
  std::unique_ptr<grpc::ClientReader<v1::GenerationChunk>> reader =
      Stub().Generate(&context, request);
  v1::GenerationChunk chunk;
  int received = 0;
  while (received < 3 && reader->Read(&chunk)) ++received;
  ASSERT_EQ(received, 3);
  EXPECT_GT(router_->Load().running_requests, 0);
  context.TryCancel();
  while (reader->Read(&chunk)) {
    EXPECT_FALSE(chunk.has_finish());
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForIdleRouter());
}

TEST_F(InferenceServiceTest, DeadlineEndsALongRequest) {
  v1::GenerateRequest request;
  request.set_text("Count forever:");
  request.mutable_sampling()->set_ignore_eos(true);
  request.mutable_sampling()->set_max_tokens(3000);
  const absl::Time start = absl::Now();
  const StreamResult result = Generate(request, absl::Milliseconds(500));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << result.status.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_TRUE(WaitForIdleRouter());
}

// What a client of gRPC's rich error model does: error_details() (trailer grpc-status-details-bin)
// → google.rpc.Status with the call's code and message → its RetryInfo detail, in milliseconds.
std::optional<int64_t> RetryDelayMilliseconds(const grpc::Status& status) {
  google::rpc::Status details;
  if (status.error_details().empty() || !details.ParseFromString(status.error_details())) {
    return std::nullopt;
  }
  EXPECT_EQ(details.code(), static_cast<int32_t>(status.error_code()));
  EXPECT_EQ(details.message(), status.error_message());
  for (const google::protobuf::Any& detail : details.details()) {
    EXPECT_EQ(detail.type_url(), "type.googleapis.com/google.rpc.RetryInfo");
    google::rpc::RetryInfo retry_info;
    if (!detail.UnpackTo(&retry_info)) continue;
    return retry_info.retry_delay().seconds() * 1000 + retry_info.retry_delay().nanos() / 1'000'000;
  }
  return std::nullopt;
}

TEST(GrpcStatusWithDetailsTest, RetryInfoOnlyWithAHint) {
  absl::Status hinted = absl::ResourceExhaustedError("queue full");
  SetRetryAfter(std::chrono::milliseconds(2'345), hinted);
  const grpc::Status with = GrpcStatusWithDetails(hinted);
  EXPECT_EQ(with.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(with.error_message(), "queue full");
  EXPECT_EQ(RetryDelayMilliseconds(with), 2'345);
  const grpc::Status without = GrpcStatusWithDetails(absl::UnavailableError("no replica"));
  EXPECT_EQ(without.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(without.error_details().empty());
  EXPECT_TRUE(GrpcStatusWithDetails(absl::OkStatus()).ok());
}

TEST_F(InferenceServiceTest, OverloadIsResourceExhaustedWithARetryHint) {
  // A router that admits one request at a time, on the same replica.
  RequestRouterOptions options;
  options.replica_addresses = {worker_->address()};
  options.admission.max_in_flight_requests = 1;
  absl::StatusOr<std::unique_ptr<RequestRouter>> router =
      RequestRouter::Create(options, *tokenizer_, nullptr);
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE((*router)->WaitUntilReady(kTimeout));
  ServedInference small = Serve(**router, *tokenizer_, ApiKeys());

  v1::GenerateRequest long_request;
  long_request.set_text("Count forever:");
  long_request.mutable_sampling()->set_ignore_eos(true);
  long_request.mutable_sampling()->set_max_tokens(3000);
  grpc::ClientContext long_context;
  SetDeadline(long_context, kTimeout);
  std::unique_ptr<grpc::ClientReader<v1::GenerationChunk>> reader =
      small.stub->Generate(&long_context, long_request);
  v1::GenerationChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));  // admitted and running

  v1::GenerateRequest second;
  second.set_text("Hello");
  second.mutable_sampling()->set_max_tokens(2);
  grpc::ClientContext context;
  SetDeadline(context, kTimeout);
  const StreamResult refused = ReadAll(context, small.stub->Generate(&context, second));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  ASSERT_EQ(refused.trailing_metadata.count("retry-after-ms"), 1u);
  const int64_t retry_after_ms =
      std::stoll(refused.trailing_metadata.find("retry-after-ms")->second);
  EXPECT_GT(retry_after_ms, 0);
  // The same hint in the standard rich error model, as a client library decodes it.
  const std::optional<int64_t> retry_delay_ms = RetryDelayMilliseconds(refused.status);
  ASSERT_TRUE(retry_delay_ms.has_value());
  EXPECT_EQ(*retry_delay_ms, retry_after_ms);

  long_context.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  small.server->Shutdown(absl::ToChronoTime(absl::Now()));
}

TEST_F(InferenceServiceTest, ConcurrentStreamsEqualTheirAloneRuns) {
  std::vector<v1::GenerateRequest> requests;
  for (int index = 0; index < 6; ++index) {
    v1::GenerateRequest request;
    request.set_text(absl::StrCat("Request number ", index, " says"));
    request.mutable_sampling()->set_temperature(index % 2 == 0 ? 0.0 : 0.9);
    request.mutable_sampling()->set_seed(1000 + index);
    request.mutable_sampling()->set_max_tokens(10 + index);
    requests.push_back(request);
  }
  std::vector<std::vector<int32_t>> alone;
  for (const v1::GenerateRequest& request : requests) alone.push_back(Generate(request).TokenIds());
  std::vector<std::vector<int32_t>> together(requests.size());
  std::vector<std::thread> threads;
  for (size_t index = 0; index < requests.size(); ++index) {
    threads.emplace_back([&, index] { together[index] = Generate(requests[index]).TokenIds(); });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(together, alone);
}

}  // namespace
}  // namespace reflect
