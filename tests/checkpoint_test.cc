#include "worker/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "worker/safetensors_writer.h"

namespace reflect {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override { directory_ = testing::MakeTestDirectory("checkpoint_test"); }
  void TearDown() override { fs::remove_all(directory_); }

  // A safetensors file with an arbitrary header and `data_bytes` zero bytes of data.
  void WriteRawFile(const std::string& name, const std::string& header, size_t data_bytes) {
    std::ofstream stream(directory_ / name, std::ios::binary);
    uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) stream.put(static_cast<char>((length >> (8 * i)) & 0xff));
    stream << header << std::string(data_bytes, '\0');
  }

  fs::path directory_;
};

TensorToWrite ValuesTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                           std::vector<float> values) {
  return {.name = name,
          .dtype = dtype,
          .shape = std::move(shape),
          .fill = [values](int64_t first, std::span<float> out) {
            for (size_t i = 0; i < out.size(); ++i) out[i] = values[first + i];
          }};
}

TensorToWrite CountingTensor(const std::string& name, std::vector<int64_t> shape) {
  return {.name = name,
          .dtype = DType::kF32,
          .shape = std::move(shape),
          .fill = [](int64_t first, std::span<float> out) {
            for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(first + i);
          }};
}

TEST_F(CheckpointTest, ReadsF32F16Bf16ValuesExactly) {
  // Values each dtype represents exactly, including its extremes.
  const std::vector<float> f32_values = {1.0f, -2.5f, 3.14159274f, 1e-30f, -65504.0f, 0.0f};
  const std::vector<float> f16_values = {1.0f, -2.5f, 65504.0f, 0.000060975552f, -0.0f, 1000.5f};
  const std::vector<float> bf16_values = {1.0f,       -2.5f,     3.3895314e38f,
                                          0.0078125f, -1.0e-38f, 256.0f};
  // 1e-38 is not a bf16 value; it must round the way torch does.
  const float rounded_bf16 = Bf16ToF32(F32ToBf16(-1.0e-38f));
  const std::vector<TensorToWrite> tensors = {
      ValuesTensor("f32", DType::kF32, {2, 3}, f32_values),
      ValuesTensor("f16", DType::kF16, {6}, f16_values),
      ValuesTensor("bf16", DType::kBF16, {3, 2}, bf16_values)};
  ASSERT_TRUE(WriteSafetensorsFile(directory_ / "model.safetensors", tensors).ok());

  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_THAT((*checkpoint)->TensorNames(), ElementsAre("bf16", "f16", "f32"));
  EXPECT_FALSE((*checkpoint)->Contains("__metadata__"));

  absl::StatusOr<TensorView> f32 = (*checkpoint)->Get("f32", std::vector<int64_t>{2, 3});
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->dtype, DType::kF32);
  EXPECT_EQ(f32->NumElements(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f32->At(i), f32_values[i]) << i;

  absl::StatusOr<TensorView> f16 = (*checkpoint)->Get("f16", std::vector<int64_t>{6});
  ASSERT_TRUE(f16.ok()) << f16.status();
  EXPECT_EQ(f16->dtype, DType::kF16);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f16->At(i), f16_values[i]) << i;
  EXPECT_TRUE(std::signbit(f16->At(4)));

  absl::StatusOr<TensorView> bf16 = (*checkpoint)->Get("bf16", std::vector<int64_t>{3, 2});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->dtype, DType::kBF16);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(bf16->At(i), i == 4 ? rounded_bf16 : bf16_values[i]) << i;
  }
}

TEST_F(CheckpointTest, ShardedCheckpointRoundTrips) {
  // 3 tensors of 96, 64 and 96 bytes with a 160-byte limit: shards {a, b} and {c}.
  const std::vector<TensorToWrite> tensors = {CountingTensor("a", {4, 6}),
                                              CountingTensor("b", {16}), CountingTensor("c", {24})};
  ASSERT_TRUE(WriteSafetensorsModel(directory_, tensors, 160).ok());
  EXPECT_TRUE(fs::exists(directory_ / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(directory_ / "model-00002-of-00002.safetensors"));
  EXPECT_FALSE(fs::exists(directory_ / "model.safetensors"));
  std::ifstream index_stream(directory_ / "model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(index_stream);
  EXPECT_EQ(index["metadata"]["total_size"], 256);
  EXPECT_EQ(index["weight_map"]["c"], "model-00002-of-00002.safetensors");

  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_THAT((*checkpoint)->TensorNames(), ElementsAre("a", "b", "c"));
  absl::StatusOr<TensorView> a = (*checkpoint)->Get("a", std::vector<int64_t>{4, 6});
  absl::StatusOr<TensorView> c = (*checkpoint)->Get("c", std::vector<int64_t>{24});
  ASSERT_TRUE(a.ok() && c.ok());
  EXPECT_EQ(a->At(23), 23.0f);
  EXPECT_EQ(c->At(5), 5.0f);
}

TEST_F(CheckpointTest, SmallModelIsOneFile) {
  const std::vector<TensorToWrite> tensors = {CountingTensor("a", {4})};
  ASSERT_TRUE(WriteSafetensorsModel(directory_, tensors, 1 << 20).ok());
  EXPECT_TRUE(fs::exists(directory_ / "model.safetensors"));
  EXPECT_FALSE(fs::exists(directory_ / "model.safetensors.index.json"));
}

TEST_F(CheckpointTest, IndexNamingMissingShardIsAnError) {
  std::ofstream(directory_ / "model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}})";
  absl::Status status = Checkpoint::Open(directory_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(status), HasSubstr("names shard model-00001-of-00002.safetensors, which "
                                         "does not exist"));
}

TEST_F(CheckpointTest, IndexPromisingTensorItsShardLacksIsAnError) {
  ASSERT_TRUE(WriteSafetensorsFile(directory_ / "shard.safetensors",
                                   std::vector<TensorToWrite>{CountingTensor("a", {2})})
                  .ok());
  std::ofstream(directory_ / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "shard.safetensors", "b": "shard.safetensors"}})";
  EXPECT_THAT(Message(Checkpoint::Open(directory_).status()),
              HasSubstr("tensor 'b' is not in its shard shard.safetensors"));
}

TEST_F(CheckpointTest, MissingCheckpointFile) {
  absl::Status status = Checkpoint::Open(directory_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(status), HasSubstr("neither model.safetensors nor"));
}

TEST_F(CheckpointTest, UnsupportedDtypeNamesTensorFileAndDtype) {
  WriteRawFile("model.safetensors",
               R"({"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})", 16);
  absl::Status status = Checkpoint::Open(directory_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(status), HasSubstr("model.safetensors: tensor 'ids': unsupported dtype I64"));
}

TEST_F(CheckpointTest, MissingTensorIsNotFound) {
  ASSERT_TRUE(WriteSafetensorsFile(directory_ / "model.safetensors",
                                   std::vector<TensorToWrite>{CountingTensor("a", {2})})
                  .ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok());
  absl::Status status = (*checkpoint)->Get("lm_head.weight", std::vector<int64_t>{2}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(status), HasSubstr("tensor 'lm_head.weight' not found"));
}

TEST_F(CheckpointTest, WrongShapeNamesTensorFileExpectedAndFound) {
  ASSERT_TRUE(WriteSafetensorsFile(directory_ / "model.safetensors",
                                   std::vector<TensorToWrite>{CountingTensor("w", {2, 3})})
                  .ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok());
  absl::Status status = (*checkpoint)->Get("w", std::vector<int64_t>{3, 2}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("tensor 'w' in "));
  EXPECT_THAT(Message(status), HasSubstr("model.safetensors has shape [2, 3], expected [3, 2]"));
}

TEST_F(CheckpointTest, TruncatedFileNamesFileAndSizes) {
  ASSERT_TRUE(WriteSafetensorsFile(directory_ / "model.safetensors",
                                   std::vector<TensorToWrite>{CountingTensor("w", {100})})
                  .ok());
  const uintmax_t size = fs::file_size(directory_ / "model.safetensors");
  fs::resize_file(directory_ / "model.safetensors", size - 10);
  absl::Status status = Checkpoint::Open(directory_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(status), HasSubstr("model.safetensors: file is truncated: tensor 'w' ends at "
                                         "byte " +
                                         std::to_string(size) + " but the file has " +
                                         std::to_string(size - 10) + " bytes"));

  fs::resize_file(directory_ / "model.safetensors", 20);  // inside the header
  EXPECT_THAT(Message(Checkpoint::Open(directory_).status()),
              HasSubstr("file is truncated: header needs"));
  fs::resize_file(directory_ / "model.safetensors", 3);
  EXPECT_THAT(Message(Checkpoint::Open(directory_).status()),
              HasSubstr("file is truncated: 3 bytes"));
}

TEST_F(CheckpointTest, MalformedHeaderJson) {
  WriteRawFile("model.safetensors", R"({"w": {"dtype": "F32",)", 0);
  absl::Status status = Checkpoint::Open(directory_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("model.safetensors: malformed safetensors header JSON"));
}

TEST_F(CheckpointTest, InsaneHeaderLength) {
  std::ofstream stream(directory_ / "model.safetensors", std::ios::binary);
  stream << std::string(8, '\xff') << "{}";
  stream.close();
  EXPECT_THAT(Message(Checkpoint::Open(directory_).status()), HasSubstr("is not sane"));
}

TEST_F(CheckpointTest, ByteLengthMustMatchShape) {
  WriteRawFile("model.safetensors",
               R"({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", 16);
  EXPECT_THAT(
      Message(Checkpoint::Open(directory_).status()),
      HasSubstr("tensor 'w': data_offsets span 16 bytes, but shape [2, 2] of BF16 needs 8"));
}

TEST_F(CheckpointTest, BadTensorEntries) {
  WriteRawFile("model.safetensors", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets":
               [0, 4]}})",
               4);
  EXPECT_THAT(Message(Checkpoint::Open(directory_).status()), HasSubstr("tensor 'w': bad shape"));
  WriteRawFile("model.safetensors", R"({"w": {"dtype": "F32", "shape": [1]}})", 4);
  EXPECT_THAT(Message(Checkpoint::Open(directory_).status()),
              HasSubstr("tensor 'w': 'data_offsets' must be [begin, end]"));
}

}  // namespace
}  // namespace reflect
