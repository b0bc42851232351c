// TFLite's int8 requantization, scalar and exact: what the reference int8
// kernels do to an int32 accumulator, in both of TFLite's forms: double
// rounding (the default build's MultiplyByQuantizedMultiplier, what
// ai-edge-litert's reference int8 CONV_2D uses) and single rounding (the
// TFLITE_SINGLE_ROUNDING form, what its reference int8 FULLY_CONNECTED uses:
// docs/int8_kernel_research.md, section 8).
//
// Written from the formulas (docs/int8_kernel_research.md, section 1); the
// upstream definitions they describe are
//   QuantizeMultiplier            tensorflow/lite/kernels/internal/quantization_util.cc
//   MultiplyByQuantizedMultiplier tensorflow/lite/kernels/internal/common.cc
//                                 (the branch without TFLITE_SINGLE_ROUNDING;
//                                 MultiplyByQuantizedMultiplierSingle below:
//                                 the TFLITE_SINGLE_ROUNDING branch)
//   SaturatingRoundingDoublingHighMul, RoundingDivideByPOT
//                                 google/gemmlowp fixedpoint/fixedpoint.h
// The vector paths (ukernels_int8_*.cc) are tested bit-exact against these.
#ifndef TSP_QREQUANT_H_
#define TSP_QREQUANT_H_

#include <cmath>
#include <cstdint>
#include <limits>

namespace tsp {

// Real multiplier -> (m, shift) with multiplier ~= m * 2^(shift - 31):
// m in [2^30, 2^31) (0 for 0), shift > 0 a left shift. frexp gives
// multiplier = f * 2^shift with f in [0.5, 1); m = round(f * 2^31), rounding
// half away from zero (std::round, TfLiteRound); m == 2^31 becomes 2^30 with
// shift + 1; a shift below -31 (every bit shifted out) becomes m = 0, shift 0.
inline void QuantizeMultiplier(double multiplier, int32_t* m, int* shift) {
  if (multiplier == 0.0) {
    *m = 0;
    *shift = 0;
    return;
  }
  const double f = std::frexp(multiplier, shift);
  int64_t q = static_cast<int64_t>(std::round(f * double(int64_t(1) << 31)));
  if (q == (int64_t(1) << 31)) {
    q /= 2;
    ++*shift;
  }
  if (*shift < -31) {
    *shift = 0;
    q = 0;
  }
  *m = static_cast<int32_t>(q);
}

// gemmlowp's SaturatingRoundingDoublingHighMul: the high 32 bits of 2ab,
// rounded: (ab + nudge) / 2^31 with nudge = 2^30 for ab >= 0 and 1 - 2^30
// otherwise, the division truncating toward zero. Both signs reduce to
// floor((ab + 2^30) / 2^31), ties upward, which is what NEON's SQRDMULH and the
// AVX2 path compute. Saturates only for a = b = INT32_MIN (2^62 / 2^31 = 2^31).
inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min()) {
    return std::numeric_limits<int32_t>::max();
  }
  const int64_t ab = int64_t(a) * int64_t(b);
  const int64_t nudge = ab >= 0 ? (int64_t(1) << 30) : (1 - (int64_t(1) << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t(1) << 31));
}

// gemmlowp's RoundingDivideByPOT: x / 2^e, e in [0, 31], rounding half away
// from zero: (x >> e) + 1 when the remainder x & (2^e - 1) exceeds
// (2^e - 1) >> 1, plus 1 for negative x (an arithmetic shift floors).
inline int32_t RoundingDivideByPOT(int32_t x, int e) {
  const int32_t mask = static_cast<int32_t>((int64_t(1) << e) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (remainder > threshold ? 1 : 0);
}

// TFLite's MultiplyByQuantizedMultiplier with double rounding, shift in
// [-31, 30]: RoundingDivideByPOT(SRDHM(x << max(shift, 0), m), max(-shift, 0)).
// The left shift is TFLite's x * (1 << shift) in int32: it wraps (here
// without undefined behaviour), as every vector path does.
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t m, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int32_t xs = static_cast<int32_t>(static_cast<uint32_t>(x) << left);
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(xs, m), right);
}

// The same with the shift split as the packed filter stores it per channel:
// lshift = max(shift, 0), rshift = max(-shift, 0).
inline int32_t MultiplyByQuantizedMultiplierSplit(int32_t x, int32_t m, int lshift, int rshift) {
  const int32_t xs = static_cast<int32_t>(static_cast<uint32_t>(x) << lshift);
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(xs, m), rshift);
}

// Single rounding (upstream: MultiplyByQuantizedMultiplier's
// TFLITE_SINGLE_ROUNDING branch, tensorflow/lite/kernels/internal/common.cc),
// shift in [-31, 30]: with total = 31 - shift in [1, 62],
//   (int64(x) * m + 2^(total - 1)) >> total,
// an arithmetic shift (floor: ties upward), the int64 result cast to int32.
// |x * m| <= 2^62, so the sum cannot overflow int64. Upstream only
// DCHECKs that the result fits int32 (it may not for a left shift); the cast
// keeps its low 32 bits, as every vector path does.
inline int32_t MultiplyByQuantizedMultiplierSingleTotal(int32_t x, int32_t m, int total) {
  const int64_t sum = int64_t(x) * int64_t(m) + (int64_t(1) << (total - 1));
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(sum >> total)));
}

inline int32_t MultiplyByQuantizedMultiplierSingle(int32_t x, int32_t m, int shift) {
  return MultiplyByQuantizedMultiplierSingleTotal(x, m, 31 - shift);
}

// Either form.
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t m, int shift,
                                             bool single_rounding) {
  return single_rounding ? MultiplyByQuantizedMultiplierSingle(x, m, shift)
                         : MultiplyByQuantizedMultiplier(x, m, shift);
}

}  // namespace tsp

#endif  // TSP_QREQUANT_H_
