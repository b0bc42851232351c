#include "int8_claim.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace tsp {
namespace {

const TfLiteAffineQuantization* Affine(const TfLiteTensor* t) {
  if (t->quantization.type != kTfLiteAffineQuantization) return nullptr;
  return static_cast<const TfLiteAffineQuantization*>(t->quantization.params);
}

}  // namespace

bool Int8ActivationRange(int activation, float scale, int32_t zero_point, int32_t* act_min,
                         int32_t* act_max) {
  // zero_point + round(f / scale), the division in float as upstream
  auto quantize = [&](float f) {
    return zero_point + static_cast<int32_t>(std::round(f / scale));
  };
  int32_t lo = -128, hi = 127;
  switch (activation) {
    case kTfLiteActNone:
      break;
    case kTfLiteActRelu:
      lo = std::max(lo, quantize(0.0f));
      break;
    case kTfLiteActRelu6:
      lo = std::max(lo, quantize(0.0f));
      hi = std::min(hi, quantize(6.0f));
      break;
    case kTfLiteActReluN1To1:
      lo = std::max(lo, quantize(-1.0f));
      hi = std::min(hi, quantize(1.0f));
      break;
    default:
      return false;
  }
  *act_min = lo;
  *act_max = hi;
  return true;
}

bool AnalyseInt8(const TfLiteTensor* input, const TfLiteTensor* filter, const TfLiteTensor* bias,
                 const TfLiteTensor* output, int activation, int cout, int kh, int kw, int cin,
                 bool single_rounding, const double thresholds[4], Int8Claim* claim,
                 std::string* reason) {
  if (input->type != kTfLiteInt8 || output->type != kTfLiteInt8) {
    *reason = "input/output not float32 or int8";
    return false;
  }
  if (filter->type != kTfLiteInt8 || filter->allocation_type != kTfLiteMmapRo ||
      filter->data.data == nullptr) {
    *reason = "int8 node whose filter is not a constant int8 tensor";
    return false;
  }
  const TfLiteAffineQuantization* fq = Affine(filter);
  if (fq == nullptr || fq->scale == nullptr || fq->scale->size < 1) {
    *reason = "int8 filter without affine quantization";
    return false;
  }
  const int scales = fq->scale->size;
  if ((scales != 1 && scales != cout) || (scales > 1 && fq->quantized_dimension != 0)) {
    *reason = "int8 filter not quantized per output channel or per tensor";
    return false;
  }
  if (single_rounding && scales == 1) {
    // Single rounding was measured for the per-channel FULLY_CONNECTED
    // (docs/int8_kernel_research.md, section 8), not for the per-tensor one.
    *reason = "int8 FULLY_CONNECTED with a per-tensor filter scale (only per-channel is claimed)";
    return false;
  }
  if (fq->zero_point != nullptr) {
    for (int i = 0; i < fq->zero_point->size; ++i) {
      if (fq->zero_point->data[i] != 0) {
        *reason = "int8 filter with a nonzero zero point (not symmetric)";
        return false;
      }
    }
  }
  const int32_t* bias_data = nullptr;
  if (bias != nullptr) {
    if (bias->type != kTfLiteInt32 || bias->allocation_type != kTfLiteMmapRo ||
        bias->data.data == nullptr) {
      *reason = "int8 node whose bias is not a constant int32 tensor";
      return false;
    }
    bias_data = bias->data.i32;
  }
  const float in_scale = input->params.scale, out_scale = output->params.scale;
  if (!(in_scale > 0.0f) || !(out_scale > 0.0f)) {
    *reason = "int8 input or output without a positive scale";
    return false;
  }
  Int8ConvParams q;
  q.input_zero_point = input->params.zero_point;
  q.output_zero_point = output->params.zero_point;
  q.single_rounding = single_rounding;
  if (!Int8ActivationRange(activation, out_scale, q.output_zero_point, &q.act_min,
                           &q.act_max)) {
    *reason = "fused activation not supported (only NONE/RELU/RELU6/RELU_N1_TO_1)";
    return false;
  }
  PerChannelMultipliers(in_scale, fq->scale->data, scales, out_scale, cout, &q);
  // Block sparsity depends only on where the exact zeros are: the float
  // analysis runs on a 0/1 copy of the filter.
  const int taps = kh * kw;
  const size_t count = size_t(cout) * size_t(taps) * size_t(cin);
  const auto* w = static_cast<const int8_t*>(filter->data.data);
  std::vector<float> nonzero(count);
  for (size_t i = 0; i < count; ++i) nonzero[i] = w[i] != 0 ? 1.0f : 0.0f;
  const BlockChoice choice = ChooseBlockSize(nonzero.data(), cout, taps, cin, thresholds);
  if (choice.n == 0) {
    *reason = choice.reason;
    const std::string option = "(min_sparsity)";
    const size_t at = reason->find(option);
    if (at != std::string::npos) reason->replace(at, option.size(), "(min_sparsity_int8)");
    return false;
  }
  std::string error;
  if (!PackFilterInt8(w, bias_data, cout, kh, kw, cin, choice.n, q, &claim->pf, &error)) {
    *reason = "int8 parameters outside what the kernels take: " + error;
    return false;
  }
  claim->sparsity = choice.sparsity;
  return true;
}

}  // namespace tsp
