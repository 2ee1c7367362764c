// KV block operations the block manager asks the backend to perform before a step (DESIGN §3,
// §5). Plain data; scheduler/step_plan.h carries them to every rank.
#pragma once

#include <cstdint>

namespace reflect {

// Copy one physical KV block to another (copy-on-write).
struct BlockCopy {
  int32_t source_block = 0;
  int32_t destination_block = 0;
};

// Copy one KV block between device memory and the host swap space. The direction is given by
// the list the pair sits in (swap-out: device → host, swap-in: host → device).
struct BlockSwap {
  int32_t device_block = 0;
  int32_t host_block = 0;
};

}  // namespace reflect
