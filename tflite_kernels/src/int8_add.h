// TFLite's int8 ADD (same shapes, no broadcasting), scalar and exact: what the
// delegate applies in the epilogue of an int8 CONV_2D it fuses a residual ADD
// into. Written from the formulas; the upstream definitions they describe are
//   Prepare (the parameters)   tensorflow/lite/kernels/add.cc
//   AddElementwise / AddFunc   tensorflow/lite/kernels/internal/reference/integer_ops/add.h
//   MultiplyByQuantizedMultiplierSmallerThanOneExp
//                              tensorflow/lite/kernels/internal/common.h
// ai-edge-litert 2.3.0's reference int8 ADD rounds twice (SRDHM, then
// RoundingDivideByPOT) at each of its three requantizations, measured in
// tests/test_int8_delegate.py (test_the_reference_int8_add_rounds_twice;
// docs/int8_kernel_research.md, section 9).
#ifndef TSP_INT8_ADD_H_
#define TSP_INT8_ADD_H_

#include <algorithm>
#include <cstdint>

#include "qrequant.h"

namespace tsp {

struct Int8AddParams {
  int32_t zp1 = 0, zp2 = 0, zp_out = 0;
  int32_t m1 = 0, m2 = 0, m_out = 0;   // QuantizeMultiplier's m
  int32_t rshift1 = 0, rshift2 = 0, rshift_out = 0;  // -shift (all multipliers < 1)
  int32_t act_min = -128, act_max = 127;
};

// As add.cc's Prepare: left_shift = 20, twice_max = 2 max(s1, s2) (double);
// real multipliers s1 / twice_max, s2 / twice_max, twice_max / (2^20 s_out),
// each QuantizeMultiplierSmallerThanOneExp'd. False if a multiplier is not
// below one (s_out too small: twice_max / (2^20 s_out) >= 1) or a scale is not
// positive.
inline bool MakeInt8AddParams(float s1, int32_t zp1, float s2, int32_t zp2, float s_out,
                              int32_t zp_out, int32_t act_min, int32_t act_max,
                              Int8AddParams* p) {
  if (!(s1 > 0.0f) || !(s2 > 0.0f) || !(s_out > 0.0f)) return false;
  const double twice_max = 2.0 * std::max(double(s1), double(s2));
  const double reals[3] = {double(s1) / twice_max, double(s2) / twice_max,
                           twice_max / (double(1 << 20) * double(s_out))};
  int32_t m[3];
  int shift[3];
  for (int i = 0; i < 3; ++i) {
    if (!(reals[i] < 1.0)) return false;
    QuantizeMultiplier(reals[i], &m[i], &shift[i]);
    if (shift[i] > 0 || shift[i] < -31) return false;
  }
  p->zp1 = zp1;
  p->zp2 = zp2;
  p->zp_out = zp_out;
  p->m1 = m[0];
  p->m2 = m[1];
  p->m_out = m[2];
  p->rshift1 = -shift[0];
  p->rshift2 = -shift[1];
  p->rshift_out = -shift[2];
  p->act_min = act_min;
  p->act_max = act_max;
  return true;
}

// One element: v_i = (x_i - zp_i) << 20 (|v_i| < 2^28: no overflow);
// scaled_i = RoundingDivideByPOT(SRDHM(v_i, m_i), rshift_i);
// raw = RoundingDivideByPOT(SRDHM(scaled_1 + scaled_2, m_out), rshift_out)
// + zp_out, clamped to [act_min, act_max].
inline int8_t Int8Add(int32_t x1, int32_t x2, const Int8AddParams& p) {
  const int32_t v1 = (x1 - p.zp1) * (1 << 20);
  const int32_t v2 = (x2 - p.zp2) * (1 << 20);
  const int32_t s1 = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(v1, p.m1), p.rshift1);
  const int32_t s2 = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(v2, p.m2), p.rshift2);
  const int32_t raw =
      RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(s1 + s2, p.m_out), p.rshift_out) +
      p.zp_out;
  return static_cast<int8_t>(std::min(std::max(raw, p.act_min), p.act_max));
}

// out[i] = Int8Add(conv[i], residual[i]) over count elements (out may be conv).
inline void Int8AddRow(const int8_t* conv, const int8_t* residual, int8_t* out, int64_t count,
                       const Int8AddParams& p) {
  for (int64_t i = 0; i < count; ++i) out[i] = Int8Add(conv[i], residual[i], p);
}

}  // namespace tsp

#endif  // TSP_INT8_ADD_H_
