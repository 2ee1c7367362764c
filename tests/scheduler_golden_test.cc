// Scheduler golden tests (DESIGN §4): each scenario feeds requests (and cancels) at given steps,
// plays the backend with deterministic sampled tokens, and compares one row per iteration with
// the expected table. A row reads
//
//   "<step>: <scheduled> | <queue> | <kv> | <events>"
//
//   scheduled  sequence:tokens run this step, in plan order ("-" when none);
//   queue      sequences not running after planning: a bare name is waiting, "(p)" preempted
//              for recompute, "(s)" swapped to host ("-" when empty);
//   kv         device blocks after planning: used / cached (evictable) / free;
//   events     what happened this step, in order: rejected requests, cancels, deadline drops,
//              failures, admissions ("+B" or "+B(8 cached)"), preemptions ("B>recompute",
//              "B>swap"), swap-ins ("B<swap"), and sequences finished by this step's tokens
//              ("A=length", "A=stop").
//
// On a mismatch the test prints the actual table as C++ literals, ready to review and paste.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scheduler/scheduler.h"

namespace reflect {
namespace {

constexpr int32_t kStopToken = 2;

struct Request {
  char name = 'A';  // the sequence id is the letter's code
  int step = 0;     // added just before that step's Schedule
  int64_t prompt_tokens = 1;
  int64_t max_tokens = 1;
  int32_t priority = 0;
  int deadline_step = -1;            // -1: none
  int64_t shared_prefix_tokens = 0;  // leading tokens taken from one common system prompt
  int64_t stop_after = 0;            // the n-th generated token is the stop token (0: never)
};

struct CancelAt {
  int step = 0;
  char name = 'A';
};

struct Scenario {
  SchedulerConfig config;
  BlockManagerConfig kv;
  std::vector<Request> requests;
  std::vector<std::string> expected;
  std::vector<CancelAt> cancels = {};
};

absl::Time AtStep(int step) { return absl::UnixEpoch() + absl::Seconds(step); }

std::string Name(int64_t id) { return std::string(1, static_cast<char>(id)); }

SequenceRequest MakeRequest(const Request& request) {
  SequenceRequest made;
  made.id = request.name;
  for (int64_t index = 0; index < request.prompt_tokens; ++index) {
    made.prompt_token_ids.push_back(index < request.shared_prefix_tokens
                                        ? static_cast<int32_t>(500000 + index)
                                        : static_cast<int32_t>(request.name * 100000 + index));
  }
  made.max_tokens = request.max_tokens;
  made.stop_token_ids = {kStopToken};
  made.priority = request.priority;
  made.arrival_time = AtStep(request.step);
  if (request.deadline_step >= 0) made.deadline = AtStep(request.deadline_step);
  return made;
}

// Runs the scenario for as many steps as it expects rows; returns the actual rows.
std::vector<std::string> Play(const Scenario& scenario) {
  absl::StatusOr<std::unique_ptr<Scheduler>> created =
      Scheduler::Create(scenario.config, scenario.kv);
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return {};
  Scheduler& scheduler = **created;
  for (const Request& request : scenario.requests) {
    EXPECT_LT(request.step, std::ssize(scenario.expected))
        << "request " << request.name << " arrives after the last step";
  }
  std::vector<std::string> rows;
  std::vector<RetiredSequence> finished;
  for (int step = 0; step < std::ssize(scenario.expected); ++step) {
    std::vector<std::string> events;
    for (const Request& request : scenario.requests) {
      if (request.step != step) continue;
      const absl::Status added = scheduler.AddRequest(MakeRequest(request));
      if (!added.ok()) {
        events.push_back(absl::StrCat("reject ", Name(request.name), "(",
                                      absl::StatusCodeToString(added.code()), ")"));
      }
    }
    for (const CancelAt& cancel : scenario.cancels) {
      if (cancel.step != step) continue;
      EXPECT_TRUE(scheduler.Cancel(cancel.name).ok());
      events.push_back(absl::StrCat("cancel ", Name(cancel.name)));
    }
    const SchedulerOutput& output = scheduler.Schedule(AtStep(step));
    for (const RetiredSequence& retired : output.retired) {
      events.push_back(absl::StrCat(
          retired.reason == RetireReason::kDeadlineExceeded ? "drop " : "fail ",
          Name(retired.sequence_id), "(", std::string(RetireReasonName(retired.reason)), ")"));
    }
    for (const int64_t id : output.admitted) {
      const Sequence* sequence = scheduler.FindSequence(id);
      events.push_back(
          sequence->num_computed_tokens > 0
              ? absl::StrCat("+", Name(id), "(", sequence->num_computed_tokens, " cached)")
              : absl::StrCat("+", Name(id)));
    }
    for (const Preemption& preemption : output.preempted) {
      events.push_back(
          absl::StrCat(Name(preemption.sequence_id),
                       preemption.mode == PreemptionMode::kSwap ? ">swap" : ">recompute"));
    }
    for (const int64_t id : output.swapped_in) events.push_back(absl::StrCat(Name(id), "<swap"));

    std::vector<std::string> scheduled;
    StepResult result;
    for (const ScheduledSequence& entry : output.plan.sequences) {
      scheduled.push_back(absl::StrCat(Name(entry.sequence_id), ":", entry.token_ids.size()));
      if (!entry.needs_logits) continue;
      const Sequence* sequence = scheduler.FindSequence(entry.sequence_id);
      const int64_t nth = sequence->num_generated_tokens() + 1;
      int64_t stop_after = 0;
      for (const Request& request : scenario.requests) {
        if (request.name == entry.sequence_id) stop_after = request.stop_after;
      }
      result.tokens.push_back(SampledToken{
          .sequence_id = entry.sequence_id,
          .token_id = nth == stop_after ? kStopToken : static_cast<int32_t>(10000 + nth)});
    }
    std::vector<std::string> queue;
    for (int64_t id = 'A'; id <= 'Z'; ++id) {
      const Sequence* sequence = scheduler.FindSequence(id);
      if (sequence == nullptr) continue;
      if (sequence->state == SequenceState::kWaiting) queue.push_back(Name(id));
      if (sequence->state == SequenceState::kPreempted) queue.push_back(Name(id) + "(p)");
      if (sequence->state == SequenceState::kSwapped) queue.push_back(Name(id) + "(s)");
    }
    const BlockManager& blocks = scheduler.block_manager();
    const std::string kv = absl::StrCat(blocks.num_used_blocks(), "/", blocks.num_cached_blocks(),
                                        "/", blocks.num_free_blocks());
    EXPECT_TRUE(blocks.CheckConsistency().ok()) << blocks.CheckConsistency();

    finished.clear();
    const absl::Status applied = scheduler.ApplyStepResult(result, finished);
    EXPECT_TRUE(applied.ok()) << applied;
    for (const RetiredSequence& done : finished) {
      events.push_back(
          absl::StrCat(Name(done.sequence_id), "=", std::string(RetireReasonName(done.reason))));
    }
    rows.push_back(absl::StrCat(step, ": ", scheduled.empty() ? "-" : absl::StrJoin(scheduled, " "),
                                " | ", queue.empty() ? "-" : absl::StrJoin(queue, " "), " | ", kv,
                                " | ", absl::StrJoin(events, " ")));
  }
  // Every scenario runs to the end: nothing left, no block leaked.
  EXPECT_EQ(scheduler.num_running() + scheduler.num_queued(), 0);
  EXPECT_EQ(scheduler.block_manager().num_used_blocks(), 0);
  EXPECT_EQ(scheduler.block_manager().num_free_host_blocks(),
            scheduler.block_manager().num_host_blocks());
  return rows;
}

void ExpectGolden(const Scenario& scenario) {
  const std::vector<std::string> actual = Play(scenario);
  std::string table;
  for (const std::string& row : actual) absl::StrAppend(&table, "      \"", row, "\",\n");
  EXPECT_EQ(actual, scenario.expected) << "actual table:\n" << table;
}

BlockManagerConfig Kv(int32_t device_blocks, int32_t host_blocks = 0, int32_t block_size = 4) {
  return BlockManagerConfig{.block_size = block_size,
                            .num_device_blocks = device_blocks,
                            .num_host_blocks = host_blocks,
                            .enable_prefix_caching = true};
}

SchedulerConfig Limits(int64_t token_budget, int32_t max_sequences) {
  SchedulerConfig config;
  config.max_num_batched_tokens = token_budget;
  config.max_num_seqs = max_sequences;
  config.max_model_length = 1 << 20;
  config.preemption = RecomputePreemption{};
  return config;
}

// Short and long prompts share steps: the long one is chunked around the others' decodes.
TEST(SchedulerGoldenTest, MixedLengths) {
  ExpectGolden({.config = Limits(16, 8),
                .kv = Kv(64),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 3, .max_tokens = 3},
                             {.name = 'B', .step = 0, .prompt_tokens = 20, .max_tokens = 2},
                             {.name = 'C', .step = 1, .prompt_tokens = 6, .max_tokens = 2}},
                .expected = {
                    "0: A:3 B:13 | - | 5/0/59 | +A +B",
                    "1: A:1 B:7 C:6 | - | 8/0/56 | +C",
                    "2: A:1 B:1 C:1 | - | 10/0/54 | A=length B=length C=length",
                }});
}

// A 32k-token prompt is prefilled in chunks of what the budget leaves beside two decodes,
// which keep getting their token every step.
TEST(SchedulerGoldenTest, LongPromptChunkedBesideDecodes) {
  ExpectGolden({.config = Limits(4096, 8),
                .kv = Kv(2100, 0, 16),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 8, .max_tokens = 12},
                             {.name = 'B', .step = 0, .prompt_tokens = 8, .max_tokens = 12},
                             {.name = 'L', .step = 1, .prompt_tokens = 32768, .max_tokens = 2}},
                .expected = {
                    "0: A:8 B:8 | - | 2/0/2098 | +A +B",
                    "1: A:1 B:1 L:4094 | - | 258/0/1842 | +L",
                    "2: A:1 B:1 L:4094 | - | 514/0/1586 | ",
                    "3: A:1 B:1 L:4094 | - | 770/0/1330 | ",
                    "4: A:1 B:1 L:4094 | - | 1026/0/1074 | ",
                    "5: A:1 B:1 L:4094 | - | 1282/0/818 | ",
                    "6: A:1 B:1 L:4094 | - | 1538/0/562 | ",
                    "7: A:1 B:1 L:4094 | - | 1794/0/306 | ",
                    "8: A:1 B:1 L:4094 | - | 2049/0/51 | ",
                    "9: A:1 B:1 L:16 | - | 2052/0/48 | ",
                    "10: A:1 B:1 L:1 | - | 2053/0/47 | L=length",
                    "11: A:1 B:1 | - | 4/2048/48 | A=length B=length",
                }});
}

// The KV cache runs out: the latest arrival is preempted and recomputed later, its own
// freed blocks served from the prefix cache.
TEST(SchedulerGoldenTest, KvExhaustionPreemptsByRecompute) {
  ExpectGolden({.config = Limits(64, 8),
                .kv = Kv(6),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 8, .max_tokens = 8},
                             {.name = 'B', .step = 0, .prompt_tokens = 8, .max_tokens = 8}},
                .expected = {
                    "0: A:8 B:8 | - | 4/0/2 | +A +B",
                    "1: A:1 B:1 | - | 6/0/0 | ",
                    "2: A:1 B:1 | - | 6/0/0 | ",
                    "3: A:1 B:1 | - | 6/0/0 | ",
                    "4: A:1 B:1 | - | 6/0/0 | ",
                    "5: A:1 | B(p) | 4/2/0 | B>recompute",
                    "6: A:1 | B(p) | 4/2/0 | ",
                    "7: A:1 | B(p) | 4/2/0 | A=length",
                    "8: B:5 | - | 4/2/0 | +B(8 cached)",
                    "9: B:1 | - | 4/2/0 | ",
                    "10: B:1 | - | 4/2/0 | B=length",
                }});
}

// Same pressure with the swap policy: the victim's blocks go to host memory and come back.
TEST(SchedulerGoldenTest, PreemptBySwapAndResume) {
  SchedulerConfig config = Limits(64, 8);
  config.preemption = SwapPreemption{.min_tokens = 0};
  ExpectGolden({.config = config,
                .kv = Kv(6, 8),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 8, .max_tokens = 8},
                             {.name = 'B', .step = 0, .prompt_tokens = 8, .max_tokens = 8}},
                .expected = {
                    "0: A:8 B:8 | - | 4/0/2 | +A +B",
                    "1: A:1 B:1 | - | 6/0/0 | ",
                    "2: A:1 B:1 | - | 6/0/0 | ",
                    "3: A:1 B:1 | - | 6/0/0 | ",
                    "4: A:1 B:1 | - | 6/0/0 | ",
                    "5: A:1 | B(s) | 4/2/0 | B>swap",
                    "6: A:1 | B(s) | 4/2/0 | ",
                    "7: A:1 | B(s) | 4/2/0 | A=length",
                    "8: B:1 | - | 4/2/0 | B<swap",
                    "9: B:1 | - | 4/2/0 | ",
                    "10: B:1 | - | 4/2/0 | B=length",
                }});
}

// Swap is for long victims only: a short one is recomputed even though host space is free.
TEST(SchedulerGoldenTest, SwapPolicyRecomputesShortVictims) {
  SchedulerConfig config = Limits(64, 8);
  config.preemption = SwapPreemption{.min_tokens = 12};
  ExpectGolden({.config = config,
                .kv = Kv(8, 8),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 12, .max_tokens = 6},
                             {.name = 'B', .step = 0, .prompt_tokens = 10, .max_tokens = 6},
                             {.name = 'C', .step = 0, .prompt_tokens = 4, .max_tokens = 6}},
                .expected = {
                    "0: A:12 B:10 C:4 | - | 7/0/1 | +A +B +C",
                    "1: A:1 B:1 | C(p) | 7/1/0 | C>recompute",
                    "2: A:1 B:1 | C(p) | 7/1/0 | ",
                    "3: A:1 B:1 | C(p) | 8/0/0 | ",
                    "4: A:1 B:1 | C(p) | 8/0/0 | ",
                    "5: A:1 | B(s) C(p) | 5/3/0 | B>swap A=length",
                    "6: B:1 C:5 | - | 6/2/0 | +C B<swap B=length",
                    "7: C:1 | - | 2/5/1 | ",
                    "8: C:1 | - | 2/5/1 | ",
                    "9: C:1 | - | 2/5/1 | ",
                    "10: C:1 | - | 3/5/0 | C=length",
                }});
}

// Cancelling a sequence mid-prefill frees its blocks at once; the next one is admitted.
TEST(SchedulerGoldenTest, CancelMidPrefill) {
  ExpectGolden({.config = Limits(8, 1),
                .kv = Kv(16),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 30, .max_tokens = 4},
                             {.name = 'B', .step = 0, .prompt_tokens = 5, .max_tokens = 2}},
                .expected =
                    {
                        "0: A:8 | B | 2/0/14 | +A",
                        "1: A:8 | B | 4/0/12 | ",
                        "2: B:5 | - | 2/4/10 | cancel A +B",
                        "3: B:1 | - | 2/4/10 | B=length",
                    },
                .cancels = {{.step = 2, .name = 'A'}}});
}

// A waiting request whose deadline passes is dropped without ever running.
TEST(SchedulerGoldenTest, DeadlineExpiry) {
  ExpectGolden(
      {.config = Limits(32, 1),
       .kv = Kv(16),
       .requests =
           {{.name = 'A', .step = 0, .prompt_tokens = 4, .max_tokens = 5},
            {.name = 'B', .step = 0, .prompt_tokens = 4, .max_tokens = 2, .deadline_step = 3},
            {.name = 'C', .step = 1, .prompt_tokens = 4, .max_tokens = 2}},
       .expected = {
           "0: A:4 | B | 1/0/15 | +A",
           "1: A:1 | B C | 2/0/14 | ",
           "2: A:1 | B C | 2/0/14 | ",
           "3: A:1 | C | 2/0/14 | drop B(deadline)",
           "4: A:1 | C | 2/0/14 | A=length",
           "5: C:4 | - | 1/2/13 | +C",
           "6: C:1 | - | 2/2/12 | C=length",
       }});
}

// Priorities order admission (a later high-priority request overtakes) and choose the
// victim (the low-priority one, although it arrived first).
TEST(SchedulerGoldenTest, Priorities) {
  ExpectGolden(
      {.config = Limits(64, 2),
       .kv = Kv(7),
       .requests = {{.name = 'L', .step = 0, .prompt_tokens = 8, .max_tokens = 8},
                    {.name = 'H', .step = 1, .prompt_tokens = 8, .max_tokens = 8, .priority = 5},
                    {.name = 'W', .step = 1, .prompt_tokens = 4, .max_tokens = 1},
                    {.name = 'V', .step = 2, .prompt_tokens = 4, .max_tokens = 1, .priority = 1}},
       .expected = {
           "0: L:8 | - | 2/0/5 | +L",
           "1: L:1 H:8 | W | 5/0/2 | +H",
           "2: H:1 L:1 | V W | 6/0/1 | ",
           "3: H:1 L:1 | V W | 6/0/1 | ",
           "4: H:1 L:1 | V W | 6/0/1 | ",
           "5: H:1 L:1 | V W | 7/0/0 | ",
           "6: H:1 | L(p) V W | 4/3/0 | L>recompute",
           "7: H:1 V:4 | L(p) W | 5/2/0 | +V V=length",
           "8: H:1 | L(p) W | 4/3/0 | H=length",
           "9: L:6 W:4 | - | 5/2/0 | +L(8 cached) +W W=length",
           "10: L:1 | - | 4/3/0 | L=length",
       }});
}

// A prompt beyond the whole cache is rejected at once; a sequence that outgrows the cache
// while decoding fails with a clear error instead of preempting itself forever.
TEST(SchedulerGoldenTest, SequencesThatCanNeverFit) {
  ExpectGolden({.config = Limits(64, 4),
                .kv = Kv(4),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 16, .max_tokens = 4},
                             {.name = 'B', .step = 0, .prompt_tokens = 10, .max_tokens = 20}},
                .expected = {
                    "0: B:10 | - | 3/0/1 | reject A(INVALID_ARGUMENT) +B",
                    "1: B:1 | - | 3/0/1 | ",
                    "2: B:1 | - | 3/0/1 | ",
                    "3: B:1 | - | 4/0/0 | ",
                    "4: B:1 | - | 4/0/0 | ",
                    "5: B:1 | - | 4/0/0 | ",
                    "6: B:1 | - | 4/0/0 | ",
                    "7: - | - | 0/4/0 | fail B(kv_capacity)",
                }});
}

// The waiting queue is bounded by requests and by work tokens (prompt + max_tokens): beyond it,
// RESOURCE_EXHAUSTED. Step 1: B (4 + 2) + D (14 + 2) = 22 fit in 24; step 3: D's 16 + E's 9 do
// not, D's 16 + F's 7 do.
TEST(SchedulerGoldenTest, BoundedWaitingQueue) {
  SchedulerConfig config = Limits(64, 1);
  config.max_waiting_requests = 2;
  config.max_waiting_tokens = 24;
  ExpectGolden({.config = config,
                .kv = Kv(16),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 4, .max_tokens = 2},
                             {.name = 'B', .step = 0, .prompt_tokens = 4, .max_tokens = 2},
                             {.name = 'C', .step = 0, .prompt_tokens = 4, .max_tokens = 2},
                             {.name = 'D', .step = 1, .prompt_tokens = 14, .max_tokens = 2},
                             {.name = 'E', .step = 3, .prompt_tokens = 7, .max_tokens = 2},
                             {.name = 'F', .step = 3, .prompt_tokens = 6, .max_tokens = 1}},
                .expected = {
                    "0: A:4 | B | 1/0/15 | reject C(RESOURCE_EXHAUSTED) +A",
                    "1: A:1 | B D | 2/0/14 | A=length",
                    "2: B:4 | D | 1/1/14 | +B",
                    "3: B:1 | D F | 2/1/13 | reject E(RESOURCE_EXHAUSTED) B=length",
                    "4: D:14 | F | 4/2/10 | +D",
                    "5: D:1 | F | 4/2/10 | D=length",
                    "6: F:6 | - | 2/5/9 | +F F=length",
                }});
}

// The shared system prompt is computed once: a request arriving in the same step waits one
// step for the blocks being computed, then shares them; a later one revives them from the
// evictable cache after everyone finished.
TEST(SchedulerGoldenTest, SharedSystemPromptComputedOnce) {
  ExpectGolden({.config = Limits(64, 8),
                .kv = Kv(16),
                .requests = {{.name = 'A',
                              .step = 0,
                              .prompt_tokens = 20,
                              .max_tokens = 2,
                              .shared_prefix_tokens = 16},
                             {.name = 'B',
                              .step = 0,
                              .prompt_tokens = 22,
                              .max_tokens = 2,
                              .shared_prefix_tokens = 16},
                             {.name = 'C',
                              .step = 3,
                              .prompt_tokens = 18,
                              .max_tokens = 1,
                              .shared_prefix_tokens = 16}},
                .expected = {
                    "0: A:20 | B | 5/0/11 | +A",
                    "1: A:1 B:6 | - | 8/0/8 | +B(16 cached) A=length",
                    "2: B:1 | - | 6/1/9 | B=length",
                    "3: C:2 | - | 5/2/9 | +C(16 cached) C=length",
                }});
}

// Stop tokens end a sequence before max_tokens; the sequence cap holds others back.
TEST(SchedulerGoldenTest, StopTokenAndSequenceCap) {
  ExpectGolden(
      {.config = Limits(64, 2),
       .kv = Kv(16),
       .requests = {{.name = 'A', .step = 0, .prompt_tokens = 4, .max_tokens = 10, .stop_after = 2},
                    {.name = 'B', .step = 0, .prompt_tokens = 4, .max_tokens = 3},
                    {.name = 'C', .step = 0, .prompt_tokens = 4, .max_tokens = 1}},
       .expected = {
           "0: A:4 B:4 | C | 2/0/14 | +A +B",
           "1: A:1 B:1 | C | 4/0/12 | A=stop",
           "2: B:1 C:4 | - | 3/1/12 | +C B=length C=length",
       }});
}

// Without chunked prefill a prompt runs whole or waits for a step with room for it.
TEST(SchedulerGoldenTest, WholePromptsWithoutChunking) {
  SchedulerConfig config = Limits(32, 4);
  config.enable_chunked_prefill = false;
  config.max_model_length = 32;
  ExpectGolden({.config = config,
                .kv = Kv(32),
                .requests = {{.name = 'A', .step = 0, .prompt_tokens = 20, .max_tokens = 2},
                             {.name = 'B', .step = 0, .prompt_tokens = 20, .max_tokens = 2},
                             {.name = 'C', .step = 0, .prompt_tokens = 30, .max_tokens = 5}},
                .expected = {
                    "0: A:20 | B C | 5/0/27 | +A",
                    "1: A:1 B:20 | C | 11/0/21 | +B A=length",
                    "2: B:1 C:30 | - | 14/5/13 | +C B=length",
                    "3: C:1 | - | 8/10/14 | C=model_length",
                }});
}

}  // namespace
}  // namespace reflect
