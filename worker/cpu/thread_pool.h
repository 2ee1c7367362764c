// ThreadPool: a persistent set of worker threads for the CPU backend's data-parallel loops.
//
// ParallelFor hands out task indices one at a time from a shared counter; the calling thread
// takes part. Which thread runs which task is not deterministic, so callers must make every task
// write disjoint outputs with arithmetic that does not depend on the thread (the batch-invariance
// rule of DESIGN §6). Workers spin briefly after each loop (a decode step issues ~70 loops in a
// row, so a futex wake per loop would cost more than the work) and then sleep on an atomic wait.
//
// Thread-safety: ParallelFor is called by one thread at a time (the owner of the backend).
// Cost: one atomic increment per task plus one release/acquire handshake per loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace reflect::cpu {

class ThreadPool {
 public:
  // `num_threads` counts the calling thread; 0 means one per available core.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(index, thread_index) for every index in [0, num_tasks) and returns when all are
  // done. thread_index is in [0, num_threads()) and identifies per-thread scratch space.
  void ParallelFor(int64_t num_tasks, absl::FunctionRef<void(int64_t, int)> task);

 private:
  void WorkerLoop(int thread_index);
  void RunTasks(int thread_index);

  std::vector<std::thread> workers_;
  // Bumped once per ParallelFor; workers wait for it to change.
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleeping_workers_{0};
  std::atomic<int> unfinished_workers_{0};
  std::atomic<int64_t> next_task_{0};
  std::atomic<bool> stopping_{false};
  int64_t num_tasks_ = 0;
  const absl::FunctionRef<void(int64_t, int)>* task_ = nullptr;
};

}  // namespace reflect::cpu
