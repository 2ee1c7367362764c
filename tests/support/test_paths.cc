#include "tests/support/test_paths.h"

namespace reflect::testing {

std::filesystem::path FixturePath(const std::string& relative) {
  return std::filesystem::path(REFLECT_SOURCE_DIR) / "tests" / "fixtures" / relative;
}

std::filesystem::path ReflectBinary() {
  return std::filesystem::path(REFLECT_BINARY_DIR) / "tools" / "reflect" / "reflect";
}

std::filesystem::path TestModelPath(const std::string& name) {
  return std::filesystem::path(REFLECT_BINARY_DIR) / "test-models" / name;
}

std::filesystem::path TokenizerDirectory() {
  return std::filesystem::path(REFLECT_SOURCE_DIR) / "third_party" / "llama-3.1-tokenizer";
}

}  // namespace reflect::testing
