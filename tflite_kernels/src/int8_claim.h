// Claiming an int8 CONV_2D / FULLY_CONNECTED node: reads TFLite's quantization
// parameters of its tensors and packs the filter for the int8 1xN kernels
// (int8_conv.h), exactly as TFLite's reference int8 kernels would use them.
#ifndef TSP_INT8_CLAIM_H_
#define TSP_INT8_CLAIM_H_

#include <string>

#include "int8_conv.h"
#include "tsp_tflite/tflite_abi.h"

namespace tsp {

struct Int8Claim {
  PackedFilterInt8 pf;
  double sparsity = 0.0;  // block sparsity at pf.n
};

// TFLite's CalculateActivationRangeQuantized for an int8 output
// (tensorflow/lite/kernels/kernel_util.cc): the fused activation's bounds,
// quantized with the output's scale and zero point (round half away from
// zero of f / scale, in float), clamped to [-128, 127]. False for an
// activation other than NONE / RELU / RELU6 / RELU_N1_TO_1.
bool Int8ActivationRange(int activation, float scale, int32_t zero_point, int32_t* act_min,
                         int32_t* act_max);

// Analyses an int8 node whose filter is OHWI (cout, kh, kw, cin) (FULLY_CONNECTED:
// kh = kw = 1): int8 input and output quantized per tensor, a constant int8
// filter quantized symmetrically per output channel (or per tensor), an
// optional constant int32 bias. `thresholds` are the minimum block
// sparsities per N (kBlockSizes order). single_rounding: the output stage
// TFLite's kernel uses (ai-edge-litert's reference FULLY_CONNECTED rounds
// once, its CONV_2D twice: Int8ConvParams::single_rounding; a single-rounding
// node must have per-channel filter scales, the form measured). Returns true and
// fills *claim, or false with *reason saying why the node stays with TFLite.
bool AnalyseInt8(const TfLiteTensor* input, const TfLiteTensor* filter, const TfLiteTensor* bias,
                 const TfLiteTensor* output, int activation, int cout, int kh, int kw, int cin,
                 bool single_rounding, const double thresholds[4], Int8Claim* claim,
                 std::string* reason);

}  // namespace tsp

#endif  // TSP_INT8_CLAIM_H_
