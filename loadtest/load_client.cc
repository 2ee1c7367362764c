#include "loadtest/load_client.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "loadtest/in_flight_calls.h"

namespace reflect::loadtest {

void TokenClock::OnTokens(absl::Time now, int32_t count, bool output) {
  if (count <= 0) return;
  if (!last_arrival_.has_value()) {
    time_to_first_token_ = now - sent_;
  } else {
    gaps_.push_back(now - *last_arrival_);
  }
  gaps_.insert(gaps_.end(), static_cast<size_t>(count - 1), absl::ZeroDuration());
  if (output && !time_to_first_output_token_.has_value()) time_to_first_output_token_ = now - sent_;
  last_arrival_ = now;
  tokens_ += count;
}

void TokenClock::ReconcileTokenCount(int32_t total) {
  const size_t wanted = static_cast<size_t>(std::max(total - 1, 0));
  if (gaps_.size() < wanted) {
    // With no arrival at all there is no first token to measure gaps from.
    if (last_arrival_.has_value()) gaps_.resize(wanted, absl::ZeroDuration());
  } else {
    gaps_.resize(wanted);
  }
  tokens_ = total;
}

void TokenClock::Fill(absl::Time end, RequestRecord& record) const {
  record.time_to_first_token = time_to_first_token_;
  record.time_to_first_output_token = time_to_first_output_token_;
  record.inter_token_latencies = gaps_;
  record.output_tokens = tokens_;
  record.end_to_end = end - sent_;
}

RequestRecord ClosingClientRecord(const PlannedRequest& request, absl::Time run_start) {
  RequestRecord record;
  record.index = request.index;
  record.sent = absl::Now() - run_start;
  record.error = "CANCELLED: the client is closing";
  return record;
}

}  // namespace reflect::loadtest
