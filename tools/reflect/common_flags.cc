#include "tools/reflect/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, safetensors, tokenizer)");
ABSL_FLAG(int32_t, threads, 0, "Engine threads (generate, bench); 0: one per core");
ABSL_FLAG(uint64_t, seed, 0, "mkmodel: weight generator seed; generate: sampling seed");
