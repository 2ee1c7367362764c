// How to pick the next token of one request (DESIGN §3). Validated once, in the router (or the
// CLI); the engine trusts these values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reflect {

struct SamplingParams {
  double temperature = 0.0;         // 0: greedy (argmax), else > 0
  double top_p = 1.0;               // (0, 1]
  int64_t top_k = 0;                // 0: off
  double min_p = 0.0;               // [0, 1]; 0: off
  double repetition_penalty = 1.0;  // > 0; 1: off (applies to prompt and generated tokens)
  double frequency_penalty = 0.0;   // [-2, 2]; generated tokens only
  double presence_penalty = 0.0;    // [-2, 2]; generated tokens only
  uint64_t seed = 0;                // the random draw at position p is a function of (seed, p)
  int64_t max_tokens = 16;          // tokens to generate, > 0
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;  // in addition to the model's eos ids
  std::vector<std::string> stop;        // stop strings (matched on text, by the router)
  int32_t logprobs = 0;                 // n best log-probabilities to return per token; 0: none
};

}  // namespace reflect
