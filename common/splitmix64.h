// SplitMix64 (Steele, Lea & Flood, 2014; finalizer constants of Stafford's "variant 13"): the
// counter-based mixing behind reproducible sampling (worker/sampler) and the deterministic model
// generator (tools/reflect/weight_generator). Both are pinned by tests: changing this changes
// every seeded output and every generated model.
#pragma once

#include <cstdint>

namespace reflect {

// The Weyl-sequence increment: state_i = start + i * kSplitMix64Gamma.
inline constexpr uint64_t kSplitMix64Gamma = 0x9E3779B97F4A7C15ULL;

// The output function: a bijection on 64-bit words whose every output bit depends on every
// input bit.
inline uint64_t SplitMix64Mix(uint64_t value) {
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
  return value ^ (value >> 31);
}

}  // namespace reflect
