#include "arena_plan.h"

#include <algorithm>
#include <numeric>

namespace tsp {

ArenaPlan PlanArena(const std::vector<ArenaRequest>& requests, int64_t alignment) {
  const int n = int(requests.size());
  // Buffers: a request and every request aliased to it (transitively).
  std::vector<int> root(n);
  for (int i = 0; i < n; ++i) {
    const int a = requests[i].alias_of;
    root[i] = (a >= 0 && a < i) ? root[a] : i;
  }
  struct Buffer {
    int64_t bytes = 0;
    int first = 0, last = -1;
    int64_t offset = -1;
  };
  std::vector<Buffer> buf(n);
  for (int i = 0; i < n; ++i) {
    Buffer& b = buf[root[i]];
    const ArenaRequest& r = requests[i];
    const int64_t bytes = (std::max<int64_t>(r.bytes, 1) + alignment - 1) / alignment * alignment;
    if (b.last < b.first) {  // first member
      b.bytes = bytes;
      b.first = r.first;
      b.last = std::max(r.first, r.last);
    } else {
      b.bytes = std::max(b.bytes, bytes);
      b.first = std::min(b.first, r.first);
      b.last = std::max(b.last, std::max(r.first, r.last));
    }
  }
  std::vector<int> order;
  for (int i = 0; i < n; ++i) {
    if (root[i] == i) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return buf[a].bytes > buf[b].bytes; });
  ArenaPlan plan;
  std::vector<int> placed;
  for (int i : order) {
    Buffer& b = buf[i];
    // Placed buffers alive at the same time, by offset: take the first gap.
    std::vector<int> live;
    for (int j : placed) {
      if (buf[j].first <= b.last && b.first <= buf[j].last) live.push_back(j);
    }
    std::sort(live.begin(), live.end(), [&](int x, int y) { return buf[x].offset < buf[y].offset; });
    int64_t at = 0;
    for (int j : live) {
      if (buf[j].offset - at >= b.bytes) break;
      at = std::max(at, buf[j].offset + buf[j].bytes);
    }
    b.offset = at;
    plan.size = std::max(plan.size, at + b.bytes);
    placed.push_back(i);
  }
  plan.offset.resize(n);
  for (int i = 0; i < n; ++i) plan.offset[i] = buf[root[i]].offset;
  return plan;
}

}  // namespace tsp
