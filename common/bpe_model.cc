#include "common/bpe_model.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/byte_level.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

// Heap order of `tokenizers`: the top is the lowest rank, and among equal ranks the leftmost.
bool ComesAfter(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  if (a.rank != b.rank) return a.rank > b.rank;
  return a.position > b.position;
}

// One merge rule as the two byte-level spellings it joins.
absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const nlohmann::json& merge) {
  if (merge.is_string()) {
    const std::string& text = merge.get_ref<const std::string&>();
    const std::size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("merge is not 'left right': ", text));
    }
    return std::make_pair(text.substr(0, space), text.substr(space + 1));
  }
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    return std::make_pair(merge[0].get<std::string>(), merge[1].get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrCat("merge is neither a string nor a pair: ", merge.dump()));
}

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& model) {
  if (!model.is_object() || model.value("type", "") != "BPE") {
    return absl::UnimplementedError("tokenizer.json model is not of type BPE");
  }
  for (const char* unsupported : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    if (model.contains(unsupported) && !model[unsupported].is_null()) {
      return absl::UnimplementedError(
          absl::StrCat("BPE option '", unsupported, "' is not supported"));
    }
  }
  if (model.value("byte_fallback", false)) {
    return absl::UnimplementedError("BPE byte_fallback is not supported (byte-level BPE only)");
  }
  const auto vocabulary = model.find("vocab");
  const auto merges = model.find("merges");
  if (vocabulary == model.end() || !vocabulary->is_object() || merges == model.end() ||
      !merges->is_array()) {
    return absl::InvalidArgumentError("BPE model needs a 'vocab' object and a 'merges' array");
  }

  BpeModel result;
  result.ignore_merges_ = model.value("ignore_merges", false);
  result.vocabulary_.reserve(vocabulary->size());
  // Byte-level spellings, needed to name the result of each merge as tokenizer.json does.
  absl::flat_hash_map<std::string, int32_t> spelled_vocabulary;
  spelled_vocabulary.reserve(vocabulary->size());
  for (const auto& [spelling, id_value] : vocabulary->items()) {
    if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 ||
        id_value.get<int64_t>() >= (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(absl::StrCat("bad id for token '", spelling, "'"));
    }
    const auto id = id_value.get<int32_t>();
    REFLECT_ASSIGN_OR_RETURN(std::string bytes, ByteLevelToBytes(spelling));
    if (static_cast<std::size_t>(id) >= result.id_to_bytes_.size()) {
      result.id_to_bytes_.resize(id + 1);
    }
    result.id_to_bytes_[id] = bytes;
    result.vocabulary_[std::move(bytes)] = id;
    spelled_vocabulary[spelling] = id;
  }
  for (int byte = 0; byte < 256; ++byte) {
    const std::optional<int32_t> id = result.Find(std::string(1, static_cast<char>(byte)));
    if (!id.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("byte ", byte, " is not in the vocabulary"));
    }
    result.byte_ids_[byte] = *id;
  }

  result.merges_.reserve(merges->size());
  uint32_t rank = 0;
  for (const nlohmann::json& merge : *merges) {
    REFLECT_ASSIGN_OR_RETURN(auto pair, ParseMerge(merge));
    const auto left = spelled_vocabulary.find(pair.first);
    const auto right = spelled_vocabulary.find(pair.second);
    const auto merged = spelled_vocabulary.find(pair.first + pair.second);
    if (left == spelled_vocabulary.end() || right == spelled_vocabulary.end() ||
        merged == spelled_vocabulary.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge '", pair.first, " ", pair.second, "' uses unknown tokens"));
    }
    // A repeated pair keeps its last rank, as `tokenizers` does when it collects the map.
    result.merges_[PairKey(left->second, right->second)] = Merge{rank, merged->second};
    ++rank;
  }
  return result;
}

std::optional<int32_t> BpeModel::Find(std::string_view token_bytes) const {
  // This absl build has its own string_view type, which the heterogeneous lookup needs.
  const auto found = vocabulary_.find(absl::string_view(token_bytes.data(), token_bytes.size()));
  if (found == vocabulary_.end()) return std::nullopt;
  return found->second;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  const auto found = merges_.find(PairKey(left, right));
  return found == merges_.end() ? nullptr : &found->second;
}

void BpeModel::EncodePreToken(std::string_view pre_token, BpeScratch* scratch,
                              std::vector<int32_t>* ids) const {
  if (pre_token.empty()) return;
  if (pre_token.size() == 1 || ignore_merges_) {
    if (const std::optional<int32_t> id = Find(pre_token)) {
      ids->push_back(*id);
      return;
    }
  }
  auto& symbols = scratch->symbols;
  auto& heap = scratch->heap;
  symbols.clear();
  heap.clear();
  const auto length = static_cast<int32_t>(pre_token.size());
  for (int32_t index = 0; index < length; ++index) {
    symbols.push_back({byte_ids_[static_cast<uint8_t>(pre_token[index])], index - 1,
                       index + 1 < length ? index + 1 : -1, false});
  }
  const auto push_candidate = [&](int32_t position) {
    const int32_t next = symbols[position].next;
    if (next < 0) return;
    if (const Merge* merge = FindMerge(symbols[position].id, symbols[next].id)) {
      heap.push_back({merge->rank, position, merge->merged_id});
      std::push_heap(heap.begin(), heap.end(), ComesAfter);
    }
  };
  for (int32_t index = 0; index + 1 < length; ++index) push_candidate(index);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), ComesAfter);
    const BpeScratch::Candidate top = heap.back();
    heap.pop_back();
    BpeScratch::Symbol& left = symbols[top.position];
    // Candidates go stale when a neighbour merged first; skip those whose pair changed.
    if (left.merged_away || left.next < 0) continue;
    const Merge* merge = FindMerge(left.id, symbols[left.next].id);
    if (merge == nullptr || merge->merged_id != top.merged_id) continue;
    BpeScratch::Symbol& right = symbols[left.next];
    right.merged_away = true;
    left.id = top.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].previous = top.position;
    if (left.previous >= 0) push_candidate(left.previous);
    push_candidate(top.position);
  }
  for (int32_t index = 0; index >= 0; index = symbols[index].next) {
    ids->push_back(symbols[index].id);
  }
}

}  // namespace reflect
