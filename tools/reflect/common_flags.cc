#include "tools/reflect/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, safetensors, tokenizer)");
ABSL_FLAG(int32_t, threads, 0,
          "CPU threads (generate, logits, bench: the CPU backend, random weights); 0: one per "
          "core");
ABSL_FLAG(uint64_t, seed, 0,
          "mkmodel, bench --preset: weight generator seed; generate: sampling seed");
ABSL_FLAG(std::optional<std::string>, preset, std::nullopt,
          "mkmodel: model shape: tiny (default), 1b, 8b or 70b; bench: benchmark that shape with "
          "random weights generated in memory instead of --model");
