// Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json` (Llama 3.x).
//
// Encode gives the ids Hugging Face `tokenizers` gives with add_special_tokens=False: special and
// added tokens found in the text are matched first, the rest is split by the pre-tokenizer regex
// (PCRE2, JIT) and merged by rank. Thread-safety: a Tokenizer is immutable after Load; Encode and
// Decode may run concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace reflect {

class Tokenizer {
 public:
  // Reads `<model_dir>/tokenizer.json` (byte-level BPE; other model types, normalizers and
  // pre-tokenizers are refused with UNIMPLEMENTED). tokenizer_config.json is not needed: its
  // chat template is rendered natively by chat_template.h.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& model_dir);
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  // Concatenated bytes of the tokens (special tokens included as their text). May hold partial
  // UTF-8 at the ends; use StreamingDetokenizer for incremental text.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // Raw bytes of one token; an error for an id outside the vocabulary.
  virtual absl::StatusOr<std::string> TokenBytes(int32_t id) const = 0;
  // The id of a special or regular token spelled exactly `token` (e.g. "<|eot_id|>").
  virtual std::optional<int32_t> TokenId(std::string_view token) const = 0;
  virtual int32_t vocab_size() const = 0;  // including added tokens
};

// Turns a stream of ids into text deltas that never end inside a UTF-8 character: bytes of an
// incomplete character are held until the character completes. With `skip_special_tokens`, a
// special token (one spelled "<|…|>" that the tokenizer maps back to the same id, such as
// <|eot_id|>) gives no text, as vLLM's skip_special_tokens does. Not thread-safe (one per stream).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}
  // The complete characters that `id` finishes (maybe empty).
  std::string Push(int32_t id);
  // Whatever is still held at the end of the stream (invalid bytes become U+FFFD).
  std::string Flush();
  // Whether bytes of an incomplete character are held.
  bool holds_bytes() const { return !pending_.empty(); }
  // Drops the held bytes.
  void Discard() { pending_.clear(); }

 private:
  bool IsSpecial(int32_t id, const std::string& bytes) const;

  const Tokenizer& tokenizer_;
  const bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace reflect
