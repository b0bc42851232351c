// AVX2 + FMA path (x86-64). This file alone is compiled with -mavx2 -mfma;
// it runs only after the run-time CPU check in dispatch.cc.
#include <immintrin.h>

#include <cstdint>

#include "sparse_conv.h"

namespace {

struct Avx2Traits {  // 8 floats
  using reg = __m256;
  static constexpr bool kSplitK = false;  // 16 registers: no room for a second set
  static constexpr int kWidth = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_load_ps(p); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg splat(float x) { return _mm256_set1_ps(x); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
};

struct Sse4Traits {  // 4 floats, VEX-encoded with FMA
  using reg = __m128;
  static constexpr bool kSplitK = false;  // 16 registers: no room for a second set
  static constexpr int kWidth = 4;
  static reg zero() { return _mm_setzero_ps(); }
  static reg load(const float* p) { return _mm_load_ps(p); }
  static reg loadu(const float* p) { return _mm_loadu_ps(p); }
  static reg bcast(const float* p) { return _mm_broadcast_ss(p); }
  static reg fma(reg a, reg b, reg c) { return _mm_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm_add_ps(a, b); }
  static reg max(reg a, reg b) { return _mm_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm_min_ps(a, b); }
  static reg splat(float x) { return _mm_set1_ps(x); }
  static void store(float* p, reg v) { _mm_storeu_ps(p, v); }
};

#include "ukernel_impl.h"

// 16 ymm registers: P x V accumulators + V weights must fit. Strided tiles
// (1x1 stride-1 layers, FULLY_CONNECTED) have the pointer tiles' size: no more
// pixels fit, but they need no indirection (Zen 3, in-process A/B: ResNet-50
// 1x16 1-3% faster at 0.5-0.9, MobileNetV2 1x16 3% at 0.5 and 12% at 0.9).
tsp::KernelSet MakeAvx2() {
  tsp::KernelSet ks;
  ks.name = "avx2";
  ks.by_n[0] = MakeUKernel<Sse4Traits, 4, 8, 8>();
  ks.by_n[1] = MakeUKernel<Avx2Traits, 8, 8, 8>();
  ks.by_n[2] = MakeUKernel<Avx2Traits, 16, 6, 6>();
  ks.by_n[3] = MakeUKernel<Avx2Traits, 32, 3, 3>();
  ks.lane_fraction[0] = 0.5;  // xmm
  return ks;
}

}  // namespace

namespace tsp {
const KernelSet* Avx2KernelsUnchecked() {
  static const KernelSet ks = MakeAvx2();
  return &ks;
}
}  // namespace tsp
