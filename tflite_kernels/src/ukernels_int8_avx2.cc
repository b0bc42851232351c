// AVX2 int8 path (x86-64). This file alone is compiled with -mavx2 -mfma; it
// runs only after the run-time CPU check (dispatch_int8.cc).
//
// Products: a pair of kept entries' weights for 8 outputs, [o][e] as 16 bytes,
// is sign-extended to 16 int16 (vpmovsxbw); the two inputs x0, x1 of a pixel
// are one int32 (x0 low, x1 high, each int16) broadcast to every lane;
// vpmaddwd gives w[o][0] * x0 + w[o][1] * x1 per output in int32 (|sum| <=
// 2 * 128 * 128: no saturation, any int8 weight).
// Requantization, 8 lanes: the SRDHM's 64-bit products by vpmuldq on the even
// lanes and on the odd lanes shifted down, + 2^30 and >> 31 (floor: the ties-up
// form of SRDHM, qrequant.h), the MIN x MIN case fixed to MAX; then
// RoundingDivideByPOT with per-lane variable shifts (vpsravd) and its
// remainder / threshold comparison.
// Single rounding (FULLY_CONNECTED): (x * m + 2^(t-1)) >> t, t = 31 - shift
// in [1, 62], on the 64-bit products of the even and the odd lanes (vpmuldq).
// AVX2 has no 64-bit arithmetic shift: adding 2^62 makes the sum
// non-negative (|x * m| <= 2^62, and the sum stays below 2^64), a logical
// shift (vpsrlvq) then floors it, and 2^62 >> t = 2^(62 - t) is subtracted
// back; the low dwords of the two halves are the int32 results.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "int8_conv.h"

namespace {

// The int16 pair (*a low, *b high), both sign-extended: 3 instructions (the
// compiler's movsbw / movsbl / movzwl / shl / or took 5) by writing the low
// half of the register that holds *b << 16.
__attribute__((always_inline)) inline int32_t PairBits(const int8_t* a, const int8_t* b) {
  int32_t v;
  asm("movsbl %1, %0\n\tshll $16, %0\n\tmovsbw %2, %w0" : "=&r"(v) : "m"(*b), "m"(*a));
  return v;
}

// Single rounding of 64-bit lanes: p (vpmuldq products) and per-lane shifts
// t in [1, 62] (each qword's low dword; its high dword 0):
// ((p + 2^62 + 2^(t - 1)) >>> t) - (2^62 >>> t).
__attribute__((always_inline)) inline __m256i SingleRound64(__m256i p, __m256i t) {
  const __m256i big = _mm256_set1_epi64x(int64_t(1) << 62);
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i half = _mm256_sllv_epi64(one, _mm256_sub_epi64(t, one));
  const __m256i u = _mm256_add_epi64(_mm256_add_epi64(p, big), half);
  return _mm256_sub_epi64(_mm256_srlv_epi64(u, t), _mm256_srlv_epi64(big, t));
}
__attribute__((always_inline)) inline __m128i SingleRound64(__m128i p, __m128i t) {
  const __m128i big = _mm_set1_epi64x(int64_t(1) << 62);
  const __m128i one = _mm_set1_epi64x(1);
  const __m128i half = _mm_sllv_epi64(one, _mm_sub_epi64(t, one));
  const __m128i u = _mm_add_epi64(_mm_add_epi64(p, big), half);
  return _mm_sub_epi64(_mm_srlv_epi64(u, t), _mm_srlv_epi64(big, t));
}

struct Avx2Int8Traits {  // 8 int32 outputs per ymm
  static constexpr int kOut = 8;
  using acc = __m256i;
  using wreg = __m256i;
  using xreg = __m256i;
  static acc load32(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store32(int32_t* p, acc v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static wreg loadw(const int8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static xreg pair(const int8_t* a, const int8_t* b) {
    return _mm256_set1_epi32(PairBits(a, b));
  }
  static acc madd(acc a, xreg x, wreg w) { return _mm256_add_epi32(a, _mm256_madd_epi16(x, w)); }
  static acc rshift_param(const int32_t* p) { return load32(p); }
  static acc requant(acc x, acc m, acc l, acc r, acc mask) {
    x = _mm256_sllv_epi32(x, l);
    const __m256i half = _mm256_set1_epi64x(int64_t(1) << 30);
    // Even lanes: bits 31..62 of (x * m + 2^30) into the low dword; odd lanes
    // into the high dword (<< 1).
    const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, m), half), 31);
    const __m256i odd = _mm256_slli_epi64(
        _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), half),
        1);
    __m256i h = _mm256_blend_epi32(even, odd, 0xAA);
    const __m256i minv = _mm256_set1_epi32(INT32_MIN);
    // 2^62 + 2^30 >> 31 wrapped to INT32_MIN; xor with all ones: INT32_MAX.
    h = _mm256_xor_si256(h, _mm256_and_si256(_mm256_cmpeq_epi32(x, minv), _mm256_cmpeq_epi32(m, minv)));
    const __m256i rem = _mm256_and_si256(h, mask);
    // threshold = (mask >> 1) + (h < 0); the comparisons give -1 for true.
    const __m256i thr = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1),
                                         _mm256_cmpgt_epi32(_mm256_setzero_si256(), h));
    return _mm256_sub_epi32(_mm256_srav_epi32(h, r), _mm256_cmpgt_epi32(rem, thr));
  }
  static acc total_param(const int32_t* p) { return load32(p); }
  static acc requant_single(acc x, acc m, acc t) {
    const __m256i lo32 = _mm256_set1_epi64x(0xffffffff);
    const __m256i even = SingleRound64(_mm256_mul_epi32(x, m), _mm256_and_si256(t, lo32));
    const __m256i odd = SingleRound64(
        _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)),
        _mm256_srli_epi64(t, 32));
    return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
  static acc splat(int32_t v) { return _mm256_set1_epi32(v); }
  static acc widen8(const int8_t* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static acc add(acc a, acc b) { return _mm256_add_epi32(a, b); }
  static acc max(acc a, acc b) { return _mm256_max_epi32(a, b); }
  static acc min(acc a, acc b) { return _mm256_min_epi32(a, b); }
  static __m128i Pack16(acc v) {  // 8 int32 -> 8 int16, in order
    return _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  }
  template <int G>
  static void narrow_store(int8_t* out, const acc (&v)[G]) {
    if constexpr (G == 1) {
      const __m128i s = Pack16(v[0]);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(s, s));
    } else {
      static_assert(G % 2 == 0, "whole 16-byte stores");
      for (int g = 0; g < G; g += 2) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 * g),
                         _mm_packs_epi16(Pack16(v[g]), Pack16(v[g + 1])));
      }
    }
  }
};

struct Sse4Int8Traits {  // 4 int32 outputs per xmm (N = 4), VEX-encoded with AVX2's shifts
  static constexpr int kOut = 4;
  using acc = __m128i;
  using wreg = __m128i;
  using xreg = __m128i;
  static acc load32(const int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static void store32(int32_t* p, acc v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  static wreg loadw(const int8_t* p) {
    return _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static xreg pair(const int8_t* a, const int8_t* b) { return _mm_set1_epi32(PairBits(a, b)); }
  static acc madd(acc a, xreg x, wreg w) { return _mm_add_epi32(a, _mm_madd_epi16(x, w)); }
  static acc rshift_param(const int32_t* p) { return load32(p); }
  static acc requant(acc x, acc m, acc l, acc r, acc mask) {
    x = _mm_sllv_epi32(x, l);
    const __m128i half = _mm_set1_epi64x(int64_t(1) << 30);
    const __m128i even = _mm_srli_epi64(_mm_add_epi64(_mm_mul_epi32(x, m), half), 31);
    const __m128i odd = _mm_slli_epi64(
        _mm_add_epi64(_mm_mul_epi32(_mm_srli_epi64(x, 32), _mm_srli_epi64(m, 32)), half), 1);
    __m128i h = _mm_blend_epi32(even, odd, 0xA);
    const __m128i minv = _mm_set1_epi32(INT32_MIN);
    h = _mm_xor_si128(h, _mm_and_si128(_mm_cmpeq_epi32(x, minv), _mm_cmpeq_epi32(m, minv)));
    const __m128i rem = _mm_and_si128(h, mask);
    const __m128i thr =
        _mm_sub_epi32(_mm_srli_epi32(mask, 1), _mm_cmpgt_epi32(_mm_setzero_si128(), h));
    return _mm_sub_epi32(_mm_srav_epi32(h, r), _mm_cmpgt_epi32(rem, thr));
  }
  static acc total_param(const int32_t* p) { return load32(p); }
  static acc requant_single(acc x, acc m, acc t) {
    const __m128i lo32 = _mm_set1_epi64x(0xffffffff);
    const __m128i even = SingleRound64(_mm_mul_epi32(x, m), _mm_and_si128(t, lo32));
    const __m128i odd = SingleRound64(_mm_mul_epi32(_mm_srli_epi64(x, 32), _mm_srli_epi64(m, 32)),
                                      _mm_srli_epi64(t, 32));
    return _mm_blend_epi32(even, _mm_slli_epi64(odd, 32), 0xA);
  }
  static acc splat(int32_t v) { return _mm_set1_epi32(v); }
  static acc add(acc a, acc b) { return _mm_add_epi32(a, b); }
  static acc max(acc a, acc b) { return _mm_max_epi32(a, b); }
  static acc min(acc a, acc b) { return _mm_min_epi32(a, b); }
  template <int G>
  static void narrow_store(int8_t* out, const acc (&v)[G]) {
    static_assert(G == 1, "N = 4 only");
    const __m128i s = _mm_packs_epi32(v[0], v[0]);
    const int32_t four = _mm_cvtsi128_si32(_mm_packs_epi16(s, s));
    std::memcpy(out, &four, 4);
  }
};

#include "ukernel_int8_impl.h"

// TFLite's int8 ADD (int8_add.h), 8 lanes, using what its value ranges allow
// (x, zp int8: |d| = |x - zp| <= 255):
//  - SRDHM(d << 20, m) = floor((d m 2^20 + 2^30) / 2^31)
//    = d (m >> 11) + floor((d (m & 2047) + 2^10) / 2^11), both products within
//    int32 (|d (m >> 11)| <= 255 * 2^20): vpmulld instead of 64-bit products;
//    its result y has |y| < 2^28 + 1, and SRDHM saturates only for d << 20 =
//    m = INT32_MIN, which |d << 20| < 2^28 rules out.
//  - the output stage's SRDHM of s = s1 + s2 (|s| < 2^29 + 2: never INT32_MIN,
//    so no saturation either) on vpmuldq's 64-bit products, as requant.
//  - RoundingDivideByPOT(y, r) for |y| < 2^30 as (y + 2^(r-1) - [y < 0]) >> r
//    (r > 0; y for r = 0): floor((y + 2^(r-1)) / 2^r) rounds halves up,
//    floor((y + 2^(r-1) - 1) / 2^r) = -floor((-y + 2^(r-1)) / 2^r) rounds them
//    away from zero below 0; y + 2^(r-1) < 2^31 (r <= 31).
// Tested bit-exact against the scalar Int8Add (tests/test_int8_add.cc).
struct AddStage {  // one input's (x - zp) << 20 requantization
  __m256i zp, mh, ml, half, negflag;
  __m128i r;
  AddStage(int32_t zp_, int32_t m, int32_t rshift)
      : zp(_mm256_set1_epi32(zp_)),
        mh(_mm256_set1_epi32(m >> 11)),
        ml(_mm256_set1_epi32(m & 2047)),
        half(_mm256_set1_epi32(rshift > 0 ? int32_t(1) << (rshift - 1) : 0)),
        negflag(_mm256_set1_epi32(rshift > 0 ? -1 : 0)),
        r(_mm_cvtsi32_si128(rshift)) {}
};

__attribute__((always_inline)) inline __m256i DivideByPOT(__m256i y, const AddStage& st) {
  const __m256i nudge =
      _mm256_add_epi32(st.half, _mm256_and_si256(_mm256_srai_epi32(y, 31), st.negflag));
  return _mm256_sra_epi32(_mm256_add_epi32(y, nudge), st.r);
}

__attribute__((always_inline)) inline __m256i AddInput(const int8_t* p, const AddStage& st) {
  const __m256i d = _mm256_sub_epi32(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))), st.zp);
  const __m256i lo = _mm256_srai_epi32(
      _mm256_add_epi32(_mm256_mullo_epi32(d, st.ml), _mm256_set1_epi32(1 << 10)), 11);
  return DivideByPOT(_mm256_add_epi32(_mm256_mullo_epi32(d, st.mh), lo), st);
}

void Int8AddRowAvx2(const int8_t* conv, const int8_t* residual, int8_t* out, int64_t count,
                    const tsp::Int8AddParams& p) {
  const AddStage a(p.zp1, p.m1, p.rshift1), b(p.zp2, p.m2, p.rshift2);
  const AddStage o(0, 0, p.rshift_out);
  const __m256i mo = _mm256_set1_epi32(p.m_out);
  const __m256i round = _mm256_set1_epi64x(int64_t(1) << 30);
  const __m256i zpo = _mm256_set1_epi32(p.zp_out);
  const __m256i lo = _mm256_set1_epi32(p.act_min), hi = _mm256_set1_epi32(p.act_max);
  auto eight = [&](int64_t i) {
    const __m256i s = _mm256_add_epi32(AddInput(conv + i, a), AddInput(residual + i, b));
    const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(s, mo), round), 31);
    const __m256i odd = _mm256_slli_epi64(
        _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(s, 32), mo), round), 1);
    const __m256i h = _mm256_blend_epi32(even, odd, 0xAA);
    return _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(DivideByPOT(h, o), zpo), lo), hi);
  };
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m256i v0 = eight(i), v1 = eight(i + 8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm_packs_epi16(Avx2Int8Traits::Pack16(v0), Avx2Int8Traits::Pack16(v1)));
  }
  for (; i < count; ++i) out[i] = tsp::Int8Add(conv[i], residual[i], p);
}

// 16 ymm: P x G accumulators + G weights + 1 broadcast pair.
tsp::Int8KernelSet MakeAvx2Int8() {
  tsp::Int8KernelSet ks;
  ks.name = "avx2";
  ks.by_n[0] = MakeInt8UKernel<Sse4Int8Traits, 4, 8>();
  ks.by_n[1] = MakeInt8UKernel<Avx2Int8Traits, 8, 8>();
  ks.by_n[2] = MakeInt8UKernel<Avx2Int8Traits, 16, 6>();
  ks.by_n[3] = MakeInt8UKernel<Avx2Int8Traits, 32, 2>();
  ks.requant = &Int8RequantArray<Avx2Int8Traits>;
  ks.requant_n4 = &Int8RequantArray<Sse4Int8Traits>;
  ks.requant_single = &Int8RequantSingleArray<Avx2Int8Traits>;
  ks.requant_single_n4 = &Int8RequantSingleArray<Sse4Int8Traits>;
  ks.add_row = &Int8AddRowAvx2;
  return ks;
}

}  // namespace

namespace tsp {
const Int8KernelSet* Avx2KernelsInt8Unchecked() {
  static const Int8KernelSet ks = MakeAvx2Int8();
  return &ks;
}
}  // namespace tsp
