// Flags shared by several subcommands (absl flags are global to the binary).
#pragma once

#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);  // a Hugging Face model directory
