// AVX-512F/VL path (x86-64). This file alone is compiled with -mavx512f
// -mavx512vl -mavx2 -mfma (VL gives the 8- and 4-wide kernels 32 registers);
// it runs only after the run-time CPU check in dispatch.cc.
#include <immintrin.h>

#include <cstdint>

#include "sparse_conv.h"

namespace {

struct Avx512Traits {  // 16 floats
  using reg = __m512;
  static constexpr bool kSplitK = true;
  static constexpr int kWidth = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_load_ps(p); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg splat(float x) { return _mm512_set1_ps(x); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
};

struct Ymm512Traits {  // 8 floats (VEX-encoded)
  using reg = __m256;
  static constexpr bool kSplitK = true;
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

struct Xmm512Traits {  // 4 floats
  using reg = __m128;
  static constexpr bool kSplitK = true;
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

// 32 zmm registers: 8 pixels x 16 channels is the plain 1x16 kernel; N=32
// keeps 8 x 2 accumulators. Strided tiles (1x1 stride-1 layers) take 16
// pixels for N <= 16 (16 accumulators + 1 weight vector), 8 for N=32.
tsp::KernelSet MakeAvx512() {
  tsp::KernelSet ks;
  ks.name = "avx512";
  ks.by_n[0] = MakeUKernel<Xmm512Traits, 4, 8, 16>();
  ks.by_n[1] = MakeUKernel<Ymm512Traits, 8, 8, 16>();
  ks.by_n[2] = MakeUKernel<Avx512Traits, 16, 8, 16>();
  ks.by_n[3] = MakeUKernel<Avx512Traits, 32, 8, 8>();
  ks.lane_fraction[0] = 0.25;  // xmm
  ks.lane_fraction[1] = 0.5;   // ymm
  return ks;
}

}  // namespace

namespace tsp {
const KernelSet* Avx512KernelsUnchecked() {
  static const KernelSet ks = MakeAvx512();
  return &ks;
}
}  // namespace tsp
