// The int8 driver: output pixels in tiles of the kernel's P, tasks of up to
// 16 tiles x a group of rows, rows in blocks of ~64 KiB of weights reused by
// every tile of a task; the pixels after the last full tile form one partial
// tile whose missing pixels read the pad row and whose outputs go through the
// scratch. A tile whose pixels' windows all lie inside the image runs every
// tap in one loop through the plan's offsets; the others use per-tap pointers,
// the taps outside the image pointing at the filter's row of zp_in bytes.
#include <algorithm>
#include <cstring>

#include "int8_conv.h"
#include "thread_pool.h"

namespace tsp {

void ConvScratchInt8::Reserve(int taps, int cout) {
  const size_t np = size_t(taps) * kInt8MaxTilePixels * (kInt8MaxTilesPerChunk + 1);
  if (np > ptr_capacity) {
    ptrs = AlignedAlloc<const int8_t*>(np);
    ptr_capacity = np;
  }
  const size_t nt = size_t(kInt8MaxTilePixels) * size_t(cout);
  if (nt > tail_capacity) {
    tail = AlignedAlloc<int8_t>(nt);
    tail_capacity = nt;
  }
}

namespace {

struct Int8Job {
  const ConvGeometry* g;
  const PackedFilterInt8* pf;
  const Int8UKernel* uk;
  Int8Requant rq;
  const int8_t* input;
  int8_t* output;
  ConvScratchInt8* scratch;
  const int32_t* offsets;  // combined (tap, channel) offsets, or null: pointers only
  int P;
  int64_t tiles;  // full tiles
  int tail;       // pixels after them
  int64_t tiles_per_chunk, chunks;
  int rows_per_group, row_groups, rows_per_block;
  const int8_t* residual;     // fused ADD: its other input (output's layout), or null
  const Int8AddParams* add;   // and its parameters
  Int8AddRowFn add_row;       // the path's ADD
};

// The fused ADD over rows [lo, lo + bytes) of `count` pixels the kernel has
// just written from pixel m0: conv value (in place) + residual, TFLite's int8
// ADD (int8_add.h), while the tile is in cache.
void ApplyAdd(const Int8Job& job, int64_t m0, int count, size_t lo, size_t bytes) {
  const int64_t cout = job.pf->cout();
  for (int p = 0; p < count; ++p) {
    const int64_t at = (m0 + p) * cout + int64_t(lo);
    job.add_row(job.output + at, job.residual + at, job.output + at, int64_t(bytes), *job.add);
  }
}

// Pointers of the tile of `count` (<= P) pixels from m0. If every pixel's
// window lies inside the image (count == P, a plan given): the P pixels'
// top-left taps, returns true. Otherwise [tap][P] pointers, the pad row for
// taps outside the image and for the pixels past count; returns false.
bool BuildTile(const Int8Job& job, int64_t m0, int count, const int8_t** ptrs) {
  const ConvGeometry& g = *job.g;
  const int P = job.P;
  const int64_t plane = int64_t(g.out_h) * g.out_w;
  int64_t b = m0 / plane;
  const int64_t rem = m0 - b * plane;
  int oy = int(rem / g.out_w);
  int ox = int(rem - int64_t(oy) * g.out_w);
  const int8_t* base[kInt8MaxTilePixels];
  int iy0[kInt8MaxTilePixels], ix0[kInt8MaxTilePixels];
  bool interior = job.offsets != nullptr && count == P;
  for (int p = 0; p < count; ++p) {
    base[p] = job.input + size_t(b) * g.in_h * g.in_w * g.cin;
    iy0[p] = oy * g.stride_h - g.pad_top;
    ix0[p] = ox * g.stride_w - g.pad_left;
    interior = interior && iy0[p] >= 0 && iy0[p] + (g.kh - 1) * g.dil_h < g.in_h && ix0[p] >= 0 &&
               ix0[p] + (g.kw - 1) * g.dil_w < g.in_w;
    if (++ox == g.out_w) {
      ox = 0;
      if (++oy == g.out_h) {
        oy = 0;
        ++b;
      }
    }
  }
  if (interior) {
    for (int p = 0; p < P; ++p) ptrs[p] = base[p] + (size_t(iy0[p]) * g.in_w + ix0[p]) * g.cin;
    return true;
  }
  const int8_t* pad = job.pf->pad_row.get();
  for (int p = 0; p < P; ++p) {
    int t = 0;
    for (int ky = 0; ky < g.kh; ++ky) {
      for (int kx = 0; kx < g.kw; ++kx, ++t) {
        const int8_t* ptr = pad;
        if (p < count) {
          const int iy = iy0[p] + ky * g.dil_h;
          const int ix = ix0[p] + kx * g.dil_w;
          if (iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w) {
            ptr = base[p] + (size_t(iy) * g.in_w + ix) * g.cin;
          }
        }
        ptrs[t * P + p] = ptr;
      }
    }
  }
  return false;
}

void RunTiles(const Int8Job& job, int64_t t0, int64_t t1, int r0, int r1, bool with_tail,
              ConvScratchInt8& scratch) {
  const PackedFilterInt8& pf = *job.pf;
  const int P = job.P;
  const int taps = pf.taps;
  const int64_t cout = pf.cout();
  const int ntiles = int(t1 - t0);
  const bool tail = with_tail && job.tail > 0;
  const int8_t** ptrs = scratch.ptrs.get();
  bool interior[kInt8MaxTilesPerChunk + 1];
  for (int i = 0; i < ntiles; ++i) {
    interior[i] = BuildTile(job, (t0 + i) * P, P, ptrs + size_t(i) * taps * P);
  }
  if (tail) interior[ntiles] = BuildTile(job, job.tiles * P, job.tail, ptrs + size_t(ntiles) * taps * P);
  Int8Tile tile;
  tile.row_ptr = pf.row_ptr.data();
  tile.w = pf.w.get();
  tile.taps = taps;
  tile.out_stride = cout;
  tile.rq = &job.rq;
  auto set_tile = [&](int i) {
    tile.in = ptrs + size_t(i) * taps * P;
    tile.index = interior[i] ? job.offsets : pf.idx.get();
    tile.kmul = interior[i] ? taps : 1;
    tile.body_taps = interior[i] ? 1 : taps;
  };
  for (int rb0 = r0; rb0 < r1; rb0 += job.rows_per_block) {
    const int rb1 = std::min(r1, rb0 + job.rows_per_block);
    for (int i = 0; i < ntiles; ++i) {
      set_tile(i);
      tile.out = job.output + (t0 + i) * P * cout;
      job.uk->rows(tile, rb0, rb1);
      if (job.residual != nullptr) {
        ApplyAdd(job, (t0 + i) * P, P, size_t(rb0) * pf.n, size_t(rb1 - rb0) * pf.n);
      }
    }
    if (tail) {
      set_tile(ntiles);
      tile.out = scratch.tail.get();
      job.uk->rows(tile, rb0, rb1);
      const size_t lo = size_t(rb0) * pf.n, bytes = size_t(rb1 - rb0) * pf.n;
      int8_t* out = job.output + job.tiles * P * cout;
      for (int p = 0; p < job.tail; ++p) {
        std::memcpy(out + p * cout + lo, scratch.tail.get() + p * cout + lo, bytes);
      }
      if (job.residual != nullptr) ApplyAdd(job, job.tiles * P, job.tail, lo, bytes);
    }
  }
}

void RunTask(void* ctx, int64_t task, int thread) {
  const Int8Job& job = *static_cast<const Int8Job*>(ctx);
  const int64_t chunk = task / job.row_groups;
  const int rg = int(task - chunk * job.row_groups);
  const int r0 = rg * job.rows_per_group;
  const int r1 = std::min(job.pf->rows, r0 + job.rows_per_group);
  const int64_t t0 = chunk * job.tiles_per_chunk;
  const int64_t t1 = std::min(job.tiles, t0 + job.tiles_per_chunk);
  RunTiles(job, t0, t1, r0, r1, chunk == job.chunks - 1, job.scratch[thread]);
}

}  // namespace

void RunSparseConvInt8(const ConvGeometry& g, const PackedFilterInt8& pf, const Int8KernelSet& ks,
                       const int8_t* input, int8_t* output, ConvScratchInt8* scratch,
                       ThreadPool* pool, const ConvPlan* plan, const int8_t* residual,
                       const Int8AddParams* add) {
  Int8Job job;
  job.residual = add != nullptr ? residual : nullptr;
  job.add = add;
  job.add_row = ks.add_row != nullptr ? ks.add_row : &Int8AddRow;
  job.g = &g;
  job.pf = &pf;
  job.uk = ks.ForN(pf.n);
  job.rq = pf.requant();
  job.input = input;
  job.output = output;
  job.scratch = scratch;
  const bool planned = plan != nullptr && plan->valid;
  job.offsets = pf.taps == 1 ? pf.idx.get() : (planned ? plan->tap_channel_offset.get() : nullptr);
  job.P = job.uk->p;
  const int64_t pixels = g.pixels();
  if (pixels <= 0) return;
  job.tiles = pixels / job.P;
  job.tail = int(pixels - job.tiles * job.P);
  const int64_t entries = pf.row_ptr.back();
  const double kept_macs = double(entries) * pf.taps * pf.n * double(pixels);
  if (kept_macs < g.min_parallel_macs) pool = nullptr;
  const int threads = pool ? pool->size() : 1;
  // As the float driver: weights in blocks of ~64 KiB reused by a chunk's
  // tiles; chunks of 16 tiles when the weights exceed 256 KiB, else 4; rows
  // split too when there are too few chunks for the threads.
  const double weight_bytes = double(entries) * pf.taps * pf.n;
  const double row_bytes = weight_bytes / std::max(1, pf.rows);
  job.rows_per_block =
      std::max(1, int(std::min<double>(pf.rows, 65536.0 / std::max(1.0, row_bytes))));
  job.tiles_per_chunk = weight_bytes > 262144.0 ? kInt8MaxTilesPerChunk : 4;
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

}  // namespace tsp
