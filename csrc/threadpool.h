// A persistent pool of worker threads. run(fn) executes fn(ith, nth) once for each share
// ith = 0 .. nth-1 and returns when all shares are done: one barrier per call, no allocation.
// The calling thread runs share 0, then takes any share whose worker has not started it yet:
// on a busy machine a descheduled worker costs its share's time, not a scheduler time slice per
// barrier (with hundreds of barriers per decoded token, that difference is 10x). Workers spin
// briefly between calls (a decode step issues calls a few microseconds apart), then sleep on a
// condition variable.
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
  bool claim(int ith);  // true if share ith was still unclaimed (and now belongs to the caller)

  int n_threads_;
  std::vector<std::thread> workers_;
  // The current job: its function, the shares nobody has claimed yet (bit i: share i), and the
  // shares not finished yet. fn_ and remaining_ are written before unclaimed_ (release), so
  // whoever claims a share through unclaimed_ sees them.
  const std::function<void(int, int)>* fn_ = nullptr;
  std::atomic<uint64_t> unclaimed_{0};
  std::atomic<int> remaining_{0};
  std::atomic<uint64_t> generation_{0};
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

// fn(i0, i1) over [0, n), shared by the pool's threads in contiguous ranges of whole units (the last
// may be short), or on the calling thread alone when n < min_n (small work: cheaper than a barrier)
template <class Fn>
void share(ThreadPool& pool, int64_t n, int64_t unit, int64_t min_n, Fn&& fn) {
  if (n < min_n) return fn(0, n);
  pool.run([&](int ith, int nth) {
    int64_t u0, u1;
    split_range((n + unit - 1) / unit, ith, nth, &u0, &u1);
    fn(u0 * unit < n ? u0 * unit : n, u1 * unit < n ? u1 * unit : n);
  });
}

// Physical cores of this machine (hardware threads / SMT ways where known), at least 1.
int default_thread_count();

}  // namespace qc
