// Portable scalar path: the reference the vector paths are tested against.
#include <algorithm>
#include <cstdint>

#include "sparse_conv.h"

namespace {

struct ScalarTraits {
  using reg = float;
  static constexpr bool kSplitK = false;
  static constexpr int kWidth = 1;
  static reg zero() { return 0.0f; }
  static reg load(const float* p) { return *p; }
  static reg loadu(const float* p) { return *p; }
  static reg bcast(const float* p) { return *p; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static reg add(reg a, reg b) { return a + b; }
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg splat(float x) { return x; }
  static void store(float* p, reg v) { *p = v; }
};

#include "ukernel_impl.h"

tsp::KernelSet MakeScalar() {
  tsp::KernelSet ks;
  ks.name = "scalar";
  // The reference path also has the strided kernel, so the tests run the
  // strided driver on every architecture.
  ks.by_n[0] = MakeUKernel<ScalarTraits, 4, 4, 8>();
  ks.by_n[1] = MakeUKernel<ScalarTraits, 8, 4, 8>();
  ks.by_n[2] = MakeUKernel<ScalarTraits, 16, 2, 8>();
  ks.by_n[3] = MakeUKernel<ScalarTraits, 32, 1, 8>();
  return ks;
}

}  // namespace

namespace tsp {
const KernelSet* ScalarKernels() {
  static const KernelSet ks = MakeScalar();
  return &ks;
}
}  // namespace tsp
