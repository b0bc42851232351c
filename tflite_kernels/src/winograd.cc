#include "winograd.h"

#include <algorithm>
#include <cstring>

#include "thread_pool.h"

// The transforms are additions over channel vectors: compiled for the widest
// x86 vector ISA the CPU has (the results do not depend on it).
#if defined(__x86_64__) && defined(__GNUC__)
#define TSP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TSP_VECTOR_CLONES
#endif

namespace tsp {

bool WinogradApplies(const ConvGeometry& g, const PackedFilter& pf) {
  return pf.kh == 3 && pf.kw == 3 && g.kh == 3 && g.kw == 3 && g.stride_h == 1 &&
         g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1 && g.out_h > 0 && g.out_w > 0;
}

bool WinogradPays(const ConvGeometry& g, const PackedFilter& pf) {
  const double kept_per_row = double(pf.kept_blocks) / std::max(1, pf.rows);
  return kept_per_row >= kWinogradMinKept && WinogradTiles(g) >= kWinogradMinTiles;
}

WinogradFilter TransformFilter(const PackedFilter& pf) {
  WinogradFilter wf;
  if (pf.kh != 3 || pf.kw != 3) return wf;
  const int n = pf.n, taps = pf.taps;
  wf.u.resize(kWinogradPoints);
  for (PackedFilter& u : wf.u) {
    u.n = n;
    u.rows = pf.rows;
    u.taps = 1;
    u.cin = pf.cin;
    u.kh = u.kw = 1;
    u.row_ptr = pf.row_ptr;
    u.kept_blocks = pf.kept_blocks;
    u.idx = AlignedAlloc<int32_t>(size_t(pf.kept_blocks));
    if (pf.kept_blocks > 0) {
      std::memcpy(u.idx.get(), pf.idx.get(), sizeof(int32_t) * size_t(pf.kept_blocks));
    }
    u.w = AlignedAlloc<float>(size_t(pf.kept_blocks) * n);
    u.bias = AlignedAlloc<float>(size_t(pf.cout()));
    std::memset(u.bias.get(), 0, sizeof(float) * size_t(pf.cout()));
  }
  // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  for (int r = 0; r < pf.rows; ++r) {
    const int k0 = pf.row_ptr[r];
    const int k = pf.row_ptr[r + 1] - k0;
    const float* wr = pf.w.get() + size_t(k0) * taps * n;
    for (int j = 0; j < k; ++j) {
      for (int o = 0; o < n; ++o) {
        double g[3][3], t[4][3];
        for (int y = 0; y < 3; ++y) {
          for (int x = 0; x < 3; ++x) g[y][x] = wr[(size_t(y * 3 + x) * k + j) * n + o];
        }
        for (int i = 0; i < 4; ++i) {
          for (int x = 0; x < 3; ++x) {
            t[i][x] = G[i][0] * g[0][x] + G[i][1] * g[1][x] + G[i][2] * g[2][x];
          }
        }
        for (int i = 0; i < 4; ++i) {
          for (int c = 0; c < 4; ++c) {
            const double v = t[i][0] * G[c][0] + t[i][1] * G[c][1] + t[i][2] * G[c][2];
            wf.u[size_t(4 * i + c)].w[(size_t(k0) + j) * n + o] = float(v);
          }
        }
      }
    }
  }
  return wf;
}

int64_t WinogradTiles(const ConvGeometry& g) {
  return int64_t(g.batch) * ((g.out_h + 1) / 2) * ((g.out_w + 1) / 2);
}

namespace {

// The 16 coordinates' blocks of the scratch: one transform touches all 16 at
// the same offset, so blocks are a whole number of 4 KiB pages plus one
// 64-byte line apart (16 streams with equal 4 KiB offsets would share one
// 12-way L1 set and thrash it: ResNet-50's 56x56 layers ran 3.7x slower).
int64_t Padded(int64_t floats) { return (floats + 1023) / 1024 * 1024 + 16; }

struct WinogradJob {
  const ConvGeometry* g;
  const PackedFilter* pf;
  const WinogradFilter* wf;
  const KernelSet* ks;
  const float* input;
  float* output;
  const float* residual;
  const float* zeros;  // cin zeros (input padding)
  float* v;            // [16][tiles][cin], blocks v_stride apart
  float* m;            // [16][tiles][cout], blocks m_stride apart
  int64_t v_stride, m_stride;
  int th, tw;  // tiles per image: rows, columns
  int64_t rows;        // tile rows: batch * th
  int chunk_rows;      // tile rows per chunk (chunked mode), or 0
  int64_t chunk_floats;  // one thread's scratch in chunked mode
  int64_t chunks;
  const PackedFilter* next;  // prefetched by the last product
  ConvGeometry gemm;
  ConvScratch* conv_scratch;
};

// 16 floats as one value: GCC/Clang vector extensions, compiled to one
// AVX-512 register, two AVX2 or four SSE ones by each clone. Loads and stores
// are macros, not functions: a vector passed to or returned from a function
// compiled for another target would change the calling convention.
typedef float V16 __attribute__((vector_size(64)));
#define TSP_LOAD16(p)                         \
  ({                                          \
    V16 v_;                                   \
    __builtin_memcpy(&v_, (p), sizeof(V16));  \
    v_;                                       \
  })
#define TSP_STORE16(p, x)                      \
  do {                                         \
    const V16 x_ = (x);                        \
    __builtin_memcpy((p), &x_, sizeof(V16));   \
  } while (0)

// V = B^T d B for one tile, C channels: d[i][j] at in[4 * i + j] (the zero row
// outside the image); coordinate xi goes to v + xi * v_stride.
// Rows: B^T d = [d0 - d2, d1 + d2, d2 - d1, d1 - d3]; then the same on columns.
#define TSP_INPUT_TRANSFORM(T, LOAD, STORE)                              \
  do {                                                                   \
    T d[4][4];                                                           \
    for (int i = 0; i < 4; ++i) {                                        \
      for (int j = 0; j < 4; ++j) d[i][j] = LOAD(in[4 * i + j] + c);     \
    }                                                                    \
    T r[4][4];                                                           \
    for (int j = 0; j < 4; ++j) {                                        \
      r[0][j] = d[0][j] - d[2][j];                                       \
      r[1][j] = d[1][j] + d[2][j];                                       \
      r[2][j] = d[2][j] - d[1][j];                                       \
      r[3][j] = d[1][j] - d[3][j];                                       \
    }                                                                    \
    for (int i = 0; i < 4; ++i) {                                        \
      STORE(v + (4 * i + 0) * v_stride + c, r[i][0] - r[i][2]);         \
      STORE(v + (4 * i + 1) * v_stride + c, r[i][1] + r[i][2]);         \
      STORE(v + (4 * i + 2) * v_stride + c, r[i][2] - r[i][1]);         \
      STORE(v + (4 * i + 3) * v_stride + c, r[i][1] - r[i][3]);         \
    }                                                                    \
  } while (0)
#define TSP_LOAD1(p) (*(p))
#define TSP_STORE1(p, x) (*(p) = (x))

TSP_VECTOR_CLONES void InputTransformTile(const float* const* in, int cin, float* v,
                                          int64_t v_stride) {
  int c = 0;
  for (; c + 16 <= cin; c += 16) TSP_INPUT_TRANSFORM(V16, TSP_LOAD16, TSP_STORE16);
  for (; c < cin; ++c) TSP_INPUT_TRANSFORM(float, TSP_LOAD1, TSP_STORE1);
}

// Y = A^T M A + bias (+ residual), clamped, for one tile: the 2x2 outputs at
// out[2 * i + j] (null when outside the image), residuals at res[2 * i + j]
// (res itself null without a residual).
// Rows: A^T M = [m0 + m1 + m2, m1 - m2 - m3]; then the same on columns.
#define TSP_OUTPUT_TRANSFORM(T, LOAD, STORE, LO, HI)                                 \
  do {                                                                               \
    T s[2][4];                                                                       \
    for (int j = 0; j < 4; ++j) {                                                    \
      const T m0 = LOAD(m + (0 + j) * m_stride + o), m1 = LOAD(m + (4 + j) * m_stride + o), \
              m2 = LOAD(m + (8 + j) * m_stride + o),                                 \
              m3 = LOAD(m + (12 + j) * m_stride + o);                                \
      s[0][j] = m0 + m1 + m2;                                                        \
      s[1][j] = m1 - m2 - m3;                                                        \
    }                                                                                \
    const T b = LOAD(bias + o);                                                      \
    for (int i = 0; i < 2; ++i) {                                                    \
      const T y[2] = {s[i][0] + s[i][1] + s[i][2] + b, s[i][1] - s[i][2] - s[i][3] + b}; \
      for (int j = 0; j < 2; ++j) {                                                  \
        float* dst = out[2 * i + j];                                                 \
        if (dst == nullptr) continue;                                                \
        T value = y[j];                                                              \
        if (res != nullptr) value += LOAD(res[2 * i + j] + o);                       \
        value = value < (LO) ? (LO) : value;                                         \
        value = value > (HI) ? (HI) : value;                                         \
        STORE(dst + o, value);                                                       \
      }                                                                              \
    }                                                                                \
  } while (0)

TSP_VECTOR_CLONES void OutputTransformTile(const float* m, int64_t m_stride, int cout,
                                           const float* bias, float* const* out,
                                           const float* const* res, float lo, float hi) {
  const V16 vlo = V16{} + lo, vhi = V16{} + hi;
  int o = 0;
  for (; o + 16 <= cout; o += 16) TSP_OUTPUT_TRANSFORM(V16, TSP_LOAD16, TSP_STORE16, vlo, vhi);
  for (; o < cout; ++o) TSP_OUTPUT_TRANSFORM(float, TSP_LOAD1, TSP_STORE1, lo, hi);
}

// The tiles of tile row `row` (b * th + ty): their transformed inputs into
// v (coordinate blocks v_stride apart), tile t at t - first_tile.
void InputRow(const WinogradJob& job, int64_t row, float* v, int64_t v_stride,
              int64_t first_tile) {
  const ConvGeometry& g = *job.g;
  const int b = int(row / job.th);
  const int ty = int(row - int64_t(b) * job.th);
  const float* image = job.input + size_t(b) * g.in_h * g.in_w * g.cin;
  for (int tx = 0; tx < job.tw; ++tx) {
    const float* in[16];
    for (int i = 0; i < 4; ++i) {
      const int iy = 2 * ty - g.pad_top + i;
      for (int j = 0; j < 4; ++j) {
        const int ix = 2 * tx - g.pad_left + j;
        in[4 * i + j] = (iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w)
                            ? image + (size_t(iy) * g.in_w + ix) * g.cin
                            : job.zeros;
      }
    }
    const int64_t tile = row * job.tw + tx - first_tile;
    InputTransformTile(in, g.cin, v + tile * g.cin, v_stride);
  }
}

// The outputs of tile row `row` from the products in m (tile t at
// t - first_tile).
void OutputRow(const WinogradJob& job, int64_t row, const float* m, int64_t m_stride,
               int64_t first_tile) {
  const ConvGeometry& g = *job.g;
  const int b = int(row / job.th);
  const int ty = int(row - int64_t(b) * job.th);
  const size_t image = size_t(b) * g.out_h * g.out_w * g.cout;
  for (int tx = 0; tx < job.tw; ++tx) {
    float* out[4];
    const float* res[4];
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) {
        const int oy = 2 * ty + i, ox = 2 * tx + j;
        const bool inside = oy < g.out_h && ox < g.out_w;
        const size_t at = image + (size_t(oy) * g.out_w + ox) * g.cout;
        out[2 * i + j] = inside ? job.output + at : nullptr;
        res[2 * i + j] = (inside && job.residual) ? job.residual + at : job.pf->bias.get();
      }
    }
    const int64_t tile = row * job.tw + tx - first_tile;
    OutputTransformTile(m + tile * g.cout, m_stride, g.cout, job.pf->bias.get(), out,
                        job.residual ? res : nullptr, g.act_min, g.act_max);
  }
}

void InputTask(void* ctx, int64_t row, int /*thread*/) {
  const WinogradJob& job = *static_cast<const WinogradJob*>(ctx);
  InputRow(job, row, job.v, job.v_stride, 0);
}

// One coordinate's product: M[xi] = V[xi] x U[xi] (a 1x1 sparse convolution
// over the tiles).
void ProductTask(void* ctx, int64_t xi, int thread) {
  const WinogradJob& job = *static_cast<const WinogradJob*>(ctx);
  RunSparseConv(job.gemm, job.wf->u[size_t(xi)], *job.ks, job.v + xi * job.v_stride,
                job.m + xi * job.m_stride, job.zeros, &job.conv_scratch[thread], nullptr,
                nullptr, nullptr, xi == kWinogradPoints - 1 ? job.next : nullptr);
}

void OutputTask(void* ctx, int64_t row, int /*thread*/) {
  const WinogradJob& job = *static_cast<const WinogradJob*>(ctx);
  OutputRow(job, row, job.m, job.m_stride, 0);
}

// Chunked mode: tile rows [chunk * chunk_rows, ...) through all three steps
// on one thread, in that thread's part of the scratch (a few hundred KiB:
// stays in L2 between the steps).
void ChunkTask(void* ctx, int64_t chunk, int thread) {
  const WinogradJob& job = *static_cast<const WinogradJob*>(ctx);
  const int64_t r0 = chunk * job.chunk_rows;
  const int64_t r1 = std::min(job.rows, r0 + job.chunk_rows);
  const int64_t first = r0 * job.tw;
  const int64_t tiles = (r1 - r0) * job.tw;
  float* v = job.v + int64_t(thread) * job.chunk_floats;
  float* m = v + kWinogradPoints * job.v_stride;
  for (int64_t r = r0; r < r1; ++r) InputRow(job, r, v, job.v_stride, first);
  ConvGeometry gg = job.gemm;
  gg.in_w = gg.out_w = int(tiles);
  for (int xi = 0; xi < kWinogradPoints; ++xi) {
    const bool last = chunk == job.chunks - 1 && xi == kWinogradPoints - 1;
    RunSparseConv(gg, job.wf->u[size_t(xi)], *job.ks, v + xi * job.v_stride,
                  m + xi * job.m_stride, job.zeros, &job.conv_scratch[thread], nullptr,
                  nullptr, nullptr, last ? job.next : nullptr);
  }
  for (int64_t r = r0; r < r1; ++r) OutputRow(job, r, m, job.m_stride, first);
}

}  // namespace

int WinogradChunkRows(const ConvGeometry& g) {
  const int64_t tiles = WinogradTiles(g);
  const double whole = double(kWinogradPoints) * double(Padded(tiles * g.cin) +
                                                        Padded(tiles * g.cout)) * sizeof(float);
  if (whole <= kWinogradMaxScratchBytes) return 0;
  const int tw = (g.out_w + 1) / 2;
  const double per_tile = double(kWinogradPoints) * (g.cin + g.cout) * sizeof(float);
  return std::max(1, int(kWinogradChunkBytes / per_tile) / tw);
}

namespace {

// Tiles one scratch holds: the layer's, or one chunk's.
int64_t ScratchTiles(const ConvGeometry& g, int chunk_rows) {
  return chunk_rows == 0 ? WinogradTiles(g) : int64_t(chunk_rows) * ((g.out_w + 1) / 2);
}

}  // namespace

size_t WinogradScratchFloats(const ConvGeometry& g, int threads) {
  const int chunk_rows = WinogradChunkRows(g);
  const int64_t tiles = ScratchTiles(g, chunk_rows);
  const size_t per = size_t(kWinogradPoints) * size_t(Padded(tiles * g.cin) +
                                                       Padded(tiles * g.cout));
  return chunk_rows == 0 ? per : per * size_t(std::max(1, threads));
}

void RunWinogradConv(const ConvGeometry& g, const PackedFilter& pf, const WinogradFilter& wf,
                     const KernelSet& ks, const float* input, float* output,
                     const float* residual, const float* zeros, float* scratch,
                     ConvScratch* conv_scratch, ThreadPool* pool, const PackedFilter* next) {
  WinogradJob job;
  job.next = next;
  job.g = &g;
  job.pf = &pf;
  job.wf = &wf;
  job.ks = &ks;
  job.input = input;
  job.output = output;
  job.residual = residual;
  job.zeros = zeros;
  job.th = (g.out_h + 1) / 2;
  job.tw = (g.out_w + 1) / 2;
  job.rows = int64_t(g.batch) * job.th;
  job.chunk_rows = WinogradChunkRows(g);
  const int64_t tiles = ScratchTiles(g, job.chunk_rows);
  job.v_stride = Padded(tiles * g.cin);
  job.m_stride = Padded(tiles * g.cout);
  job.chunk_floats = kWinogradPoints * (job.v_stride + job.m_stride);
  job.v = scratch;
  job.m = scratch + kWinogradPoints * job.v_stride;
  job.conv_scratch = conv_scratch;
  ConvGeometry& gg = job.gemm;
  gg.batch = 1;
  gg.in_h = gg.out_h = 1;
  gg.in_w = gg.out_w = int(tiles);
  gg.cin = g.cin;
  gg.cout = g.cout;
  gg.min_parallel_macs = g.min_parallel_macs;
  // Products of small layers run on the calling thread (as RunSparseConv
  // decides for a direct convolution).
  const double kept_macs = double(pf.kept_blocks) * pf.taps * pf.n * double(g.pixels());
  if (kept_macs < g.min_parallel_macs) pool = nullptr;
  const bool parallel = pool != nullptr && pool->size() > 1;
  job.chunks = job.chunk_rows > 0 ? (job.rows + job.chunk_rows - 1) / job.chunk_rows : 0;
  if (job.chunk_rows > 0) {
    if (parallel) {
      pool->ParallelFor(job.chunks, &ChunkTask, &job);
    } else {
      for (int64_t c = 0; c < job.chunks; ++c) ChunkTask(&job, c, 0);
    }
  } else if (parallel) {
    pool->ParallelFor(job.rows, &InputTask, &job);
    pool->ParallelFor(kWinogradPoints, &ProductTask, &job);
    pool->ParallelFor(job.rows, &OutputTask, &job);
  } else {
    for (int64_t t = 0; t < job.rows; ++t) InputTask(&job, t, 0);
    for (int xi = 0; xi < kWinogradPoints; ++xi) ProductTask(&job, xi, 0);
    for (int64_t t = 0; t < job.rows; ++t) OutputTask(&job, t, 0);
  }
}

}  // namespace tsp
