// Tokenizer throughput (single thread): Encode on about 1 MB of English prose, as one document
// and as request-sized paragraphs, on the mixed-language fixture corpus, and Decode.
// The corpus is built from the committed fixtures, so every run measures the same bytes.
// The tokenizer keeps no cache, so repeated paragraphs cost as much as fresh ones.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

const std::filesystem::path kSourceDirectory = REFLECT_SOURCE_DIR;

const Tokenizer& Llama31() {
  static const std::unique_ptr<Tokenizer> tokenizer = [] {
    auto loaded = Tokenizer::Load(kSourceDirectory / "third_party" / "llama-3.1-tokenizer");
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
      std::exit(1);
    }
    return std::move(*loaded);
  }();
  return *tokenizer;
}

const std::vector<std::string>& FixtureTexts() {
  static const std::vector<std::string> texts = [] {
    std::vector<std::string> result;
    std::ifstream in(kSourceDirectory / "tests" / "fixtures" / "tokenizer" / "hf-encodings.jsonl");
    for (std::string line; std::getline(in, line);) {
      result.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
    }
    return result;
  }();
  return texts;
}

bool IsEnglishProse(const std::string& text) {
  if (text.size() < 60 || text.find("<|") != std::string::npos) return false;
  int letters = 0;
  int spaces = 0;
  for (const char character : text) {
    if (static_cast<unsigned char>(character) >= 0x80) return false;
    if ((character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z')) {
      ++letters;
    }
    if (character == ' ') ++spaces;
  }
  // Mostly letters, in words of ordinary length (the fixtures also hold 5,000-letter words).
  const auto size = static_cast<int>(text.size());
  return letters * 10 >= size * 7 && spaces * 12 >= size;
}

// About 1 MB of paragraphs: the English fixture prose, each copy numbered differently so the
// text is not one period repeated.
const std::vector<std::string>& EnglishParagraphs() {
  static const std::vector<std::string> paragraphs = [] {
    std::vector<std::string> prose;
    for (const std::string& text : FixtureTexts()) {
      if (IsEnglishProse(text)) prose.push_back(text);
    }
    std::vector<std::string> result;
    std::size_t bytes = 0;
    for (int copy = 0; bytes < (1 << 20); ++copy) {
      std::string paragraph =
          absl::StrCat("Section ", copy, ". ", prose[copy % prose.size()], "\n\n");
      bytes += paragraph.size();
      result.push_back(std::move(paragraph));
    }
    return result;
  }();
  return paragraphs;
}

void BM_EncodeEnglishDocument(benchmark::State& state) {
  std::string document;
  for (const std::string& paragraph : EnglishParagraphs()) document += paragraph;
  const Tokenizer& tokenizer = Llama31();
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer.Encode(document));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * document.size()));
}
BENCHMARK(BM_EncodeEnglishDocument)->Unit(benchmark::kMillisecond);

void BM_EncodeEnglishParagraphs(benchmark::State& state) {
  const std::vector<std::string>& paragraphs = EnglishParagraphs();
  std::size_t bytes = 0;
  for (const std::string& paragraph : paragraphs) bytes += paragraph.size();
  const Tokenizer& tokenizer = Llama31();
  for (auto _ : state) {
    for (const std::string& paragraph : paragraphs) {
      benchmark::DoNotOptimize(tokenizer.Encode(paragraph));
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_EncodeEnglishParagraphs)->Unit(benchmark::kMillisecond);

void BM_EncodeMixedCorpus(benchmark::State& state) {
  const std::vector<std::string>& texts = FixtureTexts();
  std::size_t bytes = 0;
  for (const std::string& text : texts) bytes += text.size();
  const Tokenizer& tokenizer = Llama31();
  for (auto _ : state) {
    for (const std::string& text : texts) benchmark::DoNotOptimize(tokenizer.Encode(text));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_EncodeMixedCorpus)->Unit(benchmark::kMillisecond);

void BM_DecodeEnglishDocument(benchmark::State& state) {
  std::string document;
  for (const std::string& paragraph : EnglishParagraphs()) document += paragraph;
  const Tokenizer& tokenizer = Llama31();
  const std::vector<int32_t> ids = tokenizer.Encode(document);
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer.Decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * document.size()));
}
BENCHMARK(BM_DecodeEnglishDocument)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace reflect
