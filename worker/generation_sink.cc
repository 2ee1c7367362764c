#include "worker/generation_sink.h"

namespace reflect {

std::string_view StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kEos:
      return "eos";
    case StopReason::kStopToken:
      return "stop_token";
    case StopReason::kLength:
      return "length";
    case StopReason::kContextLength:
      return "context_length";
  }
  return "unknown";
}

}  // namespace reflect
