// Runs the real `reflect bench` binary against the generated tiny model: a tensor-parallel run
// reports its shape and the all-reduce share, and a shape that does not divide the model is a bad
// input, not a hang.

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr int kBadInput = 2;

std::string TinyModel() { return testing::TestModelPath("tiny").string(); }

TEST(BenchCliTest, TensorParallelReportsTheAllReduceShare) {
  const testing::ProcessResult output = testing::RunReflect(
      "bench", {"--model", TinyModel(), "--tensor_parallel", "2", "--batch_sizes", "1,4",
                "--prompt_tokens", "16", "--decode_tokens", "4", "--threads", "2", "--json"});
  ASSERT_EQ(output.exit_code, 0) << output.standard_error;
  const nlohmann::json report = nlohmann::json::parse(output.standard_output);
  EXPECT_EQ(report.at("tensor_parallel"), 2);
  EXPECT_EQ(report.at("pipeline_parallel"), 1);
  EXPECT_EQ(report.at("threads_per_rank"), 1);
  ASSERT_THAT(report.at("decode"), SizeIs(2));
  for (const nlohmann::json& decode : report.at("decode")) {
    EXPECT_GT(decode.at("tokens_per_second").get<double>(), 0.0);
    const double share = decode.at("allreduce_share").get<double>();
    EXPECT_GT(share, 0.0) << decode;
    EXPECT_LT(share, 1.0) << decode;
    EXPECT_FALSE(decode.contains("pipeline_wait_share"));
  }
}

TEST(BenchCliTest, ATensorParallelShapeThatDoesNotDivideTheModelIsBadInput) {
  const testing::ProcessResult output = testing::RunReflect(
      "bench", {"--model", TinyModel(), "--tensor_parallel", "3", "--batch_sizes", "1",
                "--prompt_tokens", "4", "--decode_tokens", "1", "--threads", "3"});
  EXPECT_EQ(output.exit_code, kBadInput) << output.standard_error;
  EXPECT_THAT(output.standard_error, HasSubstr("--tensor_parallel 3"));
  EXPECT_THAT(output.standard_error, HasSubstr("does not divide"));
}

}  // namespace
}  // namespace reflect
