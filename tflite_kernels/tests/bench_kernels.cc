// Micro-benchmark (not a test): effective GFLOP/s on kept MACs of the sparse
// conv for ResNet-50-like layer shapes. Usage: bench_kernels [isa] [sparsity] [threads] [n]
// `bench_kernels ukernel [isa] [n]`: the bare micro-kernel on L1-resident data,
// GFLOP/s and ns per call by kept channels per row (the inner loop's ceiling),
// for the pointer kernel and, where the path has one, the strided kernel.
// `bench_kernels layouts` (AVX-512): a design study for a planar (channel-major)
// layout: the same 1x16 rows on L1 data, NHWC vs vectorised over pixels
// (BenchLayouts), then whole ResNet-50 layers both ways (BenchPlanarLayers).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>
#include <algorithm>

#include "sparse_conv.h"
#include "thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// k distinct input channels of cin, ascending (one block row's kept channels).
static std::vector<int32_t> KeptChannels(int cin, int k, std::mt19937& rng) {
  std::vector<int32_t> all(cin);
  for (int i = 0; i < cin; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int32_t> idx(all.begin(), all.begin() + k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

static int BenchMicroKernel(const std::string& isa, int n) {
  const tsp::KernelSet* ks = tsp::SelectKernels(isa);
  if (!ks) { std::printf("isa %s unavailable\n", isa.c_str()); return 1; }
  const tsp::UKernel* uk = ks->ForN(n);
  const int cin = 512, P = uk->p;
  std::mt19937 rng(0);
  std::printf("isa %s 1x%d micro-kernel, %d pixels per call\n", ks->name, n, P);
  for (int k : {8, 16, 32, 64, 128, 256}) {
    const std::vector<int32_t> idx = KeptChannels(cin, k, rng);
    auto w = tsp::AlignedAlloc<float>(size_t(k) * n);
    for (int i = 0; i < k * n; ++i) w[i] = 1e-3f * float(i % 97);
    auto bias = tsp::AlignedAlloc<float>(size_t(n));
    for (int i = 0; i < n; ++i) bias[i] = 0.0f;
    const int PS = std::max(P, uk->ps);
    std::vector<float> in(size_t(PS) * cin, 1.0f), out(size_t(PS) * n * 4);
    std::vector<const float*> ptrs(P);
    for (int p = 0; p < P; ++p) ptrs[p] = in.data() + size_t(p) * cin;
    const long calls = 20000000L / k;
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (long i = 0; i < calls; ++i) {
        uk->run(k, idx.data(), w.get(), 1, ptrs.data(), bias.get(), out.data(), n * 4,
                -3.4e38f, 3.4e38f, nullptr);
      }
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("k=%4d kept channels: %6.1f GFLOP/s, %6.1f ns/call", k,
                calls * 2.0 * P * n * k / best * 1e-9, best / calls * 1e9);
    if (uk->strided != nullptr) {
      const int32_t row_ptr[2] = {0, k};
      double sbest = 1e30;
      const long scalls = calls * P / uk->ps;
      for (int rep = 0; rep < 5; ++rep) {
        auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < scalls; ++i) {
          uk->strided(0, 1, row_ptr, idx.data(), 1, w.get(), 1, in.data(), cin, bias.get(),
                      out.data(), n * 4, -3.4e38f, 3.4e38f, nullptr);
        }
        sbest = std::min(sbest, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("   strided %d pixels: %6.1f GFLOP/s", uk->ps,
                  scalls * 2.0 * uk->ps * n * k / sbest * 1e-9);
    }
    std::printf("\n");
  }
  return 0;
}

#if defined(__x86_64__)
// One 1x16 block row over planar data: channel c's pixels are contiguous (a
// plane), entry j of the row reads x + off[j] (its channel's plane plus its
// tap's shift) and the row's output channel o is written to out + o * out_plane.
// Vectorised over pixels: per entry, PV aligned loads of x and O broadcast
// weights feed O * PV FMAs (8 x 2: 16 FMAs per 10 loads; the NHWC kernel needs a
// broadcast load per FMA). Two passes of 8 output channels cover the row's 16.
template <int O, int PV>
__attribute__((target("avx512f"), noinline)) static void PlanarRow(
    int k, const int32_t* off, const float* w, const float* x, float* out, int64_t out_plane) {
  for (int h = 0; h < 16 / O; ++h) {
    __m512 acc[O][PV];
    _Pragma("GCC unroll 16") for (int o = 0; o < O; ++o) {
      _Pragma("GCC unroll 16") for (int v = 0; v < PV; ++v) acc[o][v] = _mm512_setzero_ps();
    }
    const float* wp = w + h * O;
    for (int j = 0; j < k; ++j) {
      const float* xc = x + off[j];
      __m512 xv[PV];
      _Pragma("GCC unroll 16") for (int v = 0; v < PV; ++v) xv[v] = _mm512_loadu_ps(xc + 16 * v);
      _Pragma("GCC unroll 16") for (int o = 0; o < O; ++o) {
        const __m512 wb = _mm512_set1_ps(wp[o]);
        _Pragma("GCC unroll 16") for (int v = 0; v < PV; ++v) {
          acc[o][v] = _mm512_fmadd_ps(wb, xv[v], acc[o][v]);
        }
      }
      wp += 16;
    }
    _Pragma("GCC unroll 16") for (int o = 0; o < O; ++o) {
      _Pragma("GCC unroll 16") for (int v = 0; v < PV; ++v) {
        _mm512_storeu_ps(out + (h * O + o) * out_plane + 16 * v, acc[o][v]);
      }
    }
  }
}

// Whole layers (1 thread, warm caches, ResNet-50 shapes): the delegate's
// RunSparseConv on NHWC data against the planar row kernel over zero-bordered
// planes (pitch W + k - 1), computing every position of the interior rows in
// tiles of 32 (the border columns' outputs are computed and not used; a real
// implementation must zero them), rows in blocks of ~64 KB of weights like the
// delegate. GFLOP/s on the kept MACs of the real pixels; values checked.
static int BenchPlanarLayers(const tsp::KernelSet& ks) {
  struct L {
    const char* name;
    int h, cin, cout, k;
    double sp;
  };
  const L layers[] = {
      {"1x1 64->256 56", 56, 64, 256, 1, 0.9},    {"3x3 64 56", 56, 64, 64, 3, 0.9},
      {"3x3 128 28", 28, 128, 128, 3, 0.9},       {"3x3 256 14", 14, 256, 256, 3, 0.5},
      {"3x3 256 14", 14, 256, 256, 3, 0.9},       {"1x1 1024->256 14", 14, 1024, 256, 1, 0.5},
      {"1x1 1024->256 14", 14, 1024, 256, 1, 0.9}, {"3x3 512 7", 7, 512, 512, 3, 0.5},
      {"3x3 512 7", 7, 512, 512, 3, 0.9},          {"1x1 2048->512 7", 7, 2048, 512, 1, 0.5},
      {"1x1 2048->512 7", 7, 2048, 512, 1, 0.9},
  };
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<double> ud;
  std::printf("\nwhole layers, 1 thread, warm caches: GFLOP/s on kept MACs\n");
  for (const L& l : layers) {
    const int taps = l.k * l.k, pad = (l.k - 1) / 2;
    std::vector<float> f(size_t(l.cout) * taps * l.cin);
    for (auto& v : f) v = nd(rng);
    for (int r = 0; r < l.cout / 16; ++r)
      for (int c = 0; c < l.cin; ++c)
        if (ud(rng) < l.sp)
          for (int j = 0; j < 16; ++j)
            for (int t = 0; t < taps; ++t) f[(size_t(r * 16 + j) * taps + t) * l.cin + c] = 0;
    tsp::PackedFilter pf = tsp::PackFilter(f.data(), nullptr, l.cout, l.k, l.k, l.cin, 16);
    tsp::ConvGeometry g;
    g.in_h = g.in_w = l.h;
    g.cin = l.cin;
    g.cout = l.cout;
    g.kh = g.kw = l.k;
    tsp::ComputeSamePadding(l.h, l.k, 1, 1, &g.out_h, &g.pad_top);
    tsp::ComputeSamePadding(l.h, l.k, 1, 1, &g.out_w, &g.pad_left);
    const int64_t hw = int64_t(l.h) * l.h;
    std::vector<float> xn(size_t(hw) * l.cin), on(size_t(hw) * l.cout), zeros(l.cin, 0.0f);
    for (auto& v : xn) v = nd(rng);
    std::vector<tsp::ConvScratch> scratch(1);
    scratch[0].Reserve(tsp::ConvScratchSize(taps));
    tsp::ConvPlan plan;
    tsp::PrepareConvPlan(g, pf, &plan);
    // Planar: zero-bordered planes, pitch wp; positions [q0, q1) are the interior rows.
    const int wp = l.h + 2 * pad;
    const int64_t q0 = int64_t(pad) * wp, q1 = int64_t(pad + l.h) * wp;
    const int64_t tiles = (q1 - q0 + 31) / 32;
    const int64_t plane = ((int64_t(wp) * (l.h + 2 * pad) + 32 + 15) / 16) * 16;
    auto xp = tsp::AlignedAlloc<float>(size_t(plane) * l.cin);
    auto op = tsp::AlignedAlloc<float>(size_t(plane) * l.cout);
    std::fill(xp.get(), xp.get() + plane * l.cin, 0.0f);
    for (int64_t m = 0; m < hw; ++m)
      for (int c = 0; c < l.cin; ++c)
        xp[size_t(c) * plane + (m / l.h + pad) * wp + m % l.h + pad] = xn[size_t(m) * l.cin + c];
    std::vector<int32_t> off(size_t(pf.kept_blocks) * taps);
    for (int r = 0; r < pf.rows; ++r) {
      const int k0 = pf.row_ptr[r], kr = pf.row_ptr[r + 1] - k0;
      for (int t = 0; t < taps; ++t)
        for (int j = 0; j < kr; ++j)
          off[size_t(k0) * taps + size_t(t) * kr + j] =
              int32_t(pf.idx[k0 + j] * plane + (t / l.k - pad) * wp + (t % l.k - pad));
    }
    const double row_bytes = double(pf.kept_blocks) * taps * 16 * 4 / pf.rows;
    const int rows_per_block = std::max(1, int(std::min<double>(pf.rows, 65536.0 / row_bytes)));
    auto planar = [&] {
      for (int rb = 0; rb < pf.rows; rb += rows_per_block) {
        const int re = std::min(pf.rows, rb + rows_per_block);
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t q = q0 + 32 * t;
          for (int r = rb; r < re; ++r) {
            const int k0 = pf.row_ptr[r];
            PlanarRow<8, 2>((pf.row_ptr[r + 1] - k0) * taps, off.data() + size_t(k0) * taps,
                            pf.w.get() + size_t(k0) * taps * 16, xp.get() + q,
                            op.get() + size_t(r) * 16 * plane + q, plane);
          }
        }
      }
    };
    auto nhwc = [&] {
      tsp::RunSparseConv(g, pf, ks, xn.data(), on.data(), zeros.data(), scratch.data(), nullptr,
                         &plan);
    };
    nhwc();
    planar();
    double err = 0.0, scale = 0.0;
    for (int64_t m = 0; m < hw; ++m)
      for (int o = 0; o < l.cout; ++o) {
        const float a = on[size_t(m) * l.cout + o];
        const float b = op[size_t(o) * plane + (m / l.h + pad) * wp + m % l.h + pad];
        err = std::max(err, double(std::abs(a - b)));
        scale = std::max(scale, double(std::abs(a)));
      }
    if (err > 1e-4 * std::max(1.0, scale)) {
      std::printf("%s: planar layer differs from NHWC by %g\n", l.name, err);
      return 1;
    }
    auto median = [](auto&& fn) {
      std::vector<double> ts;
      for (int i = 0; i < 31; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        fn();
        ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ts.begin(), ts.end());
      return ts[ts.size() / 2];
    };
    const double tn = median(nhwc), tpl = median(planar);
    const double flops = 2.0 * pf.kept_blocks * 16 * taps * hw;
    std::printf("%-18s s=%.1f  NHWC %7.3f ms %6.1f GFLOP/s   planar %7.3f ms %6.1f GFLOP/s  x%.2f\n",
                l.name, l.sp, tn * 1e3, flops / tn * 1e-9, tpl * 1e3, flops / tpl * 1e-9, tn / tpl);
  }
  return 0;
}

// The NHWC strided kernel (the delegate's, 16 pixels) and the planar row
// (8 x 2, 32 pixels) on the same rows: GFLOP/s on kept MACs, L1-resident
// data. The planar values are checked against a double-precision sum first.
static int BenchLayouts() {
  const tsp::KernelSet* ks = tsp::SelectKernels("avx512");
  if (ks == nullptr || ks->ForN(16)->strided == nullptr) {
    std::printf("layouts: needs the AVX-512 path\n");
    return 1;
  }
  const tsp::UKernel* uk = ks->ForN(16);
  constexpr int PV = 2, PX = 16 * PV;
  const int cin = 512;
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::printf("1x16 rows on L1 data, GFLOP/s on kept MACs: NHWC strided (delegate, %d px) vs "
              "planar 8x%d (%d px)\n", uk->ps, PV, PX);
  for (int k : {8, 16, 32, 64, 128, 256}) {
    const std::vector<int32_t> idx = KeptChannels(cin, k, rng);
    auto w = tsp::AlignedAlloc<float>(size_t(k) * 16);
    for (int i = 0; i < k * 16; ++i) w[i] = u(rng);
    auto bias = tsp::AlignedAlloc<float>(16);
    for (int i = 0; i < 16; ++i) bias[i] = 0.0f;
    auto xn = tsp::AlignedAlloc<float>(size_t(uk->ps) * cin);  // NHWC: pixel-major
    auto xp = tsp::AlignedAlloc<float>(size_t(cin) * PX);      // planar: channel-major
    for (int i = 0; i < uk->ps * cin; ++i) xn[i] = u(rng);
    for (int i = 0; i < cin * PX; ++i) xp[i] = u(rng);
    auto on = tsp::AlignedAlloc<float>(size_t(uk->ps) * 16);
    auto op = tsp::AlignedAlloc<float>(size_t(16) * PX);
    std::vector<int32_t> offp(k);
    for (int j = 0; j < k; ++j) offp[j] = idx[j] * PX;
    PlanarRow<8, PV>(k, offp.data(), w.get(), xp.get(), op.get(), PX);
    double err = 0.0;
    for (int o = 0; o < 16; ++o) {
      for (int p = 0; p < PX; ++p) {
        double r = 0.0;
        for (int j = 0; j < k; ++j) r += double(w[j * 16 + o]) * xp[size_t(idx[j]) * PX + p];
        err = std::max(err, std::abs(r - op[size_t(o) * PX + p]));
      }
    }
    if (err > 1e-3) {
      std::printf("planar row wrong: max abs error %g\n", err);
      return 1;
    }
    const int32_t row_ptr[2] = {0, k};
    const long reps = 40000000L / (long(k) * 16);
    auto best_of = [&](auto&& fn, long calls) {
      double best = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
        auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < calls; ++i) {
          fn();
          asm volatile("" ::: "memory");  // every call's stores are observable
        }
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    const long nc = reps / uk->ps * 16, pc = reps / PX * 16;
    const double tn = best_of([&] {
      uk->strided(0, 1, row_ptr, idx.data(), 1, w.get(), 1, xn.get(), cin, bias.get(), on.get(), 16,
                  -3.4e38f, 3.4e38f, nullptr);
    }, nc);
    const double tp =
        best_of([&] { PlanarRow<8, PV>(k, offp.data(), w.get(), xp.get(), op.get(), PX); }, pc);
    std::printf("k=%4d kept channels:  NHWC %6.1f GFLOP/s   planar %6.1f GFLOP/s\n", k,
                nc * 2.0 * uk->ps * 16 * k / tn * 1e-9, pc * 2.0 * PX * 16 * k / tp * 1e-9);
  }
  return BenchPlanarLayers(*ks);
}
#endif

int main(int argc, char** argv) {
#if defined(__x86_64__)
  if (argc > 1 && std::string(argv[1]) == "layouts") return BenchLayouts();
#endif
  if (argc > 1 && std::string(argv[1]) == "ukernel") {
    return BenchMicroKernel(argc > 2 ? argv[2] : "auto", argc > 3 ? std::atoi(argv[3]) : 16);
  }
  std::string isa = argc > 1 ? argv[1] : "auto";
  double sp = argc > 2 ? std::atof(argv[2]) : 0.8;
  int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  const int n = argc > 4 ? std::atoi(argv[4]) : 16;
  const tsp::KernelSet* ks = tsp::SelectKernels(isa);
  if (!ks) { std::printf("isa %s unavailable\n", isa.c_str()); return 1; }
  struct L { const char* name; int h, cin, cout, k, s; };
  std::vector<L> layers = {
      {"s2 1x1 64->256 56", 56, 64, 256, 1, 1},  {"s2 1x1 256->64 56", 56, 256, 64, 1, 1},
      {"s2 3x3 64->64 56", 56, 64, 64, 3, 1},    {"s3 3x3 128 28", 28, 128, 128, 3, 1},
      {"s3 1x1 512->128 28", 28, 512, 128, 1, 1}, {"s4 3x3 256 14", 14, 256, 256, 3, 1},
      {"s4 1x1 1024->256 14", 14, 1024, 256, 1, 1}, {"s4 1x1 256->1024 14", 14, 256, 1024, 1, 1},
      {"s5 3x3 512 7", 7, 512, 512, 3, 1},        {"s5 1x1 2048->512 7", 7, 2048, 512, 1, 1},
  };
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<double> ud;
  tsp::ThreadPool pool(threads);
  std::printf("isa %s sparsity %.2f threads %d\n", ks->name, sp, threads);
  for (const L& l : layers) {
    const int taps = l.k * l.k;
    std::vector<float> f(size_t(l.cout) * taps * l.cin);
    for (auto& v : f) v = nd(rng);
    for (int r = 0; r < l.cout / n; ++r)
      for (int c = 0; c < l.cin; ++c)
        if (ud(rng) < sp)
          for (int j = 0; j < n; ++j)
            for (int t = 0; t < taps; ++t) f[(size_t(r * n + j) * taps + t) * l.cin + c] = 0;
    tsp::PackedFilter pf = tsp::PackFilter(f.data(), nullptr, l.cout, l.k, l.k, l.cin, n);
    tsp::ConvGeometry g;
    g.in_h = g.in_w = l.h; g.cin = l.cin; g.cout = l.cout; g.kh = g.kw = l.k;
    tsp::ComputeSamePadding(l.h, l.k, 1, 1, &g.out_h, &g.pad_top);
    tsp::ComputeSamePadding(l.h, l.k, 1, 1, &g.out_w, &g.pad_left);
    std::vector<float> in(size_t(l.h) * l.h * l.cin), out(size_t(g.pixels()) * l.cout);
    for (auto& v : in) v = nd(rng);
    std::vector<float> zeros(l.cin, 0.f);
    std::vector<tsp::ConvScratch> scratch(threads);
    for (auto& s : scratch) s.Reserve(tsp::ConvScratchSize(taps));
    tsp::ConvPlan plan;
    tsp::PrepareConvPlan(g, pf, &plan);
    std::vector<double> times;
    for (int it = 0; it < 25; ++it) {
      auto t0 = std::chrono::steady_clock::now();
      tsp::RunSparseConv(g, pf, *ks, in.data(), out.data(), zeros.data(), scratch.data(),
                         threads > 1 ? &pool : nullptr, &plan);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    double t = times[times.size() / 2];
    double kept_flops = 2.0 * pf.kept_blocks * n * taps * g.pixels();
    double dense_flops = 2.0 * l.cout * l.cin * taps * g.pixels();
    std::printf("%-22s %8.3f ms  kept %6.1f GFLOP/s  dense-equiv %6.1f GFLOP/s\n", l.name, t * 1e3,
                kept_flops / t * 1e-9, dense_flops / t * 1e-9);
  }
  return 0;
}
