// NEON int8 path (aarch64), selected at compile time.
//
// Products: a pair of kept entries' weights for 4 outputs, [o][e] as 8 bytes,
// times the pair's inputs as 8 bytes x0 x1 x0 x1 ... (two ld1r and a trn1):
// smull gives 8 int16 products (|p| <= 128 * 128 = 16384: any int8 weight),
// sadalp adds each output's two into its int32 lane.
// Requantization, 4 lanes: sshl by the left shift; sqrdmulh (= SRDHM:
// floor((x * m + 2^30) / 2^31), saturating only MIN x MIN); then
// RoundingDivideByPOT as srshl by -e (ties upward) after subtracting 1 from
// negative x when e > 0 (ties then go away from zero): the sign bit of
// x & -e is set exactly when x < 0 and e > 0, and >> 31 makes it -1. (The
// add saturates, though SRDHM never returns INT32_MIN: |ab| <= 2^62 - 2^31
// unless a = b = INT32_MIN, so x - 1 cannot wrap.)
// Verified bit-exact against qrequant.h by tests/test_int8_requant.cc under
// qemu-aarch64 (random and edge-case accumulators, multipliers, all shifts
// -31..30, exact ties); dropping the fixup fails it.
// Single rounding (FULLY_CONNECTED), 2 x 2 lanes: smull / smull2 give the
// int64 products, srshl by -(31 - shift) is exactly (p + 2^(total-1)) >> total,
// xtn narrows (the int32 cast).
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "int8_conv.h"

namespace {

struct NeonInt8Traits {  // 4 int32 outputs per q register
  static constexpr int kOut = 4;
  using acc = int32x4_t;
  using wreg = int8x8_t;
  using xreg = int8x8_t;
  static acc load32(const int32_t* p) { return vld1q_s32(p); }
  static void store32(int32_t* p, acc v) { vst1q_s32(p, v); }
  static wreg loadw(const int8_t* p) { return vld1_s8(p); }
  static xreg pair(const int8_t* a, const int8_t* b) {
    return vtrn1_s8(vld1_dup_s8(a), vld1_dup_s8(b));
  }
  static acc madd(acc a, xreg x, wreg w) { return vpadalq_s16(a, vmull_s8(w, x)); }
  static acc rshift_param(const int32_t* p) { return vnegq_s32(vld1q_s32(p)); }
  static acc requant(acc x, acc m, acc l, acc neg_r, acc /*rmask*/) {
    x = vqrdmulhq_s32(vshlq_s32(x, l), m);
    const int32x4_t fixup = vshrq_n_s32(vandq_s32(x, neg_r), 31);
    return vrshlq_s32(vqaddq_s32(x, fixup), neg_r);
  }
  static acc total_param(const int32_t* p) { return vnegq_s32(vld1q_s32(p)); }
  static acc requant_single(acc x, acc m, acc neg_total) {
    // srshl by -total: (p + 2^(total - 1)) >> total, the rounding add done
    // without overflow; xtn keeps the low 32 bits (the int32 cast).
    const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(m)),
                                    vmovl_s32(vget_low_s32(neg_total)));
    const int64x2_t hi = vrshlq_s64(vmull_high_s32(x, m), vmovl_high_s32(neg_total));
    return vcombine_s32(vmovn_s64(lo), vmovn_s64(hi));
  }
  static acc splat(int32_t v) { return vdupq_n_s32(v); }
  static acc widen8(const int8_t* p) {
    int32_t four;
    std::memcpy(&four, p, 4);
    return vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(four)))));
  }
  static acc add(acc a, acc b) { return vaddq_s32(a, b); }
  static acc max(acc a, acc b) { return vmaxq_s32(a, b); }
  static acc min(acc a, acc b) { return vminq_s32(a, b); }
  template <int G>
  static void narrow_store(int8_t* out, const acc (&v)[G]) {
    if constexpr (G == 1) {
      const int8x8_t b = vqmovn_s16(vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[0])));
      const int32_t four = vget_lane_s32(vreinterpret_s32_s8(b), 0);
      std::memcpy(out, &four, 4);
    } else {
      static_assert(G % 2 == 0, "whole 8-byte stores");
      for (int g = 0; g < G; g += 2) {
        vst1_s8(out + 4 * g, vqmovn_s16(vcombine_s16(vqmovn_s32(v[g]), vqmovn_s32(v[g + 1]))));
      }
    }
  }
};

#include "ukernel_int8_impl.h"

// 32 q registers: P x G accumulators + G weight halves + the pairs.
tsp::Int8KernelSet MakeNeonInt8() {
  tsp::Int8KernelSet ks;
  ks.name = "neon";
  ks.by_n[0] = MakeInt8UKernel<NeonInt8Traits, 4, 8>();
  ks.by_n[1] = MakeInt8UKernel<NeonInt8Traits, 8, 8>();
  ks.by_n[2] = MakeInt8UKernel<NeonInt8Traits, 16, 4>();
  ks.by_n[3] = MakeInt8UKernel<NeonInt8Traits, 32, 2>();
  ks.requant = &Int8RequantArray<NeonInt8Traits>;
  ks.requant_n4 = ks.requant;
  ks.requant_single = &Int8RequantSingleArray<NeonInt8Traits>;
  ks.requant_single_n4 = ks.requant_single;
  ks.add_row = &Int8AddRowArray<NeonInt8Traits, 4>;  // 16 elements a step
  return ks;
}

}  // namespace

namespace tsp {
const Int8KernelSet* NeonKernelsInt8() {
  static const Int8KernelSet ks = MakeNeonInt8();
  return &ks;
}
}  // namespace tsp
