// TFLite's reference int8 CONV_2D and FULLY_CONNECTED (per-channel), naive
// loops, written from their definitions in
//   tensorflow/lite/kernels/internal/reference/integer_ops/conv.h
//     (ConvPerChannel: acc += filter * (input + input_offset) over the taps
//     inside the image, input_offset = -zp_in; + bias; requantize;
//     + output_offset; clamp)
//   tensorflow/lite/kernels/internal/reference/integer_ops/fully_connected.h
//     (FullyConnectedPerChannel: the same over the accumulation depth)
// The requantization rounds twice or once as q.single_rounding says
// (ai-edge-litert's CONV_2D: twice; its FULLY_CONNECTED: once).
// The int32 sums wrap (computed unsigned), as the optimised paths do.
#include <algorithm>

#include "int8_conv.h"
#include "qrequant.h"

namespace tsp {

namespace {

inline int8_t OutputStage(uint32_t acc, int o, const Int8ConvParams& q) {
  int32_t v = MultiplyByQuantizedMultiplier(int32_t(acc), q.multiplier[size_t(o)],
                                            q.shift[size_t(o)], q.single_rounding);
  v = int32_t(uint32_t(v) + uint32_t(q.output_zero_point));
  v = std::min(std::max(v, q.act_min), q.act_max);
  return int8_t(v);
}

}  // namespace

void ReferenceConvInt8(const ConvGeometry& g, const int8_t* input, const int8_t* filter,
                       const int32_t* bias, const Int8ConvParams& q, int8_t* output) {
  const int32_t input_offset = -q.input_zero_point;
  for (int b = 0; b < g.batch; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        for (int o = 0; o < g.cout; ++o) {
          uint32_t acc = 0;
          for (int ky = 0; ky < g.kh; ++ky) {
            const int iy = oy * g.stride_h - g.pad_top + ky * g.dil_h;
            for (int kx = 0; kx < g.kw; ++kx) {
              const int ix = ox * g.stride_w - g.pad_left + kx * g.dil_w;
              if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
              const int8_t* x = input + ((size_t(b) * g.in_h + iy) * g.in_w + ix) * g.cin;
              const int8_t* f = filter + ((size_t(o) * g.kh + ky) * g.kw + kx) * g.cin;
              for (int c = 0; c < g.cin; ++c) {
                acc += uint32_t(int32_t(f[c]) * (int32_t(x[c]) + input_offset));
              }
            }
          }
          if (bias != nullptr) acc += uint32_t(bias[o]);
          output[((size_t(b) * g.out_h + oy) * g.out_w + ox) * g.cout + o] = OutputStage(acc, o, q);
        }
      }
    }
  }
}

void ReferenceFullyConnectedInt8(const int8_t* input, int m, int cin, const int8_t* filter,
                                 const int32_t* bias, int cout, const Int8ConvParams& q,
                                 int8_t* output) {
  const int32_t input_offset = -q.input_zero_point;
  for (int b = 0; b < m; ++b) {
    for (int o = 0; o < cout; ++o) {
      uint32_t acc = 0;
      for (int d = 0; d < cin; ++d) {
        acc += uint32_t(int32_t(filter[size_t(o) * cin + d]) *
                        (int32_t(input[size_t(b) * cin + d]) + input_offset));
      }
      if (bias != nullptr) acc += uint32_t(bias[o]);
      output[size_t(b) * cout + o] = OutputStage(acc, o, q);
    }
  }
}

}  // namespace tsp
