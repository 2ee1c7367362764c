#include "router/api_keys.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace reflect {
namespace {

std::filesystem::path WriteKeyFile(const std::string& name, const std::string& text) {
  const std::filesystem::path path = std::filesystem::path(testing::TempDir()) / name;
  std::ofstream(path) << text;
  return path;
}

TEST(ApiKeysTest, EmptyMeansOff) {
  const ApiKeys keys;
  EXPECT_FALSE(keys.enabled());
  EXPECT_TRUE(keys.CheckAuthorization(std::nullopt).ok());
  EXPECT_TRUE(keys.CheckAuthorization("Bearer anything").ok());
}

TEST(ApiKeysTest, ChecksBearerKeys) {
  const ApiKeys keys({"sk-one", "sk-two"});
  EXPECT_TRUE(keys.enabled());
  EXPECT_TRUE(keys.Contains("sk-one"));
  EXPECT_TRUE(keys.Contains("sk-two"));
  EXPECT_FALSE(keys.Contains("sk-on"));
  EXPECT_FALSE(keys.Contains("sk-one "));
  EXPECT_FALSE(keys.Contains(""));
  EXPECT_TRUE(keys.CheckAuthorization("Bearer sk-one").ok());
  EXPECT_TRUE(keys.CheckAuthorization("bearer  sk-two ").ok());
  EXPECT_EQ(keys.CheckAuthorization(std::nullopt).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys.CheckAuthorization("Bearer sk-three").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys.CheckAuthorization("Basic c2stb25l").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys.CheckAuthorization("Bearer ").code(), absl::StatusCode::kUnauthenticated);
  // The message never echoes what the client sent.
  EXPECT_EQ(keys.CheckAuthorization("Bearer sk-secret-guess").message().find("sk-secret-guess"),
            std::string_view::npos);
}

TEST(ApiKeysTest, LoadsFileAndEnvironment) {
  const std::filesystem::path file =
      WriteKeyFile("keys.txt", "# team keys\n  sk-file-1  \n\n#sk-commented\nsk-file-2\n");
  setenv("REFLECT_TEST_API_KEYS", "sk-env-1, sk-env-2,,", 1);
  const absl::StatusOr<ApiKeys> keys = ApiKeys::Load(file, "REFLECT_TEST_API_KEYS");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 4u);
  EXPECT_TRUE(keys->Contains("sk-file-1"));
  EXPECT_TRUE(keys->Contains("sk-file-2"));
  EXPECT_TRUE(keys->Contains("sk-env-1"));
  EXPECT_TRUE(keys->Contains("sk-env-2"));
  EXPECT_FALSE(keys->Contains("sk-commented"));
  EXPECT_FALSE(keys->Contains("#sk-commented"));

  unsetenv("REFLECT_TEST_API_KEYS");
  const absl::StatusOr<ApiKeys> none = ApiKeys::Load(std::nullopt, "REFLECT_TEST_API_KEYS");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->enabled());
}

TEST(ApiKeysTest, FileErrorsDoNotTurnAuthenticationOff) {
  EXPECT_EQ(ApiKeys::Load(std::filesystem::path("/nonexistent/keys"), std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::filesystem::path empty = WriteKeyFile("empty-keys.txt", "# nothing here\n\n");
  EXPECT_EQ(ApiKeys::Load(empty, std::nullopt).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace reflect
