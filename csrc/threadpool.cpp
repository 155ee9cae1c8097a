#include "threadpool.h"

#include <fstream>
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QC_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define QC_PAUSE() __asm__ volatile("yield")
#else
#define QC_PAUSE() ((void)0)
#endif

namespace qc {

// How long a worker spins for the next job before it sleeps (iterations of a pause loop,
// roughly 50-100 microseconds).
static constexpr int kSpinIterations = 20000;

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back(&ThreadPool::worker, this, i);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

bool ThreadPool::claim(int ith) {
  const uint64_t bit = uint64_t(1) << ith;
  return (unclaimed_.fetch_and(~bit, std::memory_order_acq_rel) & bit) != 0;
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  std::lock_guard<std::mutex> serial(run_mutex_);
  const int nth = n_threads_;
  fn_ = &fn;
  remaining_.store(nth, std::memory_order_relaxed);
  unclaimed_.store(((nth == 64 ? ~uint64_t(0) : (uint64_t(1) << nth) - 1)) & ~uint64_t(1), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // a worker going to sleep cannot miss this
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  fn(0, nth);
  remaining_.fetch_sub(1, std::memory_order_acq_rel);
  // Run the shares of workers that have not started yet.
  for (int i = 1; i < nth; ++i) {
    if (claim(i)) {
      fn(i, nth);
      remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  int spins = 0;
  while (remaining_.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpinIterations) QC_PAUSE();
    else std::this_thread::yield();
  }
}

void ThreadPool::worker(int ith) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    uint64_t gen;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen && spins < kSpinIterations) {
      QC_PAUSE();
      ++spins;
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load()) return;
    // The share may already have been taken by the caller (this worker woke late), or belong to a
    // later job than the wake-up was for: the claim decides, and fn_ is read only after it.
    if (claim(ith)) {
      (*fn_)(ith, n_threads_);
      remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

int default_thread_count() {
  // Count distinct (physical id, core id) pairs: SMT siblings share a core's SIMD units, and
  // matmul kernels gain nothing from a second thread on the same core.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, phys = "0";
  while (std::getline(cpuinfo, line)) {
    auto value = [&] { auto p = line.find(':'); return p == std::string::npos ? std::string() : line.substr(p + 1); };
    if (line.rfind("physical id", 0) == 0) phys = value();
    else if (line.rfind("core id", 0) == 0) cores.insert({phys, value()});
  }
  const int hw = (int)std::thread::hardware_concurrency();
  if (!cores.empty()) return (int)cores.size();
  return hw > 0 ? hw : 1;
}

}  // namespace qc
