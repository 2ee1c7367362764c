// The byte-level BPE model of a tokenizer.json ("model": {"type": "BPE", ...}): a vocabulary of
// byte strings and merge ranks. Encodes one pre-token at a time into ids, with the same merge
// order as Hugging Face `tokenizers` (lowest rank first, leftmost on ties).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace reflect {

// Working memory for BpeModel::EncodePreToken, reused across the pre-tokens of one text so the
// merge loop does not allocate. One per thread of work; not shared.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t previous;  // index of the live symbol to the left, -1 at the start
    int32_t next;      // index of the live symbol to the right, -1 at the end
    bool merged_away;  // absorbed into the symbol to its left
  };
  struct Candidate {
    uint32_t rank;
    int32_t position;  // index of the left symbol of the pair
    int32_t merged_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

// Immutable after FromJson; EncodePreToken may run concurrently (each caller has its scratch).
class BpeModel {
 public:
  // Reads the "model" object of tokenizer.json. Merges may be "left right" strings or
  // ["left", "right"] pairs. Every single byte must be in the vocabulary (byte-level BPE).
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-token (raw bytes, non-empty) to `ids`.
  void EncodePreToken(std::string_view pre_token, BpeScratch* scratch,
                      std::vector<int32_t>* ids) const;

  std::optional<int32_t> Find(std::string_view token_bytes) const;
  // Raw bytes of every id in [0, id_limit()); ids without a token map to an empty string.
  const std::vector<std::string>& id_to_bytes() const { return id_to_bytes_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const;

  absl::flat_hash_map<std::string, int32_t> vocabulary_;
  std::vector<std::string> id_to_bytes_;
  std::array<int32_t, 256> byte_ids_{};
  absl::flat_hash_map<uint64_t, Merge> merges_;
  // Llama 3 sets this: a pre-token that is itself a vocabulary entry is that one id, even
  // when merging would have produced something else.
  bool ignore_merges_ = false;
};

}  // namespace reflect
