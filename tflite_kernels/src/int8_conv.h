// int8 1xN block-sparse convolution, bit-exact with TFLite's reference int8
// kernels (reference_integer_ops::ConvPerChannel / FullyConnectedPerChannel;
// requantization with double rounding, as ai-edge-litert's CONV_2D, or single
// rounding, as its FULLY_CONNECTED: qrequant.h, chosen per filter by
// Int8ConvParams::single_rounding). Independent of TFLite.
//
// Quantization (TFLite's int8 spec): input and output int8 with any zero
// point; weights int8 with zero point 0, one scale per output channel; bias
// int32 (scale s_in * s_w[c], zero point 0). Layouts as the float path:
// input NHWC, filter OHWI, output NHWC; FULLY_CONNECTED is the 1x1
// convolution over M pixels (ConvGeometry 1 x M).
//
// Zero points and padding: the input zero point is folded into the bias at
// packing, bias'[c] = bias[c] - zp_in * (sum of channel c's weights), and taps
// outside the image read a row of zp_in bytes (PackedFilterInt8::pad_row), whose
// products zp_in * w cancel their share of the fold exactly. This equals the
// reference's skipped taps (TFLite: "the same as padding with zp_in"). All
// int32 sums wrap (two's complement) in every path, so the results equal the
// reference's int32 accumulator even where an intermediate would overflow.
#ifndef TSP_INT8_CONV_H_
#define TSP_INT8_CONV_H_

#include <cstdint>
#include <string>
#include <vector>

#include "int8_add.h"
#include "sparse_conv.h"

namespace tsp {

class ThreadPool;

// Output stage of one layer, TFLite's conventions.
struct Int8ConvParams {
  int32_t input_zero_point = 0;
  int32_t output_zero_point = 0;
  int32_t act_min = -128, act_max = 127;  // fused activation, int8 (RELU: zp_out..127)
  std::vector<int32_t> multiplier;        // per output channel, QuantizeMultiplier's m
  std::vector<int32_t> shift;             // per output channel, in [-31, 30] (> 0: left)
  // false: MultiplyByQuantizedMultiplier (double rounding, TFLite's CONV_2D);
  // true: MultiplyByQuantizedMultiplierSingle (TFLite's FULLY_CONNECTED).
  bool single_rounding = false;
};

// Per channel, as TFLite's PopulateConvolutionQuantizationParams:
// QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out)).
// num_filter_scales is cout (per channel) or 1 (per tensor).
void PerChannelMultipliers(float input_scale, const float* filter_scales, int num_filter_scales,
                           float output_scale, int cout, Int8ConvParams* p);

// Requantization data of the output channels, as the kernels read it.
struct Int8Requant {
  const int32_t* bias;    // folded bias (see above)
  const int32_t* mult;    // multiplier
  const int32_t* lshift;  // max(shift, 0)
  const int32_t* rshift;  // max(-shift, 0)
  const int32_t* rmask;   // (1 << rshift) - 1
  const int32_t* total;   // 31 - shift (single rounding)
  int32_t zp_out, act_min, act_max;
  bool single_rounding;   // total (single) or lshift / rshift / rmask (double)
};

// Block-compressed int8 filter. Row r covers output channels [r*n, r*n+n).
// Its kept input channels (ascending) are padded to an even count ("entries")
// with a copy of the last one whose weights are 0, so the kernels run pairs.
// Row r: entries idx[row_ptr[r] .. row_ptr[r+1]) and weights at
// w + row_ptr[r] * taps * n, laid out [tap][pair][n][2]: byte 2*o + e of a
// pair block is output o's weight for the pair's entry e (what vpmaddwd and
// NEON's smull + sadalp pair up).
struct PackedFilterInt8 {
  int n = 0, rows = 0, taps = 0, cin = 0, kh = 0, kw = 0;
  std::vector<int32_t> row_ptr;  // rows + 1, in entries (even per row)
  AlignedPtr<int32_t> idx;       // entries: kept input channels (+ pad)
  AlignedPtr<int8_t> w;          // packed weights
  int64_t kept_blocks = 0;       // kept (row, input channel) blocks, no pads
  // Per output channel (cout each).
  AlignedPtr<int32_t> bias, mult, lshift, rshift, rmask, total;
  int32_t zp_in = 0, zp_out = 0, act_min = -128, act_max = 127;
  bool single_rounding = false;  // Int8ConvParams::single_rounding
  AlignedPtr<int8_t> pad_row;  // cin bytes of zp_in: the taps outside the image
  int cout() const { return rows * n; }
  Int8Requant requant() const;
};

// Packs an OHWI int8 filter (cout, kh, kw, cin), its int32 bias (may be null)
// and the output stage. Fails (false, *error set) if n is not in {4, 8, 16,
// 32} or does not divide cout, a shift is outside [-31, 30], the activation
// range is not within [-128, 127], or the parameter vectors are not cout long.
// Any int8 weight is accepted, -128 included (no path pairs two products in
// int16).
bool PackFilterInt8(const int8_t* filter, const int32_t* bias, int cout, int kh, int kw, int cin,
                    int n, const Int8ConvParams& q, PackedFilterInt8* out, std::string* error);

// The dense OHWI filter back from a packed one (tests).
std::vector<int8_t> UnpackFilterInt8(const PackedFilterInt8& pf);

// Plan of combined (tap, channel) offsets per geometry, like PrepareConvPlan:
// per row [tap][entry], the entry's byte offset from the pixel's top-left
// tap. Lets tiles whose pixels touch no padding run all taps in one loop.
void PrepareConvPlanInt8(const ConvGeometry& g, const PackedFilterInt8& pf, ConvPlan* plan);

// One kernel call: rows [r0, r1) of one tile of P pixels. Row r runs
// (row_ptr[r+1] - row_ptr[r]) * kmul entries of `index` from row_ptr[r] *
// kmul, body_taps times (kmul = taps, body_taps = 1: a plan's combined
// offsets; kmul = 1, body_taps = taps: per-tap pointers), reading pixel p of
// body tap t at in[t * P + p] + entry. Outputs: pixel p, row r at
// out + p * out_stride + r * n.
struct Int8Tile {
  const int32_t* row_ptr;
  const int32_t* index;
  int kmul;
  const int8_t* w;
  int taps, body_taps;
  const int8_t* const* in;
  int8_t* out;
  int64_t out_stride;
  const Int8Requant* rq;
};
using Int8RowsFn = void (*)(const Int8Tile& t, int r0, int r1);
// Requantization alone (tests): out[i] = MultiplyByQuantizedMultiplier of
// acc[i] with the split shift, count a multiple of 8.
using Int8RequantFn = void (*)(const int32_t* acc, const int32_t* mult, const int32_t* lshift,
                               const int32_t* rshift, const int32_t* rmask, int count,
                               int32_t* out);
// The single-rounding one: MultiplyByQuantizedMultiplierSingleTotal of acc[i]
// with total[i] = 31 - shift.
using Int8RequantSingleFn = void (*)(const int32_t* acc, const int32_t* mult,
                                     const int32_t* total, int count, int32_t* out);
// TFLite's int8 ADD over a row, bit-exact with int8_add.h's Int8AddRow (out
// may be conv; otherwise no overlap).
using Int8AddRowFn = void (*)(const int8_t* conv, const int8_t* residual, int8_t* out,
                              int64_t count, const Int8AddParams& p);

struct Int8UKernel {
  int p = 0;  // pixels per tile
  Int8RowsFn rows = nullptr;
};

struct Int8KernelSet {
  const char* name = "none";
  Int8UKernel by_n[4];  // N = 4, 8, 16, 32
  Int8RequantFn requant = nullptr;     // the N >= 8 kernels' requantization
  Int8RequantFn requant_n4 = nullptr;  // the N = 4 kernel's, where it differs
  Int8RequantSingleFn requant_single = nullptr;     // the same, single rounding
  Int8RequantSingleFn requant_single_n4 = nullptr;
  Int8AddRowFn add_row = nullptr;  // the fused residual ADD's epilogue
  const Int8UKernel* ForN(int n) const;
};

// Paths compiled in and runnable on this CPU, else null (as the float ones).
const Int8KernelSet* ScalarKernelsInt8();
const Int8KernelSet* Avx2KernelsInt8();  // x86-64, AVX2 CPUs
const Int8KernelSet* NeonKernelsInt8();  // aarch64
// "auto" (the widest available), "scalar", "avx2", "neon"; null if unknown or
// unavailable. ("avx512" gives the AVX2 int8 path where the CPU has AVX-512.)
const Int8KernelSet* SelectKernelsInt8(const std::string& isa);

// Largest tile of any int8 path, and tiles per task.
constexpr int kInt8MaxTilePixels = 16;
constexpr int kInt8MaxTilesPerChunk = 16;

// Per-thread scratch: a task's indirection and its partial tile's outputs.
struct ConvScratchInt8 {
  AlignedPtr<const int8_t*> ptrs;
  AlignedPtr<int8_t> tail;
  size_t ptr_capacity = 0, tail_capacity = 0;
  void Reserve(int taps, int cout);  // allocates (not in the run path)
};

// Runs the int8 convolution: the geometry's act_min / act_max are unused (the
// packed filter holds the int8 activation range); g.cin / g.cout / kh / kw
// must match pf. scratch: one per pool thread (1 without a pool), each
// Reserve(pf.taps, pf.cout())-ed. plan: from PrepareConvPlanInt8 for this
// geometry, or null (1x1 filters need none). Allocates nothing.
// residual + add (both non-null): a fused residual ADD. Each output element
// is the convolution's int8 value (requantized, + zp_out, clamped to the
// packed filter's range) then Int8Add(value, residual[same index], *add):
// TFLite's CONV_2D then its int8 ADD, the ADD's inputs in either order.
// residual must not overlap output.
void RunSparseConvInt8(const ConvGeometry& g, const PackedFilterInt8& pf, const Int8KernelSet& ks,
                       const int8_t* input, int8_t* output, ConvScratchInt8* scratch,
                       ThreadPool* pool, const ConvPlan* plan = nullptr,
                       const int8_t* residual = nullptr, const Int8AddParams* add = nullptr);

// TFLite's reference_integer_ops::ConvPerChannel over the dense OHWI filter
// (naive loops; taps outside the image skipped; bias may be null), rounding
// as q.single_rounding says (false: as TFLite's CONV_2D).
void ReferenceConvInt8(const ConvGeometry& g, const int8_t* input, const int8_t* filter,
                       const int32_t* bias, const Int8ConvParams& q, int8_t* output);

// TFLite's reference_integer_ops::FullyConnectedPerChannel: m rows of cin
// inputs, filter [cout][cin], bias may be null, output [m][cout]. TFLite's
// FULLY_CONNECTED rounds once: set q.single_rounding to match it.
void ReferenceFullyConnectedInt8(const int8_t* input, int m, int cin, const int8_t* filter,
                                 const int32_t* bias, int cout, const Int8ConvParams& q,
                                 int8_t* output);

}  // namespace tsp

#endif  // TSP_INT8_CONV_H_
