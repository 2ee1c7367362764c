#include "tools/reflect/common_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, safetensors, tokenizer)");
