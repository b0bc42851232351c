#include "sparse_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "thread_pool.h"

namespace tsp {

namespace {

// Zero flags of the 1x4 blocks: z[g * cin + c] for output group g of 4.
std::vector<uint8_t> ZeroBlocks4(const float* filter, int cout, int taps, int cin) {
  const int groups = cout / 4;
  std::vector<uint8_t> z(size_t(groups) * cin, 1);
  for (int o = 0; o < groups * 4; ++o) {
    const float* fo = filter + size_t(o) * taps * cin;
    uint8_t* zg = z.data() + size_t(o / 4) * cin;
    for (int t = 0; t < taps; ++t) {
      const float* ft = fo + size_t(t) * cin;
      for (int c = 0; c < cin; ++c) {
        if (ft[c] != 0.0f) zg[c] = 0;
      }
    }
  }
  return z;
}

// Block sparsity at every supported N (index as kBlockSizes), -1 if N does not
// divide cout.
void AllSparsities(const float* filter, int cout, int taps, int cin, double out[4]) {
  for (int i = 0; i < 4; ++i) out[i] = -1.0;
  if (cout % 4 != 0 || cin <= 0) return;
  std::vector<uint8_t> z = ZeroBlocks4(filter, cout, taps, cin);
  int groups = cout / 4;
  for (int i = 0; i < 4; ++i) {
    if (i > 0) {
      if (groups % 2 != 0) break;
      groups /= 2;
      std::vector<uint8_t> z2(size_t(groups) * cin);
      for (int g = 0; g < groups; ++g) {
        for (int c = 0; c < cin; ++c) {
          z2[size_t(g) * cin + c] = z[size_t(2 * g) * cin + c] & z[size_t(2 * g + 1) * cin + c];
        }
      }
      z.swap(z2);
    }
    int64_t zeros = 0;
    for (uint8_t v : z) zeros += v;
    out[i] = double(zeros) / double(z.size());
  }
}

}  // namespace

double BlockSparsity(const float* filter, int cout, int taps, int cin, int n) {
  double s[4];
  AllSparsities(filter, cout, taps, cin, s);
  for (int i = 0; i < 4; ++i) {
    if (kBlockSizes[i] == n) return s[i];
  }
  return -1.0;
}

BlockChoice ChooseBlockSize(const float* filter, int cout, int taps, int cin,
                            const double min_by_n[4], double tolerance) {
  BlockChoice choice;
  if (cout % 4 != 0) {
    choice.reason = "output channels (" + std::to_string(cout) + ") not a multiple of 4";
    return choice;
  }
  double s[4];
  AllSparsities(filter, cout, taps, cin, s);
  const double finest = s[0];
  int best = 0;
  for (int i = 3; i >= 0; --i) {
    if (s[i] >= 0 && s[i] >= finest - tolerance) {
      best = i;
      break;
    }
  }
  choice.sparsity = s[best];
  if (s[best] >= min_by_n[best]) {
    choice.n = kBlockSizes[best];
    return choice;
  }
  char buf[200];
  std::snprintf(buf, sizeof(buf), "1x%d block sparsity %.3f below the threshold %.3f (min_sparsity)",
                kBlockSizes[best], s[best], min_by_n[best]);
  choice.reason = buf;
  return choice;
}

BlockChoice ChooseBlockSize(const float* filter, int cout, int taps, int cin,
                            double min_sparsity, double tolerance) {
  const double t[4] = {min_sparsity, min_sparsity, min_sparsity, min_sparsity};
  return ChooseBlockSize(filter, cout, taps, cin, t, tolerance);
}

double EstimatedCostRatio(int64_t kept_blocks, int rows, int n, int taps, int cin) {
  if (n != 16 || rows <= 0 || taps <= 0 || cin <= 0) return 0.0;
  const double kbar = double(kept_blocks) / rows * taps;
  const double per_entry = kbar < 16.0 ? 2.0 : 1.4;
  const double ours = 10.0 + per_entry * kbar + 20.0 / rows;
  const double dense = 1.11 * double(cin) * taps;
  return ours / dense;
}

void WidthAwareThresholds(double min_sparsity, const double lane_fraction[4], double out[4]) {
  for (int i = 0; i < 4; ++i) out[i] = 1.0 - (1.0 - min_sparsity) * lane_fraction[i];
}

PackedFilter PackFilter(const float* filter, const float* bias, int cout, int kh, int kw,
                        int cin, int n) {
  PackedFilter pf;
  pf.n = n;
  pf.rows = cout / n;
  pf.kh = kh;
  pf.kw = kw;
  pf.taps = kh * kw;
  pf.cin = cin;
  const int taps = pf.taps;
  pf.row_ptr.assign(pf.rows + 1, 0);
  std::vector<int32_t> kept;
  kept.reserve(size_t(pf.rows) * cin);
  for (int r = 0; r < pf.rows; ++r) {
    for (int c = 0; c < cin; ++c) {
      bool nonzero = false;
      for (int j = 0; j < n && !nonzero; ++j) {
        const float* fo = filter + size_t(r * n + j) * taps * cin;
        for (int t = 0; t < taps; ++t) {
          if (fo[size_t(t) * cin + c] != 0.0f) {
            nonzero = true;
            break;
          }
        }
      }
      if (nonzero) kept.push_back(c);
    }
    pf.row_ptr[r + 1] = int32_t(kept.size());
  }
  pf.kept_blocks = int64_t(kept.size());
  pf.idx = AlignedAlloc<int32_t>(kept.size());
  if (!kept.empty()) std::memcpy(pf.idx.get(), kept.data(), kept.size() * sizeof(int32_t));
  pf.w = AlignedAlloc<float>(kept.size() * size_t(taps) * n);
  for (int r = 0; r < pf.rows; ++r) {
    const int k0 = pf.row_ptr[r];
    const int k = pf.row_ptr[r + 1] - k0;
    float* wr = pf.w.get() + size_t(k0) * taps * n;
    for (int t = 0; t < taps; ++t) {
      for (int j = 0; j < k; ++j) {
        const int c = kept[k0 + j];
        float* dst = wr + (size_t(t) * k + j) * n;
        for (int o = 0; o < n; ++o) {
          dst[o] = filter[(size_t(r * n + o) * taps + t) * cin + c];
        }
      }
    }
  }
  pf.bias = AlignedAlloc<float>(size_t(cout));
  for (int o = 0; o < cout; ++o) pf.bias[o] = bias ? bias[o] : 0.0f;
  return pf;
}

std::vector<float> UnpackFilter(const PackedFilter& pf) {
  const int taps = pf.taps, n = pf.n, cin = pf.cin;
  std::vector<float> f(size_t(pf.cout()) * taps * cin, 0.0f);
  for (int r = 0; r < pf.rows; ++r) {
    const int k0 = pf.row_ptr[r];
    const int k = pf.row_ptr[r + 1] - k0;
    const float* wr = pf.w.get() + size_t(k0) * taps * n;
    for (int t = 0; t < taps; ++t) {
      for (int j = 0; j < k; ++j) {
        const int c = pf.idx[k0 + j];
        for (int o = 0; o < n; ++o) {
          f[(size_t(r * n + o) * taps + t) * cin + c] = wr[(size_t(t) * k + j) * n + o];
        }
      }
    }
  }
  return f;
}

void ComputeSamePadding(int in, int k, int stride, int dil, int* out, int* pad_before) {
  const int eff = (k - 1) * dil + 1;
  *out = (in + stride - 1) / stride;
  const int total = std::max((*out - 1) * stride + eff - in, 0);
  *pad_before = total / 2;
}

void ComputeValidPadding(int in, int k, int stride, int dil, int* out, int* pad_before) {
  const int eff = (k - 1) * dil + 1;
  *out = in >= eff ? (in - eff + stride) / stride : 0;
  *pad_before = 0;
}

void ConvScratch::Reserve(size_t n) {
  if (n <= capacity) return;
  ptrs = AlignedAlloc<const float*>(n);
  capacity = n;
}

namespace {

constexpr int kMaxTilesPerChunk = kConvMaxTilesPerChunk;

struct ConvJob {
  const ConvGeometry* g;
  const PackedFilter* pf;
  // Per kept entry, its offset in floats from the pixel: the plan's combined
  // (tap, channel) offsets, the channel indices for 1x1 filters; null
  // without a plan (every tile then takes the indirection).
  const int32_t* offsets;
  int64_t pixel_stride;  // floats between the pixels of a strided tile
  const char* next_w;    // the next layer's packed weights (prefetched), or null
  int64_t next_bytes;
  const UKernel* uk;
  const float* input;
  float* output;
  const float* residual;  // fused ADD's other input (output's layout), or null
  const float* zeros;
  ConvScratch* scratch;
  int tile_px;           // pixels per tile: uk->ps or uk->p
  bool contiguous;       // 1x1, stride 1: every tile strided (pixel m at input + m * cin)
  int64_t tiles;         // full tiles of tile_px pixels
  int64_t tiles_per_chunk;
  int64_t chunks;        // pixel chunks (the tail is the last chunk's extra)
  int rows_per_group;
  int row_groups;
  int rows_per_block;  // rows whose weights are reused across a chunk's tiles
};

// Fills ptrs[t * P + p] for pixels m0 .. m0 + count - 1 (count <= P; the
// stride between taps is P).
inline void BuildIndirection(const ConvGeometry& g, const float* input, const float* zeros,
                             int64_t m0, int count, int P, const float** ptrs) {
  const int64_t plane = int64_t(g.out_h) * g.out_w;
  int64_t b = m0 / plane;
  int64_t rem = m0 - b * plane;
  int oy = int(rem / g.out_w);
  int ox = int(rem - int64_t(oy) * g.out_w);
  for (int p = 0; p < count; ++p) {
    const float* base = input + size_t(b) * g.in_h * g.in_w * g.cin;
    const int iy0 = oy * g.stride_h - g.pad_top;
    const int ix0 = ox * g.stride_w - g.pad_left;
    int t = 0;
    for (int ky = 0; ky < g.kh; ++ky) {
      const int iy = iy0 + ky * g.dil_h;
      const bool row_ok = iy >= 0 && iy < g.in_h;
      for (int kx = 0; kx < g.kw; ++kx, ++t) {
        const int ix = ix0 + kx * g.dil_w;
        ptrs[t * P + p] = (row_ok && ix >= 0 && ix < g.in_w)
                              ? base + (size_t(iy) * g.in_w + ix) * g.cin
                              : zeros;
      }
    }
    if (++ox == g.out_w) {
      ox = 0;
      if (++oy == g.out_h) {
        oy = 0;
        ++b;
      }
    }
  }
}

// Input of the first pixel of `count` output pixels from m0 if they lie in one
// output row and touch no padding (every tap of pixel p then sits at
// base + p * stride_w * cin + the plan's offset), else null.
const float* InteriorBase(const ConvGeometry& g, const float* input, int64_t m0, int count) {
  const int64_t plane = int64_t(g.out_h) * g.out_w;
  const int64_t b = m0 / plane;
  const int64_t rem = m0 - b * plane;
  const int oy = int(rem / g.out_w);
  const int ox0 = int(rem - int64_t(oy) * g.out_w);
  const int iy0 = oy * g.stride_h - g.pad_top;
  const int ix0 = ox0 * g.stride_w - g.pad_left;
  if (ox0 + count <= g.out_w && iy0 >= 0 && iy0 + (g.kh - 1) * g.dil_h < g.in_h && ix0 >= 0 &&
      ix0 + (count - 1) * g.stride_w + (g.kw - 1) * g.dil_w < g.in_w) {
    return input + ((size_t(b) * g.in_h + iy0) * g.in_w + ix0) * size_t(g.cin);
  }
  return nullptr;
}

// Tiles [t0, t1) of tile_px pixels, rows [r0, r1). A tile runs the strided
// kernel when its pixels are evenly spaced in the input (always for 1x1
// stride-1 layers; one output row without padding otherwise); else it is cut
// into sub-tiles of P pixels run through pointers: interior sub-tiles keep
// only their P pixel pointers and run every tap through the plan's offsets,
// the others get a full indirection buffer with the zero row for padding.
void RunTiles(const ConvJob& job, int64_t t0, int64_t t1, int r0, int r1, bool with_tail,
              const float** ptrs) {
  const ConvGeometry& g = *job.g;
  const PackedFilter& pf = *job.pf;
  const UKernel& uk = *job.uk;
  const int P = uk.p;
  const int TP = job.tile_px;
  const int sub = TP / P;
  const int taps = pf.taps;
  const int64_t cout = g.cout;
  // Per tile: its strided base (or null); per sub-tile: interior or not.
  const float* strided[kMaxTilesPerChunk];
  bool interior[kMaxTilesPerChunk * 16];  // tile_px / P <= 16
  for (int64_t tile = t0; tile < t1; ++tile) {
    const int64_t i = tile - t0;
    const int64_t m0 = tile * TP;
    strided[i] = nullptr;
    if (job.contiguous) {
      strided[i] = job.input + m0 * g.cin;
      continue;
    }
    if (job.offsets != nullptr && TP > P) {
      strided[i] = InteriorBase(g, job.input, m0, TP);
      if (strided[i] != nullptr) continue;
    }
    for (int si = 0; si < sub; ++si) {
      const int64_t j = i * sub + si;
      const int64_t ms = m0 + si * P;
      const float** tp = ptrs + j * taps * P;
      const float* base =
          (job.offsets != nullptr && taps > 1) ? InteriorBase(g, job.input, ms, P) : nullptr;
      interior[j] = base != nullptr;
      if (interior[j]) {
        for (int p = 0; p < P; ++p) tp[p] = base + size_t(p) * g.stride_w * g.cin;
      } else {
        BuildIndirection(g, job.input, job.zeros, ms, P, P, tp);
      }
    }
  }
  // The pixels after the last full tile (last chunk only): sub-tiles of P
  // through the indirection, then single pixels, run in every row block like
  // the tiles, while the block's weights are in cache (a pass of their own
  // re-read all the weights: 7x7 layers have a 1-pixel tail).
  const float** tail_ptrs = ptrs + (t1 - t0) * sub * taps * P;
  const int64_t tail0 = job.tiles * TP;
  const int64_t end = with_tail ? g.pixels() : tail0;
  const int tail_tiles = int((end - tail0) / P);
  const int64_t singles0 = tail0 + int64_t(tail_tiles) * P;
  for (int i = 0; i < tail_tiles; ++i) {
    BuildIndirection(g, job.input, job.zeros, tail0 + int64_t(i) * P, P, P,
                     tail_ptrs + i * taps * P);
  }
  const float** single_ptrs = tail_ptrs + tail_tiles * taps * P;
  for (int64_t m = singles0; m < end; ++m) {
    BuildIndirection(g, job.input, job.zeros, m, 1, 1, single_ptrs + (m - singles0) * taps);
  }
  // Rows in blocks whose packed weights stay cache-resident while every tile
  // of the chunk uses them.
  for (int rb0 = r0; rb0 < r1; rb0 += job.rows_per_block) {
    const int rb1 = std::min(r1, rb0 + job.rows_per_block);
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t i = tile - t0;
      float* out = job.output + tile * TP * cout;
      const float* res = job.residual ? job.residual + tile * TP * cout : nullptr;
      if (strided[i] != nullptr) {
        uk.strided(rb0, rb1, pf.row_ptr.data(), job.offsets, taps, pf.w.get(), taps, strided[i],
                   job.pixel_stride, pf.bias.get(), out, cout, g.act_min, g.act_max, res);
        continue;
      }
      for (int si = 0; si < sub; ++si) {
        const int64_t j = i * sub + si;
        const float* const* tp = ptrs + j * taps * P;
        float* o = out + int64_t(si) * P * cout;
        const float* rs = res ? res + int64_t(si) * P * cout : nullptr;
        if (interior[j]) {  // every tap through the plan's combined offsets
          uk.rows(rb0, rb1, pf.row_ptr.data(), job.offsets, taps, pf.w.get(), taps, 1, tp,
                  pf.bias.get(), o, cout, g.act_min, g.act_max, rs);
        } else {
          uk.rows(rb0, rb1, pf.row_ptr.data(), pf.idx.get(), 1, pf.w.get(), taps, taps, tp,
                  pf.bias.get(), o, cout, g.act_min, g.act_max, rs);
        }
      }
    }
    for (int i = 0; i < tail_tiles; ++i) {
      const int64_t m = tail0 + int64_t(i) * P;
      uk.rows(rb0, rb1, pf.row_ptr.data(), pf.idx.get(), 1, pf.w.get(), taps, taps,
              tail_ptrs + i * taps * P, pf.bias.get(), job.output + m * cout, cout, g.act_min,
              g.act_max, job.residual ? job.residual + m * cout : nullptr);
    }
    for (int64_t m = singles0; m < end; ++m) {
      float* out = job.output + m * cout;
      const float* res = job.residual ? job.residual + m * cout : nullptr;
      const float* const* sp = single_ptrs + (m - singles0) * taps;
      for (int r = rb0; r < rb1; ++r) {
        const int k0 = pf.row_ptr[r];
        uk.run1(pf.row_ptr[r + 1] - k0, pf.idx.get() + k0, pf.w.get() + size_t(k0) * taps * pf.n,
                taps, sp, pf.bias.get() + size_t(r) * pf.n, out + size_t(r) * pf.n, cout,
                g.act_min, g.act_max, res ? res + size_t(r) * pf.n : nullptr);
      }
    }
  }
}

void RunTask(void* ctx, int64_t task, int thread) {
  const ConvJob& job = *static_cast<const ConvJob*>(ctx);
  const int64_t chunk = task / job.row_groups;
  const int rg = int(task - chunk * job.row_groups);
  const int r0 = rg * job.rows_per_group;
  const int r1 = std::min(job.pf->rows, r0 + job.rows_per_group);
  const int64_t t0 = chunk * job.tiles_per_chunk;
  const int64_t t1 = std::min(job.tiles, t0 + job.tiles_per_chunk);
  RunTiles(job, t0, t1, r0, r1, chunk == job.chunks - 1, job.scratch[thread].ptrs.get());
  // This task's share of the next layer's weights, fetched while the other
  // tasks compute: they would otherwise arrive cold from L3 or DRAM (the 7x7
  // layers' 0.4-1.8 MB). Hint 3 (all levels) measured >= hint 2 (L2).
  if (job.next_w != nullptr) {
    const int64_t tasks = job.chunks * job.row_groups;
    const int64_t b0 = job.next_bytes * task / tasks / 64 * 64;
    const int64_t b1 = job.next_bytes * (task + 1) / tasks / 64 * 64;
    for (int64_t b = b0; b < b1; b += 64) __builtin_prefetch(job.next_w + b, 0, 3);
  }
}

}  // namespace

bool StridedTileFitsL1(int64_t stride_bytes, int pixels) {
  // 64-byte lines, 64 sets (4 KiB per way: Zen 2-5, Intel since Sandy Bridge;
  // 12 ways on Zen 5, 8 on older cores): at most 8 pixels per set.
  int count[64] = {0};
  for (int p = 0; p < pixels; ++p) {
    if (++count[(int64_t(p) * stride_bytes / 64) % 64] > 8) return false;
  }
  return true;
}

void RunSparseConv(const ConvGeometry& g, const PackedFilter& pf, const KernelSet& ks,
                   const float* input, float* output, const float* zeros,
                   ConvScratch* scratch, ThreadPool* pool, const ConvPlan* plan,
                   const float* residual, const PackedFilter* next) {
  ConvJob job;
  job.next_w = next ? reinterpret_cast<const char*>(next->w.get()) : nullptr;
  job.next_bytes = next ? next->kept_blocks * next->taps * next->n * int64_t(sizeof(float)) : 0;
  job.residual = residual;
  job.g = &g;
  job.pf = &pf;
  job.uk = ks.ForN(pf.n);
  const bool planned = plan != nullptr && plan->valid;
  job.offsets = pf.taps == 1 ? pf.idx.get() : (planned ? plan->tap_channel_offset.get() : nullptr);
  job.input = input;
  job.output = output;
  job.zeros = zeros;
  job.scratch = scratch;
  const int64_t pixels = g.pixels();
  job.contiguous = pf.taps == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 &&
                   g.pad_left == 0 && g.in_h == g.out_h && g.in_w == g.out_w;
  job.pixel_stride = job.contiguous ? g.cin : int64_t(g.stride_w) * g.cin;
  // Strided tiles of uk->ps pixels, unless the kernel has none or the pixel
  // stride is a multiple of 4 KiB (C_in 1024, 2048 at stride 1): the 16
  // pixels' lines of one channel then share an L1 set and thrash it
  // (1x1 1024->256 at 14x14: 30% slower than 8-pixel pointer tiles).
  const bool use_strided = job.uk->strided != nullptr && job.offsets != nullptr &&
                           StridedTileFitsL1(job.pixel_stride * int64_t(sizeof(float)), job.uk->ps);
  if (!use_strided) job.contiguous = false;
  job.tile_px = use_strided ? job.uk->ps : job.uk->p;
  job.tiles = pixels / job.tile_px;
  // Small layers run on the calling thread: waking the workers costs more.
  const double kept_macs = double(pf.kept_blocks) * pf.taps * pf.n * double(pixels);
  if (kept_macs < g.min_parallel_macs) pool = nullptr;
  const int threads = pool ? pool->size() : 1;
  // Chunks of up to 4 tiles; with several threads and few chunks, rows are
  // split too so every thread gets work.
  // Weight blocks of about 64 KiB (L1/L2 resident) are reused by every tile of
  // a chunk; layers with large weights get larger chunks so the weights are
  // streamed from L3 fewer times.
  const double weight_bytes = double(pf.kept_blocks) * pf.taps * pf.n * sizeof(float);
  const double row_bytes = weight_bytes / std::max(1, pf.rows);
  job.rows_per_block = std::max(1, int(std::min<double>(pf.rows, 65536.0 / std::max(1.0, row_bytes))));
  job.tiles_per_chunk = weight_bytes > 262144.0 ? kMaxTilesPerChunk : 4;
  job.chunks = std::max<int64_t>(1, (job.tiles + job.tiles_per_chunk - 1) / job.tiles_per_chunk);
  job.row_groups = 1;
  if (threads > 1 && job.chunks < 4 * threads) {
    job.row_groups = int(std::min<int64_t>(pf.rows, (4 * threads + job.chunks - 1) / job.chunks));
  }
  job.rows_per_group = (pf.rows + job.row_groups - 1) / job.row_groups;
  job.row_groups = (pf.rows + job.rows_per_group - 1) / job.rows_per_group;
  const int64_t tasks = job.chunks * job.row_groups;
  if (pool != nullptr && threads > 1) {
    pool->ParallelFor(tasks, &RunTask, &job);
  } else {
    for (int64_t t = 0; t < tasks; ++t) RunTask(&job, t, 0);
  }
}

void PrepareConvPlan(const ConvGeometry& g, const PackedFilter& pf, ConvPlan* plan) {
  plan->valid = false;
  const int taps = pf.taps;
  const int64_t max_off =
      (int64_t((pf.kh - 1) * g.dil_h) * g.in_w + int64_t(pf.kw - 1) * g.dil_w + 1) * g.cin;
  if (max_off >= int64_t(1) << 31) return;
  plan->tap_channel_offset = AlignedAlloc<int32_t>(size_t(pf.kept_blocks) * taps);
  int32_t* off = plan->tap_channel_offset.get();
  for (int r = 0; r < pf.rows; ++r) {
    const int k0 = pf.row_ptr[r];
    const int k = pf.row_ptr[r + 1] - k0;
    for (int t = 0; t < taps; ++t) {
      const int ky = t / pf.kw, kx = t % pf.kw;
      const int32_t tap_off = int32_t((int64_t(ky) * g.dil_h * g.in_w + int64_t(kx) * g.dil_w) * g.cin);
      for (int j = 0; j < k; ++j) {
        off[size_t(k0) * taps + size_t(t) * k + j] = tap_off + pf.idx[k0 + j];
      }
    }
  }
  plan->valid = true;
}

void AddClamp(const float* a, const float* b, float* out, int64_t count, float lo, float hi) {
  for (int64_t i = 0; i < count; ++i) out[i] = std::min(std::max(a[i] + b[i], lo), hi);
}

void ReferenceConv(const ConvGeometry& g, const float* input, const float* filter,
                   const float* bias, float* output, const float* residual) {
  for (int b = 0; b < g.batch; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        for (int o = 0; o < g.cout; ++o) {
          double acc = bias ? bias[o] : 0.0;
          for (int ky = 0; ky < g.kh; ++ky) {
            const int iy = oy * g.stride_h - g.pad_top + ky * g.dil_h;
            if (iy < 0 || iy >= g.in_h) continue;
            for (int kx = 0; kx < g.kw; ++kx) {
              const int ix = ox * g.stride_w - g.pad_left + kx * g.dil_w;
              if (ix < 0 || ix >= g.in_w) continue;
              const float* x = input + ((size_t(b) * g.in_h + iy) * g.in_w + ix) * g.cin;
              const float* f = filter + ((size_t(o) * g.kh + ky) * g.kw + kx) * g.cin;
              for (int c = 0; c < g.cin; ++c) acc += double(x[c]) * double(f[c]);
            }
          }
          const size_t at = ((size_t(b) * g.out_h + oy) * g.out_w + ox) * g.cout + o;
          if (residual != nullptr) acc += double(residual[at]);
          float v = float(acc);
          v = std::min(std::max(v, g.act_min), g.act_max);
          output[at] = v;
        }
      }
    }
  }
}

}  // namespace tsp
