// NEON path (aarch64), selected at compile time.
#include <arm_neon.h>

#include <cstdint>

#include "sparse_conv.h"

namespace {

struct NeonTraits {  // 4 floats
  using reg = float32x4_t;
  static constexpr bool kSplitK = true;
  static constexpr int kWidth = 4;
  static reg zero() { return vdupq_n_f32(0.0f); }
  static reg load(const float* p) { return vld1q_f32(p); }
  static reg loadu(const float* p) { return vld1q_f32(p); }
  static reg bcast(const float* p) { return vld1q_dup_f32(p); }
  static reg fma(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
  static reg add(reg a, reg b) { return vaddq_f32(a, b); }
  static reg max(reg a, reg b) { return vmaxq_f32(a, b); }
  static reg min(reg a, reg b) { return vminq_f32(a, b); }
  static reg splat(float x) { return vdupq_n_f32(x); }
  static void store(float* p, reg v) { vst1q_f32(p, v); }
};

#include "ukernel_impl.h"

// 32 q registers: P x V accumulators + V weights + P broadcasts.
tsp::KernelSet MakeNeon() {
  tsp::KernelSet ks;
  ks.name = "neon";
  ks.by_n[0] = MakeUKernel<NeonTraits, 4, 8>();
  ks.by_n[1] = MakeUKernel<NeonTraits, 8, 8>();
  ks.by_n[2] = MakeUKernel<NeonTraits, 16, 4>();
  ks.by_n[3] = MakeUKernel<NeonTraits, 32, 2>();
  return ks;
}

}  // namespace

namespace tsp {
const KernelSet* NeonKernels() {
  static const KernelSet ks = MakeNeon();
  return &ks;
}
}  // namespace tsp
