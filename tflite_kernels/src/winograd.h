// Winograd F(2x2, 3x3) for 1xN block-sparse 3x3 stride-1 convolutions.
//
// A 1xN block of a 3x3 filter covers N output channels x all 9 taps of one
// input channel, so a zero block stays a zero block after the filter
// transform U = G g G^T: the convolution becomes 16 independent 1x1 sparse
// convolutions (one per coordinate of the 4x4 transformed tile) over the same
// kept channels, run by the same micro-kernels. Each 2x2 output tile costs 16
// multiply-adds per kept (input, output) pair instead of 36: 2.25x fewer, for
// an input transform V = B^T d B of every 4x4 input tile and an output
// transform Y = A^T M A (additions only). Formulas: A. Lavin and S. Gray,
// "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, F(2x2, 3x3).
#ifndef TSP_WINOGRAD_H_
#define TSP_WINOGRAD_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparse_conv.h"

namespace tsp {

class ThreadPool;

constexpr int kWinogradPoints = 16;  // 4x4 transformed tile

// The transformed filter: one 1x1 packed filter per coordinate, sharing the
// original's rows and kept channels (weights U[xi] of each kept block), with
// zero bias (the bias is added in the output transform).
struct WinogradFilter {
  std::vector<PackedFilter> u;  // kWinogradPoints
  bool valid() const { return u.size() == size_t(kWinogradPoints); }
};

// Whether a convolution can run as F(2x2, 3x3): a 3x3 filter, stride 1,
// dilation 1 (any padding: SAME or VALID).
bool WinogradApplies(const ConvGeometry& g, const PackedFilter& pf);

// Whether F(2x2, 3x3) is expected to beat the direct kernel (ResNet-50 1x16 in
// the model, 1 thread, Zen 5): it saves 20 of 36 multiply-adds per kept pair
// and tile, but adds two transforms per tile and channel, reads 16/9 of the
// weights and writes and reads 16 * tiles * (cin + cout) floats of scratch.
// So it needs rows long enough to pay for the transforms and enough tiles to
// share the weights. Measured, direct time / Winograd time: 3x3 256 at 14x14
// 1.46x (0.5, 128 kept per row), 1.24x (0.8, 51), 1.17x (0.9, 26); 128 at
// 28x28 1.55x (0.5, 64), 1.20x (0.8, 26), 0.98x (0.9, 13); 512 at 7x7 (16
// tiles) 0.72-0.81x; 64 at 56x56 (0.5, 32 kept) 1.04x in three steps over
// 6.4 MB of scratch, ~1.4x in chunks (WinogradChunkRows; end to end 3% at
// 0.5), 0.54x at 0.8 (13 kept).
constexpr double kWinogradMinKept = 20.0;
constexpr int64_t kWinogradMinTiles = 32;
constexpr double kWinogradMaxScratchBytes = 4.0 * 1024 * 1024;
constexpr double kWinogradChunkBytes = 512.0 * 1024;
bool WinogradPays(const ConvGeometry& g, const PackedFilter& pf);

// U = G g G^T of every kept block, computed in double (allocates).
WinogradFilter TransformFilter(const PackedFilter& pf);

// 2x2 output tiles of the layer: batch * ceil(out_h / 2) * ceil(out_w / 2).
int64_t WinogradTiles(const ConvGeometry& g);
// Tile rows per chunk, or 0. A layer whose transformed input and products
// (16 * tiles * (cin + cout) floats) fit in kWinogradMaxScratchBytes runs in
// three steps over all its tiles (each a pool job); a larger one runs in
// chunks of tile rows of about kWinogradChunkBytes, each chunk through all
// three steps on one thread, so its scratch stays in L2.
int WinogradChunkRows(const ConvGeometry& g);
// Floats of the scratch RunWinogradConv needs with `threads` pool threads.
size_t WinogradScratchFloats(const ConvGeometry& g, int threads);

// Runs the convolution: input transform, 16 sparse 1x1 products, output
// transform with bias, `residual` (may be null, the output's layout) and the
// activation clamp. `zeros` holds cin zero floats (padding), `scratch`
// WinogradScratchFloats(g, pool threads) floats (64-byte aligned), `conv_scratch` one
// ConvScratch per pool thread (reserved for 1 tap). `next` (may be null): the
// filter of the convolution that runs next, whose weights the last product
// prefetches (as RunSparseConv's `next`). Allocates nothing.
void RunWinogradConv(const ConvGeometry& g, const PackedFilter& pf, const WinogradFilter& wf,
                     const KernelSet& ks, const float* input, float* output,
                     const float* residual, const float* zeros, float* scratch,
                     ConvScratch* conv_scratch, ThreadPool* pool,
                     const PackedFilter* next = nullptr);

}  // namespace tsp

#endif  // TSP_WINOGRAD_H_
