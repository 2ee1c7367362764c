#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "reflect/internal/v1/replica.grpc.pb.h"
#include "reflect/v1/inference.grpc.pb.h"

namespace reflect {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;
using google::protobuf::util::MessageDifferencer;

// Serializes `message`, parses it back into a fresh one and expects the two to be equal.
template <typename Message>
Message RoundTrip(const Message& message) {
  const std::string wire = message.SerializeAsString();
  Message parsed;
  EXPECT_TRUE(parsed.ParseFromString(wire));
  EXPECT_TRUE(MessageDifferencer::Equals(message, parsed)) << message.DebugString();
  return parsed;
}

TEST(ProtoRoundTripTest, GenerateRequest) {
  v1::GenerateRequest request;
  request.set_model("reflection-llama-3.1-70b");
  request.set_text("<|begin_of_text|>Why is the sky blue?");
  v1::SamplingParams& sampling = *request.mutable_sampling();
  sampling.set_temperature(0.0);  // explicitly greedy, distinct from unset
  sampling.set_top_k(40);
  sampling.add_stop("</output>");
  sampling.add_stop_token_ids(128009);
  sampling.set_logprobs(5);
  request.mutable_reflection()->set_trace_mode(v1::TRACE_MODE_OUTPUT_ONLY);
  request.mutable_reflection()->set_thinking_budget_tokens(2048);
  request.set_priority(-10);
  request.set_request_id("request-1");

  const v1::GenerateRequest parsed = RoundTrip(request);
  EXPECT_EQ(parsed.prompt_case(), v1::GenerateRequest::kText);
  EXPECT_TRUE(parsed.sampling().has_temperature());
  EXPECT_EQ(parsed.sampling().temperature(), 0.0);
  EXPECT_FALSE(parsed.sampling().has_top_p());
  EXPECT_FALSE(parsed.sampling().has_max_tokens());

  v1::GenerateRequest by_ids;
  by_ids.mutable_token_ids()->add_ids(128000);
  by_ids.mutable_token_ids()->add_ids(9906);
  EXPECT_EQ(RoundTrip(by_ids).token_ids().ids_size(), 2);
}

TEST(ProtoRoundTripTest, ChatRequestAndTokenize) {
  v1::ChatRequest request;
  v1::ChatMessage& message = *request.add_messages();
  message.set_role(v1::ROLE_USER);
  message.set_content("How many r's are in strawberry? 🍓");
  request.set_add_reflection_system_prompt(true);
  EXPECT_EQ(RoundTrip(request).messages(0).role(), v1::ROLE_USER);

  v1::TokenizeRequest tokenize;
  *tokenize.mutable_chat()->add_messages() = message;
  EXPECT_EQ(RoundTrip(tokenize).input_case(), v1::TokenizeRequest::kChat);

  v1::TokenizeResponse tokens;
  tokens.add_token_ids(128000);
  tokens.add_token_bytes(std::string("\xF0\x9F", 2));  // part of a character: bytes, not string
  RoundTrip(tokens);
}

TEST(ProtoRoundTripTest, GenerationChunks) {
  v1::GenerationChunk first;
  first.add_token_ids(27);
  first.set_text("Let me think");
  first.set_section(v1::SECTION_THINKING);
  first.set_request_id("request-1");
  v1::TokenLogprobs& logprobs = *first.add_logprobs();
  logprobs.set_token_id(27);
  logprobs.set_logprob(-0.25);
  logprobs.add_top()->set_token_bytes("<");
  EXPECT_FALSE(RoundTrip(first).has_finish());

  v1::GenerationChunk last;
  last.set_section(v1::SECTION_OUTPUT);
  v1::Finish& finish = *last.mutable_finish();
  finish.set_reason(v1::FINISH_REASON_STOP_STRING);
  finish.set_matched_stop("</output>");
  finish.set_seed(0xFFFFFFFFFFFFFFFFull);
  v1::Usage& usage = *finish.mutable_usage();
  usage.set_prompt_tokens(120);
  usage.set_completion_tokens(30);
  usage.set_thinking_tokens(20);
  usage.set_reflection_tokens(6);
  usage.set_output_tokens(4);
  usage.set_reflections(1);
  finish.mutable_timings()->set_time_to_first_token_seconds(0.05);
  finish.mutable_timings()->set_time_to_first_output_token_seconds(2.5);
  const v1::GenerationChunk parsed = RoundTrip(last);
  ASSERT_TRUE(parsed.has_finish());
  EXPECT_EQ(parsed.finish().seed(), 0xFFFFFFFFFFFFFFFFull);
  EXPECT_TRUE(parsed.finish().timings().has_time_to_first_output_token_seconds());
}

TEST(ProtoRoundTripTest, InternalMessages) {
  internal::v1::GenerateRequest start;
  internal::v1::StartGeneration& generation = *start.mutable_start();
  generation.set_request_id("request-1");
  for (int32_t id : {128000, 128006, 882, 128007}) generation.add_prompt_token_ids(id);
  generation.mutable_sampling()->set_seed(42);
  generation.mutable_sampling()->set_max_tokens(4096);
  generation.set_priority(5);
  generation.mutable_timeout()->set_seconds(30);
  EXPECT_EQ(RoundTrip(start).message_case(), internal::v1::GenerateRequest::kStart);

  internal::v1::GenerateRequest force;
  force.mutable_force()->set_at_index(2048);
  force.mutable_force()->add_token_ids(524);
  EXPECT_EQ(RoundTrip(force).force().at_index(), 2048);

  internal::v1::GenerateResponse response;
  response.set_first_index(7);
  response.add_token_ids(11);
  response.add_logprobs(-1.5f);
  response.add_top_logprobs()->add_token_ids(11);
  response.mutable_finish()->set_reason(internal::v1::FINISH_REASON_LENGTH);
  RoundTrip(response);

  internal::v1::LoadReport load;
  load.set_replica_id("replica-0");
  load.set_running_requests(12);
  load.set_kv_cache_usage_ratio(0.75);
  internal::v1::PrefixCacheSummary& prefix = *load.mutable_prefix_cache();
  prefix.set_hash_function(internal::v1::BLOCK_HASH_FUNCTION_FNV1A_64_CHAINED);
  prefix.set_probe_count(7);
  prefix.set_bits(std::string(64, '\0'));
  EXPECT_EQ(RoundTrip(load).prefix_cache().bits().size(), 64u);
}

struct ExpectedMethod {
  std::string name;
  bool client_streaming;
  bool server_streaming;
};

void ExpectService(const std::string& full_name, const std::vector<ExpectedMethod>& methods) {
  const ServiceDescriptor* service = DescriptorPool::generated_pool()->FindServiceByName(full_name);
  ASSERT_NE(service, nullptr) << full_name;
  ASSERT_EQ(service->method_count(), static_cast<int>(methods.size())) << full_name;
  for (const ExpectedMethod& expected : methods) {
    const MethodDescriptor* method = service->FindMethodByName(expected.name);
    ASSERT_NE(method, nullptr) << full_name << "." << expected.name;
    EXPECT_EQ(method->client_streaming(), expected.client_streaming) << expected.name;
    EXPECT_EQ(method->server_streaming(), expected.server_streaming) << expected.name;
  }
}

TEST(ProtoDescriptorTest, ServicesHaveTheExpectedMethods) {
  ExpectService("reflect.v1.Inference", {{"Generate", false, true},
                                         {"Chat", false, true},
                                         {"Tokenize", false, false},
                                         {"ListModels", false, false}});
  ExpectService("reflect.internal.v1.Replica",
                {{"Generate", true, true}, {"GetLoad", false, false}});
  ExpectService("grpc.health.v1.Health", {{"Check", false, false}, {"Watch", false, true}});
  // The generated stubs name the same services.
  EXPECT_STREQ(v1::Inference::service_full_name(), "reflect.v1.Inference");
  EXPECT_STREQ(internal::v1::Replica::service_full_name(), "reflect.internal.v1.Replica");
  EXPECT_STREQ(grpc::health::v1::Health::service_full_name(), "grpc.health.v1.Health");
}

// House rule: every enum of our packages starts with an UNSPECIFIED zero value.
TEST(ProtoDescriptorTest, EnumsStartWithUnspecified) {
  for (const char* file_name :
       {"reflect/v1/inference.proto", "reflect/internal/v1/replica.proto"}) {
    const google::protobuf::FileDescriptor* file =
        DescriptorPool::generated_pool()->FindFileByName(file_name);
    ASSERT_NE(file, nullptr) << file_name;
    for (int index = 0; index < file->enum_type_count(); ++index) {
      const google::protobuf::EnumDescriptor* enumeration = file->enum_type(index);
      const google::protobuf::EnumValueDescriptor* zero = enumeration->FindValueByNumber(0);
      ASSERT_NE(zero, nullptr) << enumeration->full_name();
      EXPECT_TRUE(absl::EndsWith(zero->name(), "_UNSPECIFIED")) << zero->full_name();
    }
  }
}

TEST(ProtoDescriptorTest, ServerReflectionDescriptorsArePresent) {
  // Registers the reflection plugin for servers built later, and links grpc++_reflection, whose
  // descriptors grpcurl's `list` and `describe` go through.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  const ServiceDescriptor* reflection = DescriptorPool::generated_pool()->FindServiceByName(
      "grpc.reflection.v1alpha.ServerReflection");
  ASSERT_NE(reflection, nullptr);
  EXPECT_NE(reflection->FindMethodByName("ServerReflectionInfo"), nullptr);
}

}  // namespace
}  // namespace reflect
