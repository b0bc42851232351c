// Memory plan of one delegate partition's internal tensors: offsets in one
// arena owned by the partition, reusing memory between tensors whose
// lifetimes do not overlap.
//
// Why: declared as TFLite temporaries of the partition node, every internal
// tensor was alive for the whole partition, so each convolution wrote its
// output to memory untouched since the previous inference (ResNet-50: ~40 MB of
// distinct activations, cache misses on every store). With reuse, outputs go
// to recently used, cache-warm memory, and a residual ADD can write its result
// over the residual it consumes (in place).
#ifndef TSP_ARENA_PLAN_H_
#define TSP_ARENA_PLAN_H_

#include <cstdint>
#include <vector>

namespace tsp {

struct ArenaRequest {
  int64_t bytes = 0;
  int first = 0;  // position of the op that writes it
  int last = 0;   // position of its last reader (>= first)
  // Index of an earlier request whose buffer this one takes over in place
  // (its last reader is the op that writes this one), or -1.
  int alias_of = -1;
};

struct ArenaPlan {
  std::vector<int64_t> offset;  // per request, a multiple of the alignment
  int64_t size = 0;             // bytes the arena needs
};

// Greedy by size (largest first, lowest offset that overlaps no placed buffer
// alive at the same time), as TFLite's own arena planner does. Aliased
// requests share one buffer whose lifetime is the union of theirs.
ArenaPlan PlanArena(const std::vector<ArenaRequest>& requests, int64_t alignment = 64);

}  // namespace tsp

#endif  // TSP_ARENA_PLAN_H_
