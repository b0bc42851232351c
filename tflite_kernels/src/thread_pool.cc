#include "thread_pool.h"

#include <chrono>

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
// How long a worker spins for the next job (and the caller for the workers'
// last tasks) before sleeping on the condition variable. Bounded in time, not
// in pause instructions, whose cost varies 10x across CPUs (28 ns on the Zen 5
// we measure on). 100 us spans the gap between two convolutions of a
// partition, so a worker rarely sleeps mid-inference (waking it costs tens of
// microseconds in a VM), and is short next to an inference: ResNet-50 1x16,
// 2 threads, 500 pauses (14 us) -> 100 us: 3% faster at 0.9, 6-8% at 0.5
// (both builds in one process, invocations 1 ms apart so no spinner overlaps
// a timed run).
// Earlier, with other jobs saturating this 2-core machine, spins of 2000 and
// 20000 pauses made 2-thread runs 2-5x slower: spinning pays only when the
// cores are there.
constexpr auto kSpin = std::chrono::microseconds(100);
constexpr int kPausesPerClockRead = 32;

// Spins until done() or kSpin has passed; returns done().
template <class Done>
bool SpinFor(Done done) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < kPausesPerClockRead; ++i) {
      if (done()) return true;
      TSP_PAUSE();
    }
    if (std::chrono::steady_clock::now() - start > kSpin) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads < 1 ? 1 : num_threads), blocks_(new Block[num_threads_]) {
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
  // Own block first: consecutive jobs (layers) give a thread the same share of
  // pixels, so a 1x1 layer's input is mostly in that core's own caches; then
  // the other blocks' leftovers.
  for (int i = 0; i < num_threads_; ++i) {
    Block& b = blocks_[(thread + i) % num_threads_];
    for (;;) {
      const int64_t t = b.next.fetch_add(1, std::memory_order_relaxed);
      if (t >= b.end) break;
      fn_(ctx_, t, thread);
    }
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    SpinFor([&] { return published_.load(std::memory_order_acquire) != seen; });
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
    for (int i = 0; i < num_threads_; ++i) {
      blocks_[i].next.store(num_tasks * i / num_threads_, std::memory_order_relaxed);
      blocks_[i].end = num_tasks * (i + 1) / num_threads_;
    }
    active_.store(num_threads_ - 1, std::memory_order_relaxed);
    ++generation_;
    published_.store(generation_, std::memory_order_release);
  }
  cv_start_.notify_all();
  Drain(0);
  // The workers are finishing their last tasks: spin before sleeping.
  if (SpinFor([&] { return active_.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return active_.load(std::memory_order_acquire) == 0; });
}

}  // namespace tsp
