#include "worker/cpu/thread_pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace reflect::cpu {
namespace {

// About 100 µs of spinning on Sapphire Rapids before a worker goes to sleep: long enough to
// bridge the serial gaps between the loops of one forward pass.
constexpr int kSpinIterations = 1 << 12;

// Sleeps while *word == expected (returns at once if it already differs, or spuriously).
void FutexWait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) {
    num_threads = static_cast<int>(std::thread::hardware_concurrency());
  }
  if (num_threads <= 0) num_threads = 1;
  workers_.reserve(num_threads - 1);
  for (int index = 1; index < num_threads; ++index) {
    workers_.emplace_back([this, index] { WorkerLoop(index); });
  }
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  generation_.fetch_add(1);
  FutexWakeAll(generation_);
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::RunTasks(int thread_index) {
  while (true) {
    const int64_t index = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (index >= num_tasks_) return;
    (*task_)(index, thread_index);
  }
}

void ThreadPool::WorkerLoop(int thread_index) {
  // The pool starts at generation 0; a worker that starts late must still join loop 1.
  uint32_t seen = 0;
  while (true) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      _mm_pause();
      ++spins;
    }
    // seq_cst pairs with ParallelFor's bump-then-read: either it sees us sleeping and wakes
    // us, or the futex sees the new generation and returns at once.
    while (generation_.load() == seen) {
      sleeping_workers_.fetch_add(1);
      FutexWait(generation_, seen);
      sleeping_workers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stopping_.load()) return;
    RunTasks(thread_index);
    unfinished_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::ParallelFor(int64_t num_tasks, absl::FunctionRef<void(int64_t, int)> task) {
  if (num_tasks <= 0) return;
  if (workers_.empty() || num_tasks == 1) {
    for (int64_t index = 0; index < num_tasks; ++index) task(index, 0);
    return;
  }
  num_tasks_ = num_tasks;
  task_ = &task;
  next_task_.store(0, std::memory_order_relaxed);
  unfinished_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);
  if (sleeping_workers_.load() > 0) FutexWakeAll(generation_);
  RunTasks(0);
  int spins = 0;
  while (unfinished_workers_.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpinIterations) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
  task_ = nullptr;
}

}  // namespace reflect::cpu
