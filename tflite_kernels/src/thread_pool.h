// A fixed pool of worker threads, created once per delegate instance.
#ifndef TSP_THREAD_POOL_H_
#define TSP_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
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

  // Runs fn(ctx, t, thread) for every t in [0, num_tasks), distributing tasks
  // dynamically; the caller works too and returns when all tasks are done.
  // Allocates nothing.
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
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> published_{0};
};

}  // namespace tsp

#endif  // TSP_THREAD_POOL_H_
