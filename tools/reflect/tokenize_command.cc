// `reflect tokenize --model DIR [--decode]`: text <-> token ids through the model's tokenizer,
// one JSON value per line on stdin and stdout, so scripts and tests can check tokenization
// against Hugging Face without writing C++.
//
//   encode (default): "a JSON string"  ->  [ids, ...]   (no special tokens added)
//   --decode:         [ids, ...]       ->  "a JSON string" (ill-formed UTF-8 becomes U+FFFD)
//
// A bad line stops the run with its line number on stderr and exit code 1.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "tools/reflect/command.h"
#include "tools/reflect/common_flags.h"

ABSL_FLAG(bool, decode, false,
          "tokenize: read JSON arrays of ids and write JSON strings instead of the reverse");

namespace reflect::cli {
namespace {

using nlohmann::json;

absl::StatusOr<std::string> EncodeLine(const Tokenizer& tokenizer, const std::string& line) {
  const json value = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!value.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a JSON string, got ", value.type_name()));
  }
  return json(tokenizer.Encode(value.get_ref<const std::string&>())).dump();
}

absl::StatusOr<std::string> DecodeLine(const Tokenizer& tokenizer, const std::string& line) {
  const json value = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!value.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a JSON array of token ids, got ", value.type_name()));
  }
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (std::size_t index = 0; index < value.size(); ++index) {
    const json& id = value[index];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= tokenizer.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("element ", index, " (", id.dump(),
                                                     ") is not a token id in [0, ",
                                                     tokenizer.vocab_size(), ")"));
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  // Ids may end inside a character; JSON needs valid UTF-8.
  return json(ReplaceInvalidUtf8(tokenizer.Decode(ids))).dump(-1, ' ', /*ensure_ascii=*/false);
}

int RunTokenize(const std::vector<char*>& positional_args) {
  if (!positional_args.empty()) {
    std::fprintf(stderr, "reflect tokenize: unexpected argument '%s' (input comes on stdin)\n",
                 positional_args.front());
    return 2;
  }
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    std::fprintf(stderr, "reflect tokenize: --model DIR is required\n");
    return 2;
  }
  const absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(model);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "reflect tokenize: %s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const bool decode = absl::GetFlag(FLAGS_decode);
  std::ios::sync_with_stdio(false);
  std::string line;
  for (int64_t line_number = 1; std::getline(std::cin, line); ++line_number) {
    const absl::StatusOr<std::string> output =
        decode ? DecodeLine(**tokenizer, line) : EncodeLine(**tokenizer, line);
    if (!output.ok()) {
      std::cout.flush();
      std::fprintf(stderr, "reflect tokenize: stdin line %lld: %s\n",
                   static_cast<long long>(line_number),
                   std::string(output.status().message()).c_str());
      return 1;
    }
    // One line out per line in, flushed, so a caller can drive it interactively.
    std::cout << *output << '\n' << std::flush;
  }
  return 0;
}

const CommandRegistration kRegistration({"tokenize",
                                         "text <-> token ids (JSON lines on stdin/stdout)",
                                         &RunTokenize});

}  // namespace
}  // namespace reflect::cli
