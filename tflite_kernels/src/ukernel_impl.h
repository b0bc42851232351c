// The implicit-GEMM 1xN micro-kernel, written once over a vector-traits type.
//
// Included by each instruction-set translation unit inside an anonymous
// namespace, after defining the traits; each unit is compiled with its own
// target flags, so the template instances never mix across instruction sets.
//
// A traits type VT provides: `reg` (a register of VT::kWidth floats), and
// static zero(), load(const float*) (aligned), loadu(const float*),
// bcast(const float*), fma(a, b, c)
// (= a * b + c), max(a, b), min(a, b), splat(float), store(float*, reg).
#ifndef TSP_UKERNEL_IMPL_H_
#define TSP_UKERNEL_IMPL_H_

#include <cstdint>

#include "sparse_conv.h"

#define TSP_UNROLL _Pragma("GCC unroll 32")

// Starts P pixels x V vectors of accumulators at the row's bias.
template <class VT, int V, int P>
__attribute__((always_inline)) static inline void LoadBias(typename VT::reg (&acc)[P][V],
                                                           const float* bias) {
  TSP_UNROLL for (int v = 0; v < V; ++v) {
    const typename VT::reg b = VT::load(bias + v * VT::kWidth);
    TSP_UNROLL for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
}

// Adds the fused residual (res has out's layout; may be null), clamps to
// [lo, hi] and stores P pixels x V vectors of accumulators.
template <class VT, int V, int P>
__attribute__((always_inline)) static inline void StoreTile(typename VT::reg (&acc)[P][V], float* out,
                                                            int64_t out_stride, float lo, float hi,
                                                            const float* res) {
  constexpr int W = VT::kWidth;
  if (res != nullptr) {
    TSP_UNROLL for (int p = 0; p < P; ++p) {
      TSP_UNROLL for (int v = 0; v < V; ++v) {
        acc[p][v] = VT::add(acc[p][v], VT::loadu(res + p * out_stride + v * W));
      }
    }
  }
  if (lo <= -3.0e38f && hi >= 3.0e38f) {  // no fused activation: nothing to clamp
    TSP_UNROLL for (int p = 0; p < P; ++p) {
      TSP_UNROLL for (int v = 0; v < V; ++v) VT::store(out + p * out_stride + v * W, acc[p][v]);
    }
    return;
  }
  const typename VT::reg vlo = VT::splat(lo);
  const typename VT::reg vhi = VT::splat(hi);
  TSP_UNROLL for (int p = 0; p < P; ++p) {
    TSP_UNROLL for (int v = 0; v < V; ++v) {
      VT::store(out + p * out_stride + v * W, VT::min(VT::max(acc[p][v], vlo), vhi));
    }
  }
}

// P output pixels x (V * VT::kWidth) output channels of one block row. For
// each tap and each kept input channel: V weight vectors are loaded once and
// multiplied by the broadcast input value of each of the P pixels.
template <class VT, int V, int P>
__attribute__((always_inline)) static inline void SparseRowKernel(int k, const int32_t* idx, const float* w, int taps,
                            const float* const* in, const float* bias, float* out,
                            int64_t out_stride, float lo, float hi, const float* res) {
  constexpr int W = VT::kWidth;
  constexpr int N = V * W;
  typename VT::reg acc[P][V];
  LoadBias<VT, V, P>(acc, bias);
  // With one vector per pixel, a second accumulator set (odd j) doubles the
  // independent FMA chains, hiding the FMA latency. Rows shorter than
  // kSplitMinK entries keep one set: their P chains are short anyway, and
  // zeroing and adding the second set costs more than it hides (ResNet-50
  // 1x16 at 0.9, where 64-channel 1x1 rows keep ~6: 2-3% end to end, A/B).
  constexpr bool kSplit = (V == 1) && VT::kSplitK && P <= 8;
  constexpr int kSplitMinK = 16;
  // Entries [j, k) of one tap into acc, one at a time.
  auto single = [&](int j, const float* const* ip) {
    for (; j < k; ++j) {
      const int32_t c = idx[j];
      typename VT::reg wv[V];
      TSP_UNROLL for (int v = 0; v < V; ++v) wv[v] = VT::load(w + v * W);
      w += N;
      TSP_UNROLL for (int p = 0; p < P; ++p) {
        typename VT::reg x = VT::bcast(ip[p] + c);
        TSP_UNROLL for (int v = 0; v < V; ++v) acc[p][v] = VT::fma(x, wv[v], acc[p][v]);
      }
    }
  };
  if (kSplit && k >= kSplitMinK) {
    // The second set spans every tap: zeroed and added once per row, not once
    // per tap (the pointer path of a 3x3 tile has 9 taps of ~k / 9 entries).
    typename VT::reg acc2[P];
    TSP_UNROLL for (int p = 0; p < P; ++p) acc2[p] = VT::zero();
    for (int t = 0; t < taps; ++t) {
      const float* ip[P];
      TSP_UNROLL for (int p = 0; p < P; ++p) ip[p] = in[t * P + p];
      int j = 0;
      for (; j + 2 <= k; j += 2) {
        const int32_t c0 = idx[j];
        const int32_t c1 = idx[j + 1];
        const typename VT::reg w0 = VT::load(w);
        const typename VT::reg w1 = VT::load(w + N);
        w += 2 * N;
        TSP_UNROLL for (int p = 0; p < P; ++p) {
          acc[p][0] = VT::fma(VT::bcast(ip[p] + c0), w0, acc[p][0]);
          acc2[p] = VT::fma(VT::bcast(ip[p] + c1), w1, acc2[p]);
        }
      }
      single(j, ip);
    }
    TSP_UNROLL for (int p = 0; p < P; ++p) acc[p][0] = VT::add(acc[p][0], acc2[p]);
  } else {
    for (int t = 0; t < taps; ++t) {
      const float* ip[P];
      TSP_UNROLL for (int p = 0; p < P; ++p) ip[p] = in[t * P + p];
      single(0, ip);
    }
  }
  StoreTile<VT, V, P>(acc, out, out_stride, lo, hi, res);
}

// One pixel (tails, FULLY_CONNECTED at batch 1): the k loop is split over
// up to four accumulator sets so that many FMA chains are in flight (a tail
// pixel cost ~3.4x a tiled one with two sets).
template <class VT, int V>
static void SparseRowKernel1(int k, const int32_t* idx, const float* w, int taps,
                             const float* const* in, const float* bias, float* out,
                             int64_t /*out_stride*/, float lo, float hi, const float* res) {
  constexpr int W = VT::kWidth;
  constexpr int N = V * W;
  // Accumulator sets: 4, fewer where V vectors per set would crowd the
  // registers (AVX2 N=32: V=4; NEON N=32: V=8).
  constexpr int S = V >= 8 ? 1 : (V >= 4 ? 2 : 4);
  typename VT::reg a[S][V];
  TSP_UNROLL for (int v = 0; v < V; ++v) {
    a[0][v] = VT::load(bias + v * W);
    TSP_UNROLL for (int s = 1; s < S; ++s) a[s][v] = VT::zero();
  }
  for (int t = 0; t < taps; ++t) {
    const float* ip = in[t];
    int j = 0;
    for (; j + S <= k; j += S) {
      TSP_UNROLL for (int s = 0; s < S; ++s) {
        const typename VT::reg x = VT::bcast(ip + idx[j + s]);
        TSP_UNROLL for (int v = 0; v < V; ++v) {
          a[s][v] = VT::fma(x, VT::load(w + s * N + v * W), a[s][v]);
        }
      }
      w += S * N;
    }
    for (; j < k; ++j) {
      const typename VT::reg x = VT::bcast(ip + idx[j]);
      TSP_UNROLL for (int v = 0; v < V; ++v) a[0][v] = VT::fma(x, VT::load(w + v * W), a[0][v]);
      w += N;
    }
  }
  const typename VT::reg vlo = VT::splat(lo);
  const typename VT::reg vhi = VT::splat(hi);
  TSP_UNROLL for (int v = 0; v < V; ++v) {
    typename VT::reg s = a[0][v];
    TSP_UNROLL for (int i = 1; i < S; ++i) s = VT::add(s, a[i][v]);
    if (res != nullptr) s = VT::add(s, VT::loadu(res + v * W));
    VT::store(out + v * W, VT::min(VT::max(s, vlo), vhi));
  }
}

// Rows [r0, r1) of one tile in one call: the row kernel inlined in a loop, so
// the call, its prologue and epilogue are paid once per tile, not once per row.
// Row r runs (row_ptr[r+1] - row_ptr[r]) * kmul entries of `index` from
// row_ptr[r] * kmul, its weights from w + row_ptr[r] * taps * N, with
// `body_taps` taps (kmul = taps, body_taps = 1: the plan's combined offsets;
// kmul = 1, body_taps = taps: per-tap indirection).
// Calls row(k, index, w, bias, out, res) for rows [r0, r1) of a packed filter
// with N channels per row: row r's entries, weights, bias, outputs, residual.
template <int N, class Row>
__attribute__((always_inline)) static inline void ForEachRow(int r0, int r1, const int32_t* row_ptr,
                                                             const int32_t* index, int kmul,
                                                             const float* w, int taps,
                                                             const float* bias, float* out,
                                                             const float* res, Row row) {
  for (int r = r0; r < r1; ++r) {
    const int k0 = row_ptr[r];
    row((row_ptr[r + 1] - k0) * kmul, index + int64_t(k0) * kmul, w + int64_t(k0) * taps * N,
        bias + int64_t(r) * N, out + int64_t(r) * N, res ? res + int64_t(r) * N : nullptr);
  }
}

template <class VT, int V, int P>
static void SparseRowsKernel(int r0, int r1, const int32_t* row_ptr, const int32_t* index,
                             int kmul, const float* w, int taps, int body_taps,
                             const float* const* in, const float* bias, float* out,
                             int64_t out_stride, float lo, float hi, const float* res) {
  ForEachRow<V * VT::kWidth>(
      r0, r1, row_ptr, index, kmul, w, taps, bias, out, res,
      [&](int k, const int32_t* ix, const float* wr, const float* b, float* o,
          const float* rs) __attribute__((always_inline)) {
        SparseRowKernel<VT, V, P>(k, ix, wr, body_taps, in, b, o, out_stride, lo, hi, rs);
      });
}

// Byte offsets of the pixels of a strided tile: pixel p (< 8) at q + p * s,
// pixel p >= 8 at q8 + (p - 8) * s with q8 = q + 8 * s. 3s, 5s and 7s sit in
// their own registers, so every pixel is one [base + index * scale] operand and
// 16 pixels need 6 general registers, not 16 pointers (which spill).
struct PixelStrides {
  intptr_t s, s3, s5, s7;
};

template <int p>
__attribute__((always_inline)) static inline const float* PixelAt(const char* q, const char* q8,
                                                                  const PixelStrides& st) {
  const char* b = p < 8 ? q : q8;
  switch (p % 8) {
    case 0: return reinterpret_cast<const float*>(b);
    case 1: return reinterpret_cast<const float*>(b + st.s);
    case 2: return reinterpret_cast<const float*>(b + 2 * st.s);
    case 3: return reinterpret_cast<const float*>(b + st.s3);
    case 4: return reinterpret_cast<const float*>(b + 4 * st.s);
    case 5: return reinterpret_cast<const float*>(b + st.s5);
    case 6: return reinterpret_cast<const float*>(b + 2 * st.s3);
    default: return reinterpret_cast<const float*>(b + st.s7);
  }
}

template <class VT, int V, int P, int p = 0>
__attribute__((always_inline)) static inline void StridedFma(typename VT::reg (&acc)[P][V],
                                                             const typename VT::reg (&wv)[V],
                                                             const char* q, const char* q8,
                                                             const PixelStrides& st) {
  if constexpr (p < P) {
    const typename VT::reg x = VT::bcast(PixelAt<p>(q, q8, st));
    TSP_UNROLL for (int v = 0; v < V; ++v) acc[p][v] = VT::fma(x, wv[v], acc[p][v]);
    StridedFma<VT, V, P, p + 1>(acc, wv, q, q8, st);
  }
}

// P pixels x (V * VT::kWidth) channels of one block row for a strided tile:
// pixel p's entry j is at base + off[j] + p * s (in bytes: off in floats).
// With P = 16 the weight and index loads are shared by twice the pixels of the
// pointer kernel, and no indirection is built.
template <class VT, int V, int P>
__attribute__((always_inline)) static inline void StridedRowKernel(
    int k, const int32_t* off, const float* w, const char* base, const PixelStrides& st,
    const float* bias, float* out, int64_t out_stride, float lo, float hi, const float* res) {
  static_assert(P >= 1 && P <= 16, "strided tiles are 1 to 16 pixels");
  constexpr int W = VT::kWidth;
  constexpr int N = V * W;
  typename VT::reg acc[P][V];
  LoadBias<VT, V, P>(acc, bias);
  // Two entries per loop iteration: half the loop branches and counter
  // updates (AVX-512 1x16, L1-resident data: 191-197 -> 199-207 GFLOP/s at
  // k >= 64, +4-6% at k = 8-32; unrolling by 4 measured no better than 2).
  _Pragma("GCC unroll 2") for (int j = 0; j < k; ++j) {
    const char* q = base + intptr_t(off[j]) * intptr_t(sizeof(float));
    // Opaque to the optimiser: it cannot re-associate q + p * s into P
    // loop-invariant pointers.
    asm("" : "+r"(q));
    const char* q8 = q + 8 * st.s;
    typename VT::reg wv[V];
    TSP_UNROLL for (int v = 0; v < V; ++v) wv[v] = VT::load(w + v * W);
    w += N;
    StridedFma<VT, V, P>(acc, wv, q, q8, st);
  }
  StoreTile<VT, V, P>(acc, out, out_stride, lo, hi, res);
}

// Rows [r0, r1) of one strided tile (pixel p of the tile at base + p *
// pixel_stride floats): row r runs (row_ptr[r+1] - row_ptr[r]) * kmul entries
// of `index` (kmul = taps: the plan's combined offsets; 1 for 1x1 filters).
template <class VT, int V, int P>
static void StridedRowsKernel(int r0, int r1, const int32_t* row_ptr, const int32_t* index,
                              int kmul, const float* w, int taps, const float* base,
                              int64_t pixel_stride, const float* bias, float* out,
                              int64_t out_stride, float lo, float hi, const float* res) {
  PixelStrides st;
  st.s = intptr_t(pixel_stride) * intptr_t(sizeof(float));
  st.s3 = 3 * st.s;
  st.s5 = 5 * st.s;
  st.s7 = 7 * st.s;
  // Hidden from the optimiser, so it keeps them as index registers.
  asm("" : "+r"(st.s), "+r"(st.s3), "+r"(st.s5), "+r"(st.s7));
  const char* cbase = reinterpret_cast<const char*>(base);
  ForEachRow<V * VT::kWidth>(
      r0, r1, row_ptr, index, kmul, w, taps, bias, out, res,
      [&](int k, const int32_t* ix, const float* wr, const float* b, float* o,
          const float* rs) __attribute__((always_inline)) {
        StridedRowKernel<VT, V, P>(k, ix, wr, cbase, st, b, o, out_stride, lo, hi, rs);
      });
}

// PS: pixels per strided tile (0: no strided kernel).
template <class VT, int N, int P, int PS = 0>
static tsp::UKernel MakeUKernel() {
  static_assert(N % VT::kWidth == 0, "N must be a multiple of the vector width");
  tsp::UKernel u;
  u.p = P;
  u.run = &SparseRowKernel<VT, N / VT::kWidth, P>;
  u.rows = &SparseRowsKernel<VT, N / VT::kWidth, P>;
  u.run1 = &SparseRowKernel1<VT, N / VT::kWidth>;
  if constexpr (PS > 0) {
    static_assert(PS % P == 0 && PS / P <= 16, "a strided tile is a whole number of tiles");
    u.ps = PS;
    u.strided = &StridedRowsKernel<VT, N / VT::kWidth, PS>;
  }
  return u;
}

#endif  // TSP_UKERNEL_IMPL_H_
