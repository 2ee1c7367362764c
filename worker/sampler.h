// Picks the next token from one row of logits (DESIGN §6): penalties, temperature, top-k, top-p,
// min-p, then a draw whose uniform random number is a pure function of (seed, position), so a
// request gives the same tokens alone, batched, or replayed on another replica.
#pragma once

#include <cstdint>
#include <span>

#include "common/sampling_params.h"
#include "scheduler/step_plan.h"

namespace reflect {

// The uniform number in [0, 1) for the token at `position` of a request seeded with `seed`.
double SamplingUniform(uint64_t seed, int64_t position);

// The first stage of SampleToken, exposed for tests: repetition penalty (Hugging Face: each
// distinct token of prompt + generated, logit > 0 ? logit / p : logit * p), then frequency and
// presence penalties (OpenAI: over generated tokens, logit -= count * frequency + presence).
// Ids outside [0, logits.size()) are ignored.
void ApplyPenalties(std::span<float> logits, const SamplingParams& params,
                    std::span<const int32_t> prompt_ids, std::span<const int32_t> generated_ids);

// `logits` is modified in place (it is scratch). `prompt_ids` and `generated_ids` feed the
// penalties; `position` is the position the sampled token will take. The result's `logprob` and,
// when params.logprobs = N > 0, its `top_logprobs` (the N most likely tokens, most likely first,
// equal logits by lower id) are natural logs under the processed distribution: the one the draw
// used (after penalties, temperature, top-k, top-p and min-p, renormalized over the kept tokens),
// or for greedy the log-softmax of the penalized logits at temperature 1. Tokens of probability 0
// under it (outside the kept set) are never alternatives, so there may be fewer than N. The
// alternatives cost one partial selection over the vocabulary, and nothing when N = 0.
// NaN and -inf logits have probability 0 (greedy picks NaN only when every logit is NaN).
// Exponentials use the CPU kernels' AVX-512 exp (relative error ~2e-7), sums are in double.
SampledToken SampleToken(std::span<float> logits, const SamplingParams& params,
                         std::span<const int32_t> prompt_ids,
                         std::span<const int32_t> generated_ids, int64_t position);

}  // namespace reflect
