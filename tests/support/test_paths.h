// Where tests find committed fixtures, built binaries and the generated test models.
#pragma once

#include <filesystem>
#include <string>

namespace reflect::testing {

// <repo>/tests/fixtures/<relative>
std::filesystem::path FixturePath(const std::string& relative);
// The `reflect` CLI of this build tree.
std::filesystem::path ReflectBinary();
// <build>/test-models/<name>, created by tests/make_test_models.sh before any test runs.
std::filesystem::path TestModelPath(const std::string& name);
// The Llama 3.1 tokenizer shipped in the repo (third_party/llama-3.1-tokenizer).
std::filesystem::path TokenizerDirectory();

}  // namespace reflect::testing
