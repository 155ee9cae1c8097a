// A persistent pool of worker threads. run(fn) executes fn(ith, nth) once on each of the nth
// threads (the calling thread is ith = 0) and returns when all have finished: one barrier per
// call, no allocation. Workers spin briefly between calls (a decode step issues hundreds of
// calls a few microseconds apart), then sleep on a condition variable.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qc {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  void run(const std::function<void(int ith, int nth)>& fn);

 private:
  void worker(int ith);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::mutex run_mutex_;  // run() from two threads at once is serialised
};

// The share [begin, end) of n items that thread ith of nth takes (contiguous, sizes differ by <= 1).
static inline void split_range(int64_t n, int ith, int nth, int64_t* begin, int64_t* end) {
  const int64_t base = n / nth, extra = n % nth;
  *begin = ith * base + (ith < extra ? ith : extra);
  *end = *begin + base + (ith < extra ? 1 : 0);
}

// Physical cores of this machine (hardware threads / SMT ways where known), at least 1.
int default_thread_count();

}  // namespace qc
