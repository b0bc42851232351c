// 1xN block-sparse convolution: analysis, packing and the run-time driver.
//
// Independent of TFLite so the C++ tests exercise it directly. Layouts follow
// TFLite: input NHWC, filter OHWI (Cout, kh, kw, Cin), output NHWC. A
// FULLY_CONNECTED layer is the 1x1 convolution over M "pixels".
#ifndef TSP_SPARSE_CONV_H_
#define TSP_SPARSE_CONV_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace tsp {

// Allocation aligned to 64 bytes (a cache line, one AVX-512 register).
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using AlignedPtr = std::unique_ptr<T[], AlignedFree>;

template <typename T>
AlignedPtr<T> AlignedAlloc(size_t count) {
  size_t bytes = ((count * sizeof(T) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return AlignedPtr<T>(static_cast<T*>(p));
}

// Supported block widths N (output channels per block row).
constexpr int kBlockSizes[] = {4, 8, 16, 32};

// Block sparsity of an OHWI filter for block width n: the fraction of
// (group of n output channels) x (input channel) blocks whose n*kh*kw weights
// are all exactly zero. Returns -1 if cout is not a multiple of n.
double BlockSparsity(const float* filter, int cout, int taps, int cin, int n);

struct BlockChoice {
  int n = 0;              // chosen N, 0 if none
  double sparsity = 0.0;  // block sparsity at that N
  std::string reason;     // why none was chosen (when n == 0)
};

// Chooses N: the largest N in {32,16,8,4} dividing cout whose block sparsity
// is within `tolerance` of the finest one (N=4), i.e. whose zero blocks cover
// (almost) all the 1x4 zero blocks. It is taken if its block sparsity is at
// least min_by_n[i] (i indexes kBlockSizes), otherwise nothing is.
BlockChoice ChooseBlockSize(const float* filter, int cout, int taps, int cin,
                            const double min_by_n[4], double tolerance = 0.02);
// Same threshold for every N.
BlockChoice ChooseBlockSize(const float* filter, int cout, int taps, int cin,
                            double min_sparsity, double tolerance = 0.02);

// The claiming threshold for each N when the kernel fills only a fraction of
// its vector lanes for narrow N (lane_fraction[i] of the register for
// kBlockSizes[i]): the kept fraction must shrink by that factor,
//   threshold = 1 - (1 - min_sparsity) * lane_fraction.
void WidthAwareThresholds(double min_sparsity, const double lane_fraction[4], double out[4]);

// Claim-time cost model (1x16 filters): the sparse kernel's estimated time
// over XNNPACK's dense time for one 8-pixel tile and 16 output channels,
//   (10 + c * kbar + 20 / rows) / (1.11 * cin * taps)   [ns / ns]
// with kbar the mean kept entries per row (kept channels x taps), c = 2.0 ns
// per entry below 16 entries and 1.4 ns from 16 on (the two-set loop), and
// rows = cout / 16 (the per-tile set-up shared by the rows). Fitted on AMD Zen 5
// with AVX-512 (bench: `rows` kernel on L1 data; XNNPACK at ~230 GFLOP/s); it
// separates the short-row layers the delegate runs slower than XNNPACK
// (MobileNetV2's 1x1 16->96 and 32->16 at 0.5: measured 1.9x and 2.3x its
// time) from those it runs faster. Returns 0 when n != 16 (not modelled).
double EstimatedCostRatio(int64_t kept_blocks, int rows, int n, int taps, int cin);
// Layers whose estimate exceeds this are declined (margin for the model's error).
constexpr double kMaxCostRatio = 1.4;

// Block-compressed filter. Row r covers output channels [r*n, r*n+n).
// For row r: kept input channels idx[row_ptr[r] .. row_ptr[r+1]) (ascending)
// and weights w[row_ptr[r]*taps*n ...] laid out [tap][k][n].
struct PackedFilter {
  int n = 0, rows = 0, taps = 0, cin = 0, kh = 0, kw = 0;
  std::vector<int32_t> row_ptr;  // rows + 1
  AlignedPtr<int32_t> idx;       // kept input channel indices
  AlignedPtr<float> w;           // packed weights
  AlignedPtr<float> bias;        // rows * n (zeros if the layer has none)
  int64_t kept_blocks = 0;
  int cout() const { return rows * n; }
};

// Packs an OHWI filter (cout, kh, kw, cin) and optional bias (may be null).
PackedFilter PackFilter(const float* filter, const float* bias, int cout, int kh,
                        int kw, int cin, int n);

// Expands a packed filter back to a dense OHWI array (for tests).
std::vector<float> UnpackFilter(const PackedFilter& pf);

struct ConvGeometry {
  int batch = 1, in_h = 1, in_w = 1, cin = 1;
  int out_h = 1, out_w = 1, cout = 1;
  int kh = 1, kw = 1, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  int pad_top = 0, pad_left = 0;
  float act_min = -3.4e38f, act_max = 3.4e38f;
  // Below this many kept multiply-adds (~0.5M: a few microseconds) the layer
  // runs on the calling thread even with a pool.
  double min_parallel_macs = 524288.0;
  int64_t pixels() const { return int64_t(batch) * out_h * out_w; }
};

// Output size and padding of TFLite's SAME / VALID rule for one dimension.
void ComputeSamePadding(int in, int k, int stride, int dil, int* out, int* pad_before);
void ComputeValidPadding(int in, int k, int stride, int dil, int* out, int* pad_before);

// Micro-kernel: computes P output pixels x n channels of one block row.
//   k: kept input channels; idx: their indices; w: [taps][k][n] weights;
//   in: taps*P pointers (tap-major) to input pixels (each Cin floats, or a
//   zero row for padding); bias: n floats; out: first pixel's outputs, next
//   pixel at out + out_stride; res: null, or a residual with out's layout
//   added before the clamp (a fused ADD); results clamped to [lo, hi].
using UKernelFn = void (*)(int k, const int32_t* idx, const float* w, int taps,
                           const float* const* in, const float* bias, float* out,
                           int64_t out_stride, float lo, float hi, const float* res);

// Rows [r0, r1) of one tile of P pixels in one call (see ukernel_impl.h).
using URowsFn = void (*)(int r0, int r1, const int32_t* row_ptr, const int32_t* index, int kmul,
                         const float* w, int taps, int body_taps, const float* const* in,
                         const float* bias, float* out, int64_t out_stride, float lo, float hi,
                         const float* res);

// Rows [r0, r1) of one strided tile: pixel p at base + p * pixel_stride floats,
// every entry of `index` an offset in floats from the pixel (kmul entries per
// kept channel), so no indirection buffer is built.
using UStridedFn = void (*)(int r0, int r1, const int32_t* row_ptr, const int32_t* index,
                            int kmul, const float* w, int taps, const float* base,
                            int64_t pixel_stride, const float* bias, float* out,
                            int64_t out_stride, float lo, float hi, const float* res);

struct UKernel {
  int p = 0;             // pixels per call of `run`
  UKernelFn run = nullptr;
  URowsFn rows = nullptr;  // `run` over a block of rows
  UKernelFn run1 = nullptr;  // one pixel (tails), same signature with P = 1
  int ps = 0;                    // pixels per call of `strided` (8 or 16)
  UStridedFn strided = nullptr;  // null where the registers do not allow it
};

// A family of micro-kernels for one instruction set.
struct KernelSet {
  const char* name = "none";
  UKernel by_n[4];  // index: 0 -> N=4, 1 -> N=8, 2 -> N=16, 3 -> N=32
  // Fraction of the widest vector register the kernel for each N fills (the
  // 1x4 AVX-512 kernel uses 4 of 16 lanes): its throughput relative to N>=16.
  double lane_fraction[4] = {1.0, 1.0, 1.0, 1.0};
  const UKernel* ForN(int n) const;
};

// Instruction-set paths compiled into this binary: nullptr if not built, or
// if the running CPU lacks the instructions (an x86 path's KernelSet is built
// by code compiled for that path, so it is never touched on such a CPU).
const KernelSet* ScalarKernels();
const KernelSet* Avx2Kernels();    // x86-64 only
const KernelSet* Avx512Kernels();  // x86-64 only
const KernelSet* NeonKernels();    // aarch64 only

// Whether the running CPU can execute a path.
bool CpuSupports(const KernelSet* ks);
// Best path for this CPU, or the one named by `isa` ("auto", "scalar",
// "avx2", "avx512", "neon"). Returns nullptr if `isa` is unknown or the CPU
// lacks it.
const KernelSet* SelectKernels(const std::string& isa);

class ThreadPool;

// Most output tiles one task handles; scratch holds their indirection.
constexpr int kConvMaxTilesPerChunk = 16;
// Pointers a ConvScratch must hold for a filter with `taps` taps.
// (a chunk's tiles, then the tail's pixels: fewer than one tile).
inline size_t ConvScratchSize(int taps) {
  return size_t(taps) * 16 * (kConvMaxTilesPerChunk + 1);
}

// Per-thread scratch: the indirection buffers of one task's tiles.
struct ConvScratch {
  AlignedPtr<const float*> ptrs;
  size_t capacity = 0;
  void Reserve(size_t n);
};

// Per-geometry data computed once (at prepare) for a packed filter: for every
// kept (tap, channel) pair of every row, its offset in floats from the pixel's
// top-left tap, so tiles that touch no padding run every tap in one long loop.
struct ConvPlan {
  AlignedPtr<int32_t> tap_channel_offset;  // kept_blocks * taps, per row [tap][k]
  bool valid = false;
};

// Builds the plan (allocates). Leaves plan->valid false if offsets overflow.
void PrepareConvPlan(const ConvGeometry& g, const PackedFilter& pf, ConvPlan* plan);

// Whether `pixels` input rows `stride_bytes` apart can sit in L1 together:
// at most 8 of them map to one cache set (64 B lines, 4 KiB per way).
bool StridedTileFitsL1(int64_t stride_bytes, int pixels);

// Runs the sparse convolution. `scratch` holds at least one entry per pool
// thread (1 without a pool), each reserved for ConvScratchSize(taps), and
// `zeros` holds geom.cin zero floats. `plan` (may be null: every tile then
// goes through the per-tap indirection) must come from PrepareConvPlan for
// this geometry. `residual` (may be null) has the output's shape and is added
// before the activation clamp: a residual ADD fused into the convolution.
// `next` (may be null): the filter of the convolution that runs next, whose
// packed weights the tasks prefetch. No allocation happens here.
void RunSparseConv(const ConvGeometry& g, const PackedFilter& pf, const KernelSet& ks,
                   const float* input, float* output, const float* zeros,
                   ConvScratch* scratch, ThreadPool* pool, const ConvPlan* plan = nullptr,
                   const float* residual = nullptr, const PackedFilter* next = nullptr);

// Dense reference (naive loops, double accumulation) over the OHWI filter,
// plus `residual` (may be null) before the clamp.
void ReferenceConv(const ConvGeometry& g, const float* input, const float* filter,
                   const float* bias, float* output, const float* residual = nullptr);

// out[i] = clamp(a[i] + b[i], lo, hi): the ADD the delegate runs when it
// cannot fuse it into the producing convolution.
void AddClamp(const float* a, const float* b, float* out, int64_t count, float lo, float hi);

}  // namespace tsp

#endif  // TSP_SPARSE_CONV_H_
