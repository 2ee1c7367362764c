// The calls a load client has in flight, by id: the bookkeeping GrpcLoadClient and HttpLoadClient
// share between Send, Drain, their destructors and a call that finishes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/time/time.h"
#include "loadtest/load_types.h"

namespace reflect::loadtest {

// Thread-safety: every method may be called from any thread. Call is the client's per-request
// object; the set owns it until Finish.
template <typename Call>
class InFlightCalls {
 public:
  // Adds the call `make(id)` builds and returns it; null once Close was called.
  template <typename Make>
  std::shared_ptr<Call> Add(Make make) {
    const std::lock_guard lock(mutex_);
    if (closing_) return nullptr;
    const int64_t id = next_id_++;
    std::shared_ptr<Call> call = make(id);
    calls_.emplace(id, call);
    return call;
  }

  // Called by call `id` as its last act (after its `done` returned). The call is destroyed here,
  // before Drain or Close's waiter can see it gone, so no call (and none of the network objects
  // it holds) outlives the client.
  void Finish(int64_t id) {
    std::shared_ptr<Call> finished;
    {
      const std::lock_guard lock(mutex_);
      finished = std::move(calls_.at(id));  // the entry stays, empty, until the call is gone
    }
    finished.reset();
    const std::lock_guard lock(mutex_);
    calls_.erase(id);
    if (calls_.empty()) all_done_.notify_all();
  }

  // Blocks until every call added so far has finished.
  void Drain() {
    std::unique_lock lock(mutex_);
    all_done_.wait(lock, [this] { return calls_.empty(); });
  }

  // Refuses further Adds and returns the calls still running, for the caller to cancel (outside
  // any lock: a cancellation may finish a call on the calling thread).
  std::vector<std::shared_ptr<Call>> Close() {
    const std::lock_guard lock(mutex_);
    closing_ = true;
    std::vector<std::shared_ptr<Call>> running;
    for (const auto& [id, call] : calls_) {
      if (call != nullptr) running.push_back(call);  // null: finishing right now
    }
    return running;
  }

 private:
  std::mutex mutex_;
  std::condition_variable all_done_;
  bool closing_ = false;                            // guarded by mutex_
  int64_t next_id_ = 0;                             // guarded by mutex_
  std::map<int64_t, std::shared_ptr<Call>> calls_;  // guarded by mutex_
};

// The record of a request refused because its client is closing (outcome kError, "CANCELLED").
RequestRecord ClosingClientRecord(const PlannedRequest& request, absl::Time run_start);

}  // namespace reflect::loadtest
