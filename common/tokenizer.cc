#include "common/tokenizer.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/bpe_added_tokens.h"
#include "common/bpe_model.h"
#include "common/bpe_pre_tokenizer.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

using nlohmann::json;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  return std::move(contents).str();
}

// The regex of the pre-tokenizer, or "" when it does not split (byte-level only). Only the
// shapes byte-level BPE tokenizers like Llama 3 use are accepted: a Split with behavior
// "Isolated", and a ByteLevel step that only maps bytes (use_regex false).
absl::StatusOr<std::string> ReadSplitPattern(const json& pre_tokenizer) {
  if (pre_tokenizer.is_null()) return std::string();
  std::vector<json> steps;
  if (pre_tokenizer.value("type", "") == "Sequence") {
    steps = pre_tokenizer.at("pretokenizers").get<std::vector<json>>();
  } else {
    steps.push_back(pre_tokenizer);
  }
  std::string pattern;
  for (const json& step : steps) {
    const std::string type = step.value("type", "");
    if (type == "Split" && pattern.empty() && step.value("behavior", "") == "Isolated" &&
        !step.value("invert", false) && step.at("pattern").contains("Regex")) {
      pattern = step.at("pattern").at("Regex").get<std::string>();
    } else if (type == "ByteLevel" && !step.value("use_regex", true) &&
               !step.value("add_prefix_space", false)) {
      // Bytes are mapped to the byte-level alphabet: the model works on raw bytes already.
    } else {
      return absl::UnimplementedError(
          absl::StrCat("unsupported pre-tokenizer step: ", step.dump()));
    }
  }
  return pattern;
}

absl::StatusOr<std::vector<AddedToken>> ReadAddedTokens(const json& added_tokens) {
  std::vector<AddedToken> tokens;
  if (added_tokens.is_null()) return tokens;
  for (const json& entry : added_tokens) {
    AddedToken token;
    token.id = entry.at("id").get<int32_t>();
    token.content = entry.at("content").get<std::string>();
    token.single_word = entry.value("single_word", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.normalized = entry.value("normalized", false);
    token.special = entry.value("special", false);
    if (token.id < 0) return absl::InvalidArgumentError("added token with a negative id");
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// Tokenizer for byte-level BPE. Immutable after Create; all methods are const and thread-safe.
// Encode allocates only its result and one PCRE2 match block per stretch between added tokens.
class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const json& document) {
    if (document.contains("normalizer") && !document["normalizer"].is_null()) {
      return absl::UnimplementedError("tokenizer.json normalizers are not supported");
    }
    if (document.contains("decoder") && !document["decoder"].is_null() &&
        document["decoder"].value("type", "") != "ByteLevel") {
      return absl::UnimplementedError("only the ByteLevel decoder is supported");
    }
    auto tokenizer = std::unique_ptr<ByteLevelBpeTokenizer>(new ByteLevelBpeTokenizer());
    REFLECT_ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::FromJson(document.at("model")));
    REFLECT_ASSIGN_OR_RETURN(const std::string pattern,
                             ReadSplitPattern(document.value("pre_tokenizer", json())));
    if (!pattern.empty()) {
      REFLECT_ASSIGN_OR_RETURN(tokenizer->split_regex_, UnicodeRegex::Compile(pattern));
    }
    REFLECT_ASSIGN_OR_RETURN(std::vector<AddedToken> added,
                             ReadAddedTokens(document.value("added_tokens", json())));
    // `tokenizers` matches non-normalized tokens first over the whole text, then normalized
    // ones in what is left; with no normalizer the second pass sees the same bytes.
    std::vector<AddedToken> raw_pass;
    std::vector<AddedToken> normalized_pass;
    tokenizer->id_to_bytes_ = tokenizer->model_.id_to_bytes();
    for (const AddedToken& token : added) {
      (token.normalized ? normalized_pass : raw_pass).push_back(token);
      if (static_cast<std::size_t>(token.id) >= tokenizer->id_to_bytes_.size()) {
        tokenizer->id_to_bytes_.resize(token.id + 1);
      }
      tokenizer->id_to_bytes_[token.id] = token.content;
      tokenizer->added_ids_[token.content] = token.id;
    }
    REFLECT_ASSIGN_OR_RETURN(tokenizer->raw_matcher_, AddedTokenMatcher::Create(raw_pass));
    REFLECT_ASSIGN_OR_RETURN(tokenizer->normalized_matcher_,
                             AddedTokenMatcher::Create(normalized_pass));
    return std::unique_ptr<Tokenizer>(std::move(tokenizer));
  }

  std::vector<int32_t> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    BpeScratch scratch;
    std::vector<AddedTokenSpan> spans;
    raw_matcher_->FindAll(text, &spans);
    std::size_t done = 0;
    for (const AddedTokenSpan& span : spans) {
      EncodeWithNormalizedTokens(text.substr(done, span.start - done), &scratch, &ids);
      ids.push_back(span.id);
      done = span.end;
    }
    EncodeWithNormalizedTokens(text.substr(done), &scratch, &ids);
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (const int32_t id : ids) {
      if (id >= 0 && static_cast<std::size_t>(id) < id_to_bytes_.size()) {
        text += id_to_bytes_[id];
      }
    }
    return text;
  }

  absl::StatusOr<std::string> TokenBytes(int32_t id) const override {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_bytes_.size()) {
      return absl::OutOfRangeError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
    }
    return id_to_bytes_[id];
  }

  std::optional<int32_t> TokenId(std::string_view token) const override {
    const auto added = added_ids_.find(absl::string_view(token.data(), token.size()));
    if (added != added_ids_.end()) return added->second;
    return model_.Find(token);
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_bytes_.size()); }

 private:
  ByteLevelBpeTokenizer() = default;

  void EncodeWithNormalizedTokens(std::string_view text, BpeScratch* scratch,
                                  std::vector<int32_t>* ids) const {
    if (text.empty()) return;
    std::vector<AddedTokenSpan> spans;
    normalized_matcher_->FindAll(text, &spans);
    std::size_t done = 0;
    for (const AddedTokenSpan& span : spans) {
      EncodeOrdinaryText(text.substr(done, span.start - done), scratch, ids);
      ids->push_back(span.id);
      done = span.end;
    }
    EncodeOrdinaryText(text.substr(done), scratch, ids);
  }

  void EncodeOrdinaryText(std::string_view text, BpeScratch* scratch,
                          std::vector<int32_t>* ids) const {
    if (text.empty()) return;
    if (split_regex_ == nullptr) {
      model_.EncodePreToken(text, scratch, ids);
      return;
    }
    PreTokenCursor cursor(*split_regex_, text);
    std::string_view pre_token;
    while (cursor.Next(&pre_token)) model_.EncodePreToken(pre_token, scratch, ids);
  }

  BpeModel model_;
  std::unique_ptr<UnicodeRegex> split_regex_;  // null: no regex split
  std::unique_ptr<AddedTokenMatcher> raw_matcher_;
  std::unique_ptr<AddedTokenMatcher> normalized_matcher_;
  std::vector<std::string> id_to_bytes_;  // raw bytes of every id, added tokens included
  absl::flat_hash_map<std::string, int32_t> added_ids_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "tokenizer.json";
  REFLECT_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  // nlohmann::json reports bad documents and wrong field types by throwing; keep that inside.
  try {
    const json document = json::parse(text);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = ByteLevelBpeTokenizer::Create(document);
    if (!tokenizer.ok()) {
      return absl::Status(tokenizer.status().code(),
                          absl::StrCat(path.string(), ": ", tokenizer.status().message()));
    }
    return tokenizer;
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", error.what()));
  }
}

bool StreamingDetokenizer::IsSpecial(int32_t id, const std::string& bytes) const {
  if (bytes.size() < 4 || !bytes.starts_with("<|") || !bytes.ends_with("|>")) return false;
  const std::optional<int32_t> spelled = tokenizer_.TokenId(bytes);
  return spelled.has_value() && *spelled == id;
}

std::string StreamingDetokenizer::Push(int32_t id) {
  // An id the tokenizer does not know (a padded model vocabulary) contributes no text.
  const absl::StatusOr<std::string> bytes = tokenizer_.TokenBytes(id);
  if (!bytes.ok() || (skip_special_tokens_ && IsSpecial(id, *bytes))) return std::string();
  pending_ += *bytes;
  std::string text;
  std::string_view rest = pending_;
  while (!rest.empty()) {
    const Utf8Character character = ReadUtf8Character(rest);
    if (character.kind == Utf8Character::Kind::kIncomplete) break;
    if (character.kind == Utf8Character::Kind::kValid) {
      text.append(rest.substr(0, character.length));
    } else {
      // No later byte can repair an ill-formed sequence: replace it now, as Flush would.
      text.append("\xEF\xBF\xBD");
    }
    rest.remove_prefix(character.length);
  }
  pending_ = std::string(rest);
  return text;
}

std::string StreamingDetokenizer::Flush() {
  std::string text = ReplaceInvalidUtf8(pending_);
  pending_.clear();
  return text;
}

}  // namespace reflect
