#include "worker/parallel/step_plan_codec.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

constexpr char kVersion = 0x01;
constexpr int kMaxVarintBytes = 10;

uint64_t ZigZag(int64_t value) {
  return (static_cast<uint64_t>(value) << 1) ^ static_cast<uint64_t>(value >> 63);
}

int64_t UnZigZag(uint64_t value) {
  return static_cast<int64_t>(value >> 1) ^ -static_cast<int64_t>(value & 1);
}

void PutVarint(uint64_t value, std::string& bytes) {
  while (value >= 0x80) {
    bytes.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  bytes.push_back(static_cast<char>(value));
}

void PutSigned(int64_t value, std::string& bytes) { PutVarint(ZigZag(value), bytes); }

// Reads the format of the header comment; every method fails with INVALID_ARGUMENT naming what
// it was reading and where.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : bytes_(bytes) {}

  bool done() const { return position_ == bytes_.size(); }
  void Skip(size_t count) { position_ += count; }

  absl::StatusOr<uint64_t> Varint(const char* what) {
    uint64_t value = 0;
    for (int index = 0; index < kMaxVarintBytes; ++index) {
      if (position_ == bytes_.size()) return Error(what, "truncated");
      const uint64_t byte = static_cast<uint8_t>(bytes_[position_++]);
      // The tenth byte holds only the top bit of 64.
      if (index == kMaxVarintBytes - 1 && byte > 1) return Error(what, "varint overflows 64 bits");
      value |= (byte & 0x7f) << (7 * index);
      if ((byte & 0x80) == 0) return value;
    }
    return Error(what, "varint longer than 10 bytes");
  }

  absl::StatusOr<int64_t> Signed(const char* what) {
    REFLECT_ASSIGN_OR_RETURN(const uint64_t value, Varint(what));
    return UnZigZag(value);
  }

  absl::StatusOr<int32_t> Int32(const char* what) {
    REFLECT_ASSIGN_OR_RETURN(const int64_t value, Signed(what));
    return ToInt32(value, what);
  }

  // A count of items taking at least `item_bytes` bytes each: never more than the bytes left.
  absl::StatusOr<uint64_t> Count(const char* what, uint64_t item_bytes) {
    REFLECT_ASSIGN_OR_RETURN(const uint64_t count, Varint(what));
    REFLECT_RETURN_IF_ERROR(CheckCount(count, item_bytes, what));
    return count;
  }

  absl::Status CheckCount(uint64_t count, uint64_t item_bytes, const char* what) const {
    if (count > (bytes_.size() - position_) / item_bytes) {
      return Error(what, absl::StrFormat("count %d exceeds the %d bytes left", count,
                                         bytes_.size() - position_));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int32_t> ToInt32(int64_t value, const char* what) const {
    if (value < std::numeric_limits<int32_t>::min() ||
        value > std::numeric_limits<int32_t>::max()) {
      return Error(what, absl::StrFormat("%d is outside int32", value));
    }
    return static_cast<int32_t>(value);
  }

  absl::Status Error(const char* what, const std::string& problem) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("step plan: %s at byte %d: %s", what, position_, problem));
  }

 private:
  absl::string_view bytes_;
  size_t position_ = 0;
};

absl::StatusOr<std::vector<BlockSwap>> ReadSwaps(Reader& reader) {
  REFLECT_ASSIGN_OR_RETURN(const uint64_t count, reader.Count("swap count", 2));
  std::vector<BlockSwap> swaps(count);
  for (BlockSwap& swap : swaps) {
    REFLECT_ASSIGN_OR_RETURN(swap.device_block, reader.Int32("swap device block"));
    REFLECT_ASSIGN_OR_RETURN(swap.host_block, reader.Int32("swap host block"));
  }
  return swaps;
}

absl::Status ReadSequence(Reader& reader, int64_t previous_id, ScheduledSequence& sequence) {
  REFLECT_ASSIGN_OR_RETURN(const int64_t id_delta, reader.Signed("sequence id"));
  sequence.sequence_id =
      static_cast<int64_t>(static_cast<uint64_t>(previous_id) + static_cast<uint64_t>(id_delta));
  REFLECT_ASSIGN_OR_RETURN(const uint64_t shape, reader.Varint("token count"));
  sequence.needs_logits = (shape & 1) != 0;
  REFLECT_ASSIGN_OR_RETURN(sequence.start_position, reader.Signed("start position"));
  const uint64_t token_count = shape >> 1;
  REFLECT_RETURN_IF_ERROR(reader.CheckCount(token_count, 1, "token count"));
  sequence.token_ids.resize(token_count);
  for (int32_t& token : sequence.token_ids) {
    REFLECT_ASSIGN_OR_RETURN(token, reader.Int32("token id"));
  }
  REFLECT_ASSIGN_OR_RETURN(const uint64_t block_count, reader.Count("block count", 1));
  sequence.block_table.resize(block_count);
  int64_t previous_block = 0;
  for (int32_t& block : sequence.block_table) {
    REFLECT_ASSIGN_OR_RETURN(const int64_t delta, reader.Signed("block id"));
    // A delta between two int32 values fits in 33 bits; anything larger is corrupt (and checking
    // first keeps the sum from overflowing).
    if (delta < -(int64_t{1} << 33) || delta > (int64_t{1} << 33)) {
      return reader.Error("block id", "delta out of range");
    }
    REFLECT_ASSIGN_OR_RETURN(block, reader.ToInt32(previous_block + delta, "block id"));
    previous_block = block;
  }
  return absl::OkStatus();
}

}  // namespace

std::string EncodeStepPlan(const StepPlan& plan) {
  std::string bytes;
  bytes.push_back(kVersion);
  PutVarint(plan.block_copies.size(), bytes);
  for (const BlockCopy& copy : plan.block_copies) {
    PutSigned(copy.source_block, bytes);
    PutSigned(copy.destination_block, bytes);
  }
  for (const std::vector<BlockSwap>* swaps : {&plan.swap_out, &plan.swap_in}) {
    PutVarint(swaps->size(), bytes);
    for (const BlockSwap& swap : *swaps) {
      PutSigned(swap.device_block, bytes);
      PutSigned(swap.host_block, bytes);
    }
  }
  PutVarint(plan.sequences.size(), bytes);
  uint64_t previous_id = 0;
  for (const ScheduledSequence& sequence : plan.sequences) {
    PutSigned(static_cast<int64_t>(static_cast<uint64_t>(sequence.sequence_id) - previous_id),
              bytes);
    previous_id = static_cast<uint64_t>(sequence.sequence_id);
    PutVarint((uint64_t{sequence.token_ids.size()} << 1) | (sequence.needs_logits ? 1 : 0), bytes);
    PutSigned(sequence.start_position, bytes);
    for (const int32_t token : sequence.token_ids) PutSigned(token, bytes);
    PutVarint(sequence.block_table.size(), bytes);
    int64_t previous_block = 0;
    for (const int32_t block : sequence.block_table) {
      PutSigned(block - previous_block, bytes);
      previous_block = block;
    }
  }
  return bytes;
}

absl::StatusOr<StepPlan> DecodeStepPlan(absl::string_view bytes) {
  Reader reader(bytes);
  if (bytes.empty() || bytes[0] != kVersion) {
    return reader.Error("version", "not a version 1 step plan");
  }
  reader.Skip(1);
  StepPlan plan;
  REFLECT_ASSIGN_OR_RETURN(const uint64_t copy_count, reader.Count("block copy count", 2));
  plan.block_copies.resize(copy_count);
  for (BlockCopy& copy : plan.block_copies) {
    REFLECT_ASSIGN_OR_RETURN(copy.source_block, reader.Int32("block copy source"));
    REFLECT_ASSIGN_OR_RETURN(copy.destination_block, reader.Int32("block copy destination"));
  }
  REFLECT_ASSIGN_OR_RETURN(plan.swap_out, ReadSwaps(reader));
  REFLECT_ASSIGN_OR_RETURN(plan.swap_in, ReadSwaps(reader));
  // A sequence takes at least 4 bytes: id, shape, start position, block count.
  REFLECT_ASSIGN_OR_RETURN(const uint64_t sequence_count, reader.Count("sequence count", 4));
  plan.sequences.resize(sequence_count);
  int64_t previous_id = 0;
  for (ScheduledSequence& sequence : plan.sequences) {
    REFLECT_RETURN_IF_ERROR(ReadSequence(reader, previous_id, sequence));
    previous_id = sequence.sequence_id;
  }
  if (!reader.done()) return reader.Error("end", "trailing bytes");
  return plan;
}

}  // namespace reflect
