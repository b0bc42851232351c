#include "thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TSP_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define TSP_PAUSE() __asm__ __volatile__("yield")
#else
#define TSP_PAUSE() ((void)0)
#endif

namespace tsp {

namespace {
// Spin iterations before sleeping (a pause is ~20-140 cycles: a few
// microseconds). Kept short on purpose: measured on a 2-core machine shared
// with other processes, longer spins (2000, 20000) made 2-thread runs 2-5x
// slower, the spinning thread taking the core from the one with work.
constexpr int kSpinIterations = 500;
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads < 1 ? 1 : num_threads) {
  workers_.reserve(num_threads_ - 1);
  for (int t = 1; t < num_threads_; ++t) {
    workers_.emplace_back([this, t] { WorkerLoop(t); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    ++generation_;
    published_.store(generation_, std::memory_order_release);
  }
  cv_start_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::Drain(int thread) {
  for (;;) {
    int64_t t = next_.fetch_add(1, std::memory_order_relaxed);
    if (t >= num_tasks_) break;
    fn_(ctx_, t, thread);
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (published_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      TSP_PAUSE();
      ++spins;
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    Drain(thread);
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller may be about to wait
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::ParallelFor(int64_t num_tasks, TaskFn fn, void* ctx) {
  if (num_tasks <= 0) return;
  if (num_threads_ == 1 || num_tasks == 1) {
    for (int64_t t = 0; t < num_tasks; ++t) fn(ctx, t, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    ctx_ = ctx;
    num_tasks_ = num_tasks;
    next_.store(0, std::memory_order_relaxed);
    active_.store(num_threads_ - 1, std::memory_order_relaxed);
    ++generation_;
    published_.store(generation_, std::memory_order_release);
  }
  cv_start_.notify_all();
  Drain(0);
  // The workers are finishing their last tasks: spin briefly before sleeping.
  for (int spins = 0; spins < kSpinIterations; ++spins) {
    if (active_.load(std::memory_order_acquire) == 0) return;
    TSP_PAUSE();
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return active_.load(std::memory_order_acquire) == 0; });
}

}  // namespace tsp
