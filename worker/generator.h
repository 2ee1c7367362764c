// Generator: offline continuous batching over one Backend, until the real scheduler (scheduler/)
// takes over. Every request arrives at once; each step decodes every running sequence, continues
// or starts prompts in chunks with what is left of the token budget (chunked prefill beside
// decodes), samples through Backend::ForwardAndSample at each sequence's position, and retires
// finished sequences at once, freeing their KV blocks for the next admission.
//
// KV policy: a request is admitted only when the pool can hold its longest possible sequence
// (prompt + max_tokens, capped by the context length), and those blocks are taken at admission.
// So a running sequence never waits for a block: no preemption and no deadlock. A request that
// could not fit even in an empty pool is rejected before any step runs.
//
// Because the CPU backend is batch invariant and the sampler's draw depends only on (seed,
// position), a request's tokens do not depend on the other requests or on the token budget.
//
// Thread-safety: none. Cost: one Backend::Forward per step.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sampling_params.h"
#include "kvcache/block_allocator.h"
#include "scheduler/step_plan.h"
#include "worker/backend.h"

namespace reflect {

struct GeneratorOptions {
  int64_t max_num_batched_tokens = 2048;  // tokens run per step, prefill and decode together
  int64_t max_num_seqs = 64;              // sequences running at once
  // Context length (the model's max_position_embeddings): prompt + generated tokens never
  // exceed it. 0: no limit beyond the KV pool.
  int64_t max_model_length = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;  // not empty; each in [0, vocab_size)
  SamplingParams params;
  std::vector<int32_t> eos_token_ids;  // the model's; ignored with params.ignore_eos
};

enum class FinishReason {
  kStop,    // an eos or stop token was sampled (it is the last generated id)
  kLength,  // max_tokens or the context length was reached
};

// True when sampling `token` ends `request` with kStop: one of its eos ids (unless ignore_eos)
// or of its stop_token_ids (even with ignore_eos, as in vLLM).
bool IsStopToken(const GenerationRequest& request, int32_t token);

// "stop" or "length", as in the OpenAI API.
std::string_view FinishReasonName(FinishReason reason);

struct GenerationResult {
  std::vector<int32_t> generated_ids;  // includes the eos / stop token that ended it
  std::vector<float> logprobs;         // one per generated id (see SampledToken)
  // One per generated id when params.logprobs > 0 (SampledToken::top_logprobs), else empty.
  std::vector<std::vector<TokenAlternative>> top_logprobs;
  FinishReason finish_reason = FinishReason::kLength;
  double time_to_first_token_seconds = 0.0;  // from the start of Generate
  double total_seconds = 0.0;                // from the start of Generate to the last token
};

// ---- Planning: pure, no allocation side effects (DESIGN §11: plan, then apply). ----

// What the planner needs to know of one request, in arrival order.
struct PlanningSequence {
  bool running = false;             // admitted: holds its KV blocks
  bool finished = false;            // done; neither runs nor holds blocks
  int64_t num_tokens = 0;           // prompt + generated tokens known so far
  int64_t num_computed_tokens = 0;  // of those, already in the KV cache
  int64_t num_blocks_reserved = 0;  // blocks taken at admission (its longest possible length)
};

// One sequence's share of a planned step: its tokens [num_computed_tokens, + num_new_tokens).
struct PlannedChunk {
  size_t sequence_index = 0;
  int64_t num_new_tokens = 0;
  bool admit = false;         // waiting until now: reserve its blocks before running
  bool needs_logits = false;  // the chunk reaches the last known token: sample after it
};

// Decodes of running sequences first (one token each), then running prefills, then waiting
// sequences in arrival order while the budget, the sequence cap and the free blocks allow (the
// first one that does not fit stops admission, so nobody is overtaken forever). A prompt that
// does not fit the remaining budget runs a chunk of it.
std::vector<PlannedChunk> PlanStep(std::span<const PlanningSequence> sequences,
                                   int64_t num_free_blocks, const GeneratorOptions& options);

// ---- The loop. ----

class Generator {
 public:
  // Called after each sampled token: (request index, token id). The token's position in its
  // request is the number of tokens already reported for it.
  using TokenCallback = std::function<void(size_t request_index, int32_t token_id)>;

  // `backend` must outlive the Generator. The block pool has backend.num_kv_blocks() blocks.
  Generator(Backend& backend, const GeneratorOptions& options);

  // Runs every request to completion; results in request order. INVALID_ARGUMENT for a bad
  // request (empty prompt, id outside the vocabulary, max_tokens < 1, prompt at the context
  // limit), RESOURCE_EXHAUSTED for one the KV pool cannot hold, or the backend's error. On any
  // error every block is free again.
  absl::StatusOr<std::vector<GenerationResult>> Generate(
      const std::vector<GenerationRequest>& requests, const TokenCallback& on_token = nullptr);

  const BlockAllocator& block_allocator() const { return block_allocator_; }

 private:
  Backend& backend_;
  GeneratorOptions options_;
  BlockAllocator block_allocator_;
};

}  // namespace reflect
