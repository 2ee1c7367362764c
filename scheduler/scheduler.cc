#include "scheduler/scheduler.h"

#include <algorithm>
#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"

namespace reflect {
namespace {

// The order of service: larger priority first, then earlier arrival (FCFS), then id.
bool ComesBefore(const Sequence* first, const Sequence* second) {
  if (first->priority != second->priority) return first->priority > second->priority;
  if (first->arrival_time != second->arrival_time) {
    return first->arrival_time < second->arrival_time;
  }
  return first->id < second->id;
}

void InsertInOrder(std::vector<Sequence*>& list, Sequence* sequence) {
  list.insert(std::upper_bound(list.begin(), list.end(), sequence, ComesBefore), sequence);
}

// A sequence with only its last token left to run is decoding; more is a prefill (a prompt,
// or a whole sequence being recomputed).
void RefreshRunningState(Sequence& sequence) {
  sequence.state =
      sequence.num_uncomputed_tokens() <= 1 ? SequenceState::kDecoding : SequenceState::kPrefilling;
}

int64_t BlocksFor(int64_t num_tokens, int32_t block_size) {
  return (num_tokens + block_size - 1) / block_size;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerConfig& config,
                                                             const BlockManagerConfig& kv_config) {
  if (config.max_num_batched_tokens < 1 || config.max_num_seqs < 1 ||
      config.max_waiting_requests < 0 || config.max_waiting_tokens < 0 ||
      config.max_model_length < 2) {
    return absl::InvalidArgumentError(
        "scheduler limits must be positive (max_model_length at least 2 tokens)");
  }
  if (kv_config.block_size < 1 || kv_config.num_device_blocks < 1 ||
      kv_config.num_host_blocks < 0) {
    return absl::InvalidArgumentError(
        "the KV cache needs a positive block size and at least one device block");
  }
  if (!config.enable_chunked_prefill && config.max_num_batched_tokens < config.max_model_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "without chunked prefill, max_num_batched_tokens (", config.max_num_batched_tokens,
        ") must hold a whole sequence of max_model_length (", config.max_model_length, ") tokens"));
  }
  return std::unique_ptr<Scheduler>(new Scheduler(config, kv_config));
}

Scheduler::Scheduler(const SchedulerConfig& config, const BlockManagerConfig& kv_config)
    : config_(config), block_manager_(kv_config) {}

absl::Status Scheduler::AddRequest(SequenceRequest request) {
  if (sequences_.contains(request.id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", request.id, " already exists"));
  }
  const auto prompt_tokens = std::ssize(request.prompt_token_ids);
  if (prompt_tokens == 0 || request.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", request.id, " needs a non-empty prompt and max_tokens of at least 1"));
  }
  if (prompt_tokens + 1 > config_.max_model_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", request.id, ": a prompt of ", prompt_tokens,
                     " tokens leaves no room to generate within the maximum model length of ",
                     config_.max_model_length, " tokens"));
  }
  const int32_t block_size = block_manager_.block_size();
  if (BlocksFor(prompt_tokens + 1, block_size) > block_manager_.num_device_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", request.id, " can never fit: a prompt of ", prompt_tokens,
                     " tokens plus one generated token needs ",
                     BlocksFor(prompt_tokens + 1, block_size), " KV blocks; this replica has ",
                     block_manager_.num_device_blocks(), " blocks of ", block_size, " tokens"));
  }
  const int64_t work_tokens = prompt_tokens + request.max_tokens;
  if (waiting_requests_ + 1 > config_.max_waiting_requests ||
      waiting_work_tokens_ + work_tokens > config_.max_waiting_tokens) {
    ++counters_.requests_rejected_queue_full;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the waiting queue is full (", waiting_requests_, " requests, ", waiting_work_tokens_,
        " prompt + max_tokens tokens; limits ", config_.max_waiting_requests, " and ",
        config_.max_waiting_tokens, "); retry later"));
  }
  const int64_t id = request.id;
  Sequence& sequence = sequences_.try_emplace(id, std::move(request), block_size).first->second;
  ++waiting_requests_;
  waiting_tokens_ += prompt_tokens;
  waiting_work_tokens_ += work_tokens;
  InsertInOrder(queue_, &sequence);
  return absl::OkStatus();
}

absl::Status Scheduler::Cancel(int64_t sequence_id) {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("no live sequence ", sequence_id));
  }
  Sequence& sequence = found->second;
  LeaveWaiting(sequence);
  block_manager_.Free(sequence_id);
  sequence.state = SequenceState::kFinished;
  sequence.retire_reason = RetireReason::kCancelled;
  RemoveFinished();
  return absl::OkStatus();
}

const Sequence* Scheduler::FindSequence(int64_t sequence_id) const {
  const auto found = sequences_.find(sequence_id);
  return found == sequences_.end() ? nullptr : &found->second;
}

void Scheduler::LeaveWaiting(Sequence& sequence) {
  if (sequence.state != SequenceState::kWaiting) return;
  --waiting_requests_;
  waiting_tokens_ -= sequence.num_prompt_tokens;
  waiting_work_tokens_ -= sequence.num_prompt_tokens + sequence.max_tokens;
}

void Scheduler::Retire(Sequence& sequence, RetireReason reason, absl::Status status,
                       std::vector<RetiredSequence>& retired) {
  LeaveWaiting(sequence);
  block_manager_.Free(sequence.id);
  sequence.state = SequenceState::kFinished;
  sequence.retire_reason = reason;
  sequence.awaiting_token = false;
  retired.push_back(
      RetiredSequence{.sequence_id = sequence.id, .reason = reason, .status = std::move(status)});
}

void Scheduler::RemoveFinished() {
  finished_ids_.clear();
  const auto is_finished = [this](Sequence* sequence) {
    if (sequence->state != SequenceState::kFinished) return false;
    finished_ids_.push_back(sequence->id);
    return true;
  };
  std::erase_if(running_, is_finished);
  std::erase_if(queue_, is_finished);
  for (const int64_t id : finished_ids_) sequences_.erase(id);
}

void Scheduler::BeginOutput() {
  num_entries_ = 0;
  output_.plan.block_copies.clear();
  output_.plan.swap_out.clear();
  output_.plan.swap_in.clear();
  output_.admitted.clear();
  output_.preempted.clear();
  output_.swapped_in.clear();
  output_.retired.clear();
  output_.num_batched_tokens = 0;
}

void Scheduler::DropExpired(absl::Time now) {
  bool dropped = false;
  for (std::vector<Sequence*>* list : {&running_, &queue_}) {
    for (Sequence* sequence : *list) {
      if (sequence->deadline > now) continue;
      Retire(*sequence, RetireReason::kDeadlineExceeded,
             absl::DeadlineExceededError(
                 absl::StrCat("sequence ", sequence->id, " passed its deadline after ",
                              sequence->num_generated_tokens(), " generated tokens")),
             output_.retired);
      ++counters_.requests_dropped_deadline;
      dropped = true;
    }
  }
  if (dropped) RemoveFinished();
}

void Scheduler::EndOutput() {
  std::vector<ScheduledSequence>& entries = output_.plan.sequences;
  while (std::ssize(entries) > num_entries_) {
    spare_entries_.push_back(std::move(entries.back()));
    entries.pop_back();
  }
}

void Scheduler::Emit(Sequence& sequence, int64_t num_new_tokens,
                     absl::Span<const int32_t> block_table) {
  // Entries are overwritten in place, or taken from the spares, so their buffers are reused.
  std::vector<ScheduledSequence>& entries = output_.plan.sequences;
  if (num_entries_ == std::ssize(entries)) {
    if (spare_entries_.empty()) {
      entries.emplace_back();
    } else {
      entries.push_back(std::move(spare_entries_.back()));
      spare_entries_.pop_back();
    }
  }
  ScheduledSequence& entry = entries[static_cast<size_t>(num_entries_++)];
  const auto first = sequence.token_ids.begin() + sequence.num_computed_tokens;
  entry.sequence_id = sequence.id;
  entry.token_ids.assign(first, first + num_new_tokens);
  entry.start_position = sequence.num_computed_tokens;
  entry.block_table.assign(block_table.begin(), block_table.end());
  entry.needs_logits = num_new_tokens == sequence.num_uncomputed_tokens();
  sequence.awaiting_token = entry.needs_logits;
  output_.num_batched_tokens += num_new_tokens;
}

void Scheduler::Preempt(Sequence& victim) {
  const bool swap = std::visit(
      [&](const auto& policy) {
        using Policy = std::decay_t<decltype(policy)>;
        if constexpr (std::is_same_v<Policy, SwapPreemption>) {
          return victim.num_tokens() >= policy.min_tokens && block_manager_.CanSwapOut(victim.id);
        } else {
          return false;
        }
      },
      config_.preemption);
  if (swap) {
    const absl::Status swapped = block_manager_.SwapOut(victim.id, output_.plan.swap_out);
    assert(swapped.ok() && "CanSwapOut was checked");
    static_cast<void>(swapped);
    victim.state = SequenceState::kSwapped;
    ++counters_.preemptions_by_swap;
  } else {
    block_manager_.Free(victim.id);
    victim.num_computed_tokens = 0;
    victim.state = SequenceState::kPreempted;
    ++counters_.preemptions_by_recompute;
  }
  ++victim.num_preemptions;
  output_.preempted.push_back(Preemption{
      .sequence_id = victim.id, .mode = swap ? PreemptionMode::kSwap : PreemptionMode::kRecompute});
  InsertInOrder(queue_, &victim);
}

bool Scheduler::ScheduleRunning(int64_t& token_budget) {
  bool preempted = false;
  int64_t decodes_behind = 0;
  for (const Sequence* sequence : running_) {
    if (sequence->state == SequenceState::kDecoding) ++decodes_behind;
  }
  for (size_t index = 0; index < running_.size(); ++index) {
    Sequence& sequence = *running_[index];
    const bool decoding = sequence.state == SequenceState::kDecoding;
    if (decoding) --decodes_behind;
    // A prefill chunk leaves one token of budget for every decode still to come.
    const int64_t wanted = std::min(sequence.num_uncomputed_tokens(),
                                    decoding ? token_budget : token_budget - decodes_behind);
    if (wanted <= 0) continue;
    int64_t granted = 0;
    while (true) {
      granted = block_manager_.NumAppendableTokens(sequence.id, wanted);
      // A prefill takes a shorter chunk rather than preempt anyone.
      if (granted == wanted || (granted > 0 && !decoding)) break;
      if (running_.size() == 1) {
        // Alone, every device block is its own or available: it has outgrown the cache.
        running_.pop_back();
        Retire(sequence, RetireReason::kExceedsKvCapacity,
               absl::ResourceExhaustedError(absl::StrCat(
                   "sequence ", sequence.id, " can never fit: ", sequence.num_tokens(),
                   " tokens outgrow the whole KV cache of ", block_manager_.num_device_blocks(),
                   " blocks of ", block_manager_.block_size(), " tokens")),
               output_.retired);
        ++counters_.requests_failed_kv_capacity;
        granted = 0;
        break;
      }
      Sequence& victim = *running_.back();
      running_.pop_back();
      preempted = true;
      if (&victim == &sequence) {
        Preempt(victim);
        granted = 0;
        break;
      }
      if (victim.state == SequenceState::kDecoding) --decodes_behind;
      Preempt(victim);
    }
    if (granted == 0) continue;
    const absl::StatusOr<absl::Span<const int32_t>> table = block_manager_.Append(
        sequence.id, sequence.block_hashes.hashes(), granted, output_.plan.block_copies);
    assert(table.ok() && "NumAppendableTokens was checked");
    Emit(sequence, granted, *table);
    token_budget -= granted;
  }
  return preempted;
}

void Scheduler::AdmitFromQueue(int64_t& token_budget) {
  bool admitted_any = false;
  for (Sequence*& slot : queue_) {
    if (std::ssize(running_) >= config_.max_num_seqs || token_budget <= 0) break;
    Sequence& sequence = *slot;
    const absl::Span<const uint64_t> hashes = sequence.block_hashes.hashes();
    int64_t granted = 0;
    if (sequence.state == SequenceState::kSwapped) {
      const int64_t remaining = sequence.num_uncomputed_tokens();
      granted = std::min(remaining, token_budget);
      if (!config_.enable_chunked_prefill && granted < remaining) break;
      if (!block_manager_.CanSwapIn(sequence.id, granted)) break;
      const absl::Status swapped = block_manager_.SwapIn(sequence.id, output_.plan.swap_in);
      assert(swapped.ok() && "CanSwapIn was checked");
      static_cast<void>(swapped);
      const absl::StatusOr<absl::Span<const int32_t>> table =
          block_manager_.Append(sequence.id, hashes, granted, output_.plan.block_copies);
      assert(table.ok() && "CanSwapIn counted the new tokens");
      static_cast<void>(table);
      output_.swapped_in.push_back(sequence.id);
    } else {
      const PrefixMatch match = block_manager_.MatchPrefix(hashes, sequence.num_tokens());
      // Another sequence computes this prefix in this step: share it next step instead.
      if (match.waits_for_pending) continue;
      const int64_t remaining = sequence.num_tokens() - match.num_cached_tokens;
      granted = std::min(remaining, token_budget);
      if (!config_.enable_chunked_prefill && granted < remaining) break;
      if (!block_manager_.CanAdmit(match, granted)) break;
      const absl::Status admitted = block_manager_.Admit(sequence.id, hashes, match, granted);
      assert(admitted.ok() && "CanAdmit was checked");
      static_cast<void>(admitted);
      LeaveWaiting(sequence);
      sequence.num_computed_tokens = match.num_cached_tokens;
      output_.admitted.push_back(sequence.id);
    }
    RefreshRunningState(sequence);
    Emit(sequence, granted, block_manager_.BlockTable(sequence.id));
    token_budget -= granted;
    InsertInOrder(running_, &sequence);
    slot = nullptr;
    admitted_any = true;
  }
  if (admitted_any) std::erase(queue_, nullptr);
}

const SchedulerOutput& Scheduler::Schedule(absl::Time now) {
  assert(!step_in_flight_ && "Schedule called twice without ApplyStepResult");
  step_in_flight_ = true;
  BeginOutput();
  DropExpired(now);
  int64_t token_budget = config_.max_num_batched_tokens;
  const bool preempted = ScheduleRunning(token_budget);
  // After a preemption the cache is tight: admitting now would only preempt again. Skipping
  // admission also keeps swap-outs and swap-ins out of the same step (see StepPlan).
  if (!preempted) AdmitFromQueue(token_budget);
  if (!output_.retired.empty()) RemoveFinished();
  EndOutput();
  return output_;
}

absl::Status Scheduler::ApplyStepResult(const StepResult& result,
                                        std::vector<RetiredSequence>& finished) {
  if (!step_in_flight_) return absl::FailedPreconditionError("no step in flight to apply");
  // Validate everything before changing anything.
  int64_t expected_tokens = 0;
  for (const ScheduledSequence& entry : output_.plan.sequences) {
    if (entry.needs_logits && sequences_.contains(entry.sequence_id)) ++expected_tokens;
  }
  sampled_ids_.clear();
  for (const SampledToken& token : result.tokens) {
    const auto found = sequences_.find(token.sequence_id);
    if (found == sequences_.end()) continue;  // cancelled while the step ran
    if (!found->second.awaiting_token || !sampled_ids_.insert(token.sequence_id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("step result has an unexpected token for sequence ", token.sequence_id));
    }
  }
  if (std::ssize(sampled_ids_) != expected_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("step result has ", sampled_ids_.size(),
                                                   " tokens for the ", expected_tokens,
                                                   " sequences that needed one"));
  }
  step_in_flight_ = false;
  for (const ScheduledSequence& entry : output_.plan.sequences) {
    const auto found = sequences_.find(entry.sequence_id);
    if (found == sequences_.end()) continue;
    Sequence& sequence = found->second;
    sequence.num_computed_tokens += std::ssize(entry.token_ids);
    block_manager_.MarkComputed(sequence.id, sequence.block_hashes.hashes(),
                                sequence.num_computed_tokens);
    if (!entry.needs_logits) RefreshRunningState(sequence);
  }
  bool any_finished = false;
  for (const SampledToken& token : result.tokens) {
    const auto found = sequences_.find(token.sequence_id);
    if (found == sequences_.end()) continue;
    Sequence& sequence = found->second;
    sequence.AppendToken(token.token_id);
    sequence.awaiting_token = false;
    RetireReason reason = RetireReason::kNone;
    if (std::find(sequence.stop_token_ids.begin(), sequence.stop_token_ids.end(), token.token_id) !=
        sequence.stop_token_ids.end()) {
      reason = RetireReason::kStopToken;
    } else if (sequence.num_generated_tokens() >= sequence.max_tokens) {
      reason = RetireReason::kMaxTokens;
    } else if (sequence.num_tokens() >= config_.max_model_length) {
      reason = RetireReason::kMaxModelLength;
    }
    if (reason == RetireReason::kNone) {
      RefreshRunningState(sequence);
    } else {
      Retire(sequence, reason, absl::OkStatus(), finished);
      any_finished = true;
    }
  }
  if (any_finished) RemoveFinished();
  return absl::OkStatus();
}

}  // namespace reflect
