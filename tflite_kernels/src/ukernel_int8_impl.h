// The int8 1xN micro-kernel, written once over an int8 traits type: int32
// accumulators for P pixels x N outputs, kept entries taken in pairs (the
// packing pads each row to an even count), then TFLite's requantization.
//
// Included by each instruction-set translation unit (ukernels_int8_*.cc)
// inside an anonymous namespace after its traits VT, which provides:
//   kOut                      int32 outputs per accumulator register
//   acc, wreg, xreg           accumulator, weight and input-pair registers
//   load32(const int32_t*)    kOut int32 (bias, per-channel parameters)
//   store32(int32_t*, acc)
//   loadw(const int8_t*)      2 * kOut weight bytes [o][e]: kOut outputs x 2 entries
//   pair(const int8_t* a, const int8_t* b)   the two entries' inputs *a, *b
//   madd(acc, xreg, wreg)     acc[o] += w[o][0] * *a + w[o][1] * *b (wrapping)
//   rshift_param(const int32_t*)   the right shifts in the form requant takes
//   requant(x, mult, lshift, rshift_param, rmask)
//                             MultiplyByQuantizedMultiplier, bit-exact (qrequant.h)
//   total_param(const int32_t*)   the single-rounding shifts 31 - shift, in the
//                             form requant_single takes
//   requant_single(x, mult, total_param)
//                             MultiplyByQuantizedMultiplierSingle, bit-exact
//   splat(int32_t), add, max, min (int32 lanes; add wraps)
//   narrow_store<G>(int8_t*, const acc (&)[G])   G * kOut values in [-128, 127]
//   widen8(const int8_t*)     kOut int8 values sign-extended to int32 lanes
//                             (reads exactly kOut bytes)
#ifndef TSP_UKERNEL_INT8_IMPL_H_
#define TSP_UKERNEL_INT8_IMPL_H_

#include <cstdint>

#include "int8_conv.h"

#define TSP_I8_UNROLL _Pragma("GCC unroll 32")

// The output stage of one row (G registers, channels from c0): loaded once
// per row, applied to each pixel's accumulators. kSingle: single rounding
// (mult and total only), else double (mult, lshift, rshift, rmask).
template <class VT, int G, bool kSingle>
struct Int8OutStage {
  using acc = typename VT::acc;
  acc m[G], l[G], r[G], mask[G];
  acc zp, lo, hi;
  __attribute__((always_inline)) Int8OutStage(const tsp::Int8Requant& rq, int c0) {
    constexpr int K = VT::kOut;
    TSP_I8_UNROLL for (int g = 0; g < G; ++g) {
      m[g] = VT::load32(rq.mult + c0 + g * K);
      if constexpr (kSingle) {
        r[g] = VT::total_param(rq.total + c0 + g * K);
      } else {
        l[g] = VT::load32(rq.lshift + c0 + g * K);
        r[g] = VT::rshift_param(rq.rshift + c0 + g * K);
        mask[g] = VT::load32(rq.rmask + c0 + g * K);
      }
    }
    zp = VT::splat(rq.zp_out);
    lo = VT::splat(rq.act_min);
    hi = VT::splat(rq.act_max);
  }
  __attribute__((always_inline)) void Store(const acc (&a)[G], int8_t* out) const {
    acc v[G];
    TSP_I8_UNROLL for (int g = 0; g < G; ++g) {
      acc q;
      if constexpr (kSingle) {
        q = VT::requant_single(a[g], m[g], r[g]);
      } else {
        q = VT::requant(a[g], m[g], l[g], r[g], mask[g]);
      }
      v[g] = VT::min(VT::max(VT::add(q, zp), lo), hi);
    }
    VT::template narrow_store<G>(out, v);
  }
};

// Rows [r0, r1) of one tile of P pixels (see Int8Tile): per row, the
// accumulators start at the folded bias; per pair of entries, G weight
// registers are loaded once and used by every pixel.
template <class VT, int G, int P>
static void Int8RowsKernel(const tsp::Int8Tile& t, int r0, int r1) {
  constexpr int K = VT::kOut;
  constexpr int N = G * K;
  for (int r = r0; r < r1; ++r) {
    const int e0 = t.row_ptr[r];
    const int k = (t.row_ptr[r + 1] - e0) * t.kmul;
    const int32_t* idx = t.index + int64_t(e0) * t.kmul;
    const int8_t* w = t.w + int64_t(e0) * t.taps * N;
    typename VT::acc a[P][G];
    TSP_I8_UNROLL for (int g = 0; g < G; ++g) {
      const typename VT::acc b = VT::load32(t.rq->bias + int64_t(r) * N + g * K);
      TSP_I8_UNROLL for (int p = 0; p < P; ++p) a[p][g] = b;
    }
    for (int tap = 0; tap < t.body_taps; ++tap) {
      const int8_t* ip[P];
      TSP_I8_UNROLL for (int p = 0; p < P; ++p) ip[p] = t.in[tap * P + p];
      for (int j = 0; j < k; j += 2) {
        const int32_t c0 = idx[j];
        const int32_t c1 = idx[j + 1];
        typename VT::wreg wv[G];
        TSP_I8_UNROLL for (int g = 0; g < G; ++g) wv[g] = VT::loadw(w + 2 * K * g);
        w += 2 * N;
        TSP_I8_UNROLL for (int p = 0; p < P; ++p) {
          const typename VT::xreg x = VT::pair(ip[p] + c0, ip[p] + c1);
          TSP_I8_UNROLL for (int g = 0; g < G; ++g) a[p][g] = VT::madd(a[p][g], x, wv[g]);
        }
      }
    }
    int8_t* const out = t.out + int64_t(r) * N;
    if (t.rq->single_rounding) {  // per filter: the same branch every row
      const Int8OutStage<VT, G, true> os(*t.rq, r * N);
      TSP_I8_UNROLL for (int p = 0; p < P; ++p) os.Store(a[p], out + p * t.out_stride);
    } else {
      const Int8OutStage<VT, G, false> os(*t.rq, r * N);
      TSP_I8_UNROLL for (int p = 0; p < P; ++p) os.Store(a[p], out + p * t.out_stride);
    }
  }
}

// The requantization alone, kOut lanes at a time (tests): count must be a
// multiple of 8 (every kOut divides 8).
template <class VT>
static void Int8RequantArray(const int32_t* acc, const int32_t* mult, const int32_t* lshift,
                             const int32_t* rshift, const int32_t* rmask, int count,
                             int32_t* out) {
  constexpr int K = VT::kOut;
  for (int i = 0; i + K <= count; i += K) {
    VT::store32(out + i, VT::requant(VT::load32(acc + i), VT::load32(mult + i),
                                     VT::load32(lshift + i), VT::rshift_param(rshift + i),
                                     VT::load32(rmask + i)));
  }
}

template <class VT>
static void Int8RequantSingleArray(const int32_t* acc, const int32_t* mult, const int32_t* total,
                                   int count, int32_t* out) {
  constexpr int K = VT::kOut;
  for (int i = 0; i + K <= count; i += K) {
    VT::store32(out + i, VT::requant_single(VT::load32(acc + i), VT::load32(mult + i),
                                            VT::total_param(total + i)));
  }
}

// TFLite's int8 ADD (int8_add.h's Int8Add) over G * kOut elements per step,
// through the same requant as the kernels' output stage: each of the ADD's
// three requantizations is MultiplyByQuantizedMultiplier with a non-positive
// shift, and (x - zp) << 20 is requant's left shift of 20. The leftover
// elements take the scalar Int8Add. out may equal conv (each step loads
// before it stores).
template <class VT, int G>
static void Int8AddRowArray(const int8_t* conv, const int8_t* residual, int8_t* out,
                            int64_t count, const tsp::Int8AddParams& p) {
  using acc = typename VT::acc;
  constexpr int K = VT::kOut;
  auto rparam = [](int32_t r) {
    int32_t v[K];
    for (int k = 0; k < K; ++k) v[k] = r;
    return VT::rshift_param(v);
  };
  auto mask = [](int32_t r) { return VT::splat(int32_t((int64_t(1) << r) - 1)); };
  const acc nzp1 = VT::splat(-p.zp1), nzp2 = VT::splat(-p.zp2), zpo = VT::splat(p.zp_out);
  const acc m1 = VT::splat(p.m1), m2 = VT::splat(p.m2), mo = VT::splat(p.m_out);
  const acc r1 = rparam(p.rshift1), r2 = rparam(p.rshift2), ro = rparam(p.rshift_out);
  const acc k1 = mask(p.rshift1), k2 = mask(p.rshift2), ko = mask(p.rshift_out);
  const acc l20 = VT::splat(20), l0 = VT::splat(0);
  const acc lo = VT::splat(p.act_min), hi = VT::splat(p.act_max);
  int64_t i = 0;
  for (; i + G * K <= count; i += G * K) {
    acc v[G];
    for (int g = 0; g < G; ++g) {
      const acc a = VT::requant(VT::add(VT::widen8(conv + i + g * K), nzp1), m1, l20, r1, k1);
      const acc b = VT::requant(VT::add(VT::widen8(residual + i + g * K), nzp2), m2, l20, r2, k2);
      const acc s = VT::requant(VT::add(a, b), mo, l0, ro, ko);
      v[g] = VT::min(VT::max(VT::add(s, zpo), lo), hi);
    }
    VT::template narrow_store<G>(out + i, v);
  }
  for (; i < count; ++i) out[i] = tsp::Int8Add(conv[i], residual[i], p);
}

template <class VT, int N, int P>
static tsp::Int8UKernel MakeInt8UKernel() {
  static_assert(N % VT::kOut == 0, "N must be a multiple of the register's outputs");
  static_assert(P >= 1 && P <= tsp::kInt8MaxTilePixels, "tile size");
  tsp::Int8UKernel u;
  u.p = P;
  u.rows = &Int8RowsKernel<VT, N / VT::kOut, P>;
  return u;
}

#endif  // TSP_UKERNEL_INT8_IMPL_H_
