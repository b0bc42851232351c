// A fixed pool of worker threads, created once per delegate instance.
#ifndef TSP_THREAD_POOL_H_
#define TSP_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tsp {

class ThreadPool {
 public:
  // Task callback: task index in [0, num_tasks), thread index in [0, size()).
  using TaskFn = void (*)(void* ctx, int64_t task, int thread);

  // num_threads counts the calling thread: num_threads - 1 workers are started.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return num_threads_; }

  // Runs fn(ctx, t, thread) for every t in [0, num_tasks); the caller works
  // too and returns when all tasks are done. Thread i first runs the i-th of
  // size() contiguous blocks of tasks, in order, then helps with the others'
  // (a task is claimed exactly once). Allocates nothing.
  void ParallelFor(int64_t num_tasks, TaskFn fn, void* ctx);

 private:
  void WorkerLoop(int thread);
  void Drain(int thread);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::atomic<int> active_{0};
  // Current job.
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  // One block of the current job's tasks per thread, each on its own cache line:
  // the next unclaimed task and the block's end.
  struct alignas(64) Block {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::unique_ptr<Block[]> blocks_;
  std::atomic<uint64_t> published_{0};
};

}  // namespace tsp

#endif  // TSP_THREAD_POOL_H_
