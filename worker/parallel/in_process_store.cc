#include "worker/parallel/in_process_store.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace reflect {

absl::Status InProcessStore::Set(const std::string& key, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    values_[key] = value;
  }
  changed_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::string> InProcessStore::Get(const std::string& key, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    auto found = values_.find(key);
    if (found != values_.end()) return found->second;
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "key '%s' did not appear in the store within %s", key, absl::FormatDuration(timeout)));
    }
    // Wake at least once a second so an infinite deadline never overflows a chrono time point.
    changed_.wait_for(lock, absl::ToChronoMilliseconds(std::min(deadline - now, absl::Seconds(1))) +
                                std::chrono::milliseconds(1));
  }
}

}  // namespace reflect
