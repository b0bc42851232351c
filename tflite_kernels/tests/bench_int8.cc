// Micro-benchmark (not a test): the int8 1xN sparse convolution against dense
// int8 loops of the same layer, ResNet-50-like shapes at 14x14.
// Usage: bench_int8 [threads] [n] [reps] [quick]   (quick: only the sparse
// int8 path of the CPU and the fp32 one, no dense loops, no scalar)
// Per layer, `reps` rounds (default 15) each timing every kernel once, so the
// speed phases of a shared VM hit all alike; the minimum per kernel. 1 thread
// by default. Kernels:
//   sparse  avx2 / scalar   RunSparseConvInt8 with a plan
//   dense   avx2            a dense AVX2 int8 kernel written here: input
//                           widened to int16 into a zp-padded image, adjacent
//                           channel pairs (one 32-bit broadcast per pixel),
//                           vpmaddwd over 6 pixels x 16 outputs, then the
//                           library's AVX2 requantization; widening included
//   dense   reference       ReferenceConvInt8 (TFLite's naive loops, -O3)
//   fp32    sparse          RunSparseConv (the float path) on the same pattern
// GOPS: dense-equivalent (2 * pixels * cout * cin * taps / time) and, for the
// sparse kernels, on the kept MACs (2 * pixels * kept blocks * n * taps / time).
// Every int8 result is checked against the reference (bit-exact).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include <algorithm>

#include "int8_conv.h"
#include "qrequant.h"
#include "sparse_conv.h"
#include "thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

#if defined(__x86_64__)
// Dense AVX2 int8 convolution, stride 1, SAME, (k-1)/2 padding. in16: the
// input minus nothing, widened to int16 with a border of zp_in, channels
// padded to even (cp) with 0; w16: [cout/16][tap][cp/2][16][2] int16.
struct DenseAvx2 {
  int h, w, cin, cout, k, pad, cp, hp, wp;
  std::vector<int16_t> in16;
  tsp::AlignedPtr<int16_t> w16;
  std::vector<int32_t> acc;
};

__attribute__((target("avx2"))) void DenseAvx2Run(DenseAvx2& d, const tsp::PackedFilterInt8& pf,
                                                   const tsp::Int8KernelSet& ks, const int8_t* x,
                                                   int8_t* out) {
  // Widen into the zp-padded image.
  std::fill(d.in16.begin(), d.in16.end(), int16_t(pf.zp_in));
  for (int y = 0; y < d.h; ++y) {
    for (int xx = 0; xx < d.w; ++xx) {
      int16_t* dst = d.in16.data() + (size_t(y + d.pad) * d.wp + xx + d.pad) * d.cp;
      const int8_t* src = x + (size_t(y) * d.w + xx) * d.cin;
      for (int c = 0; c < d.cin; ++c) dst[c] = src[c];
      if (d.cp > d.cin) dst[d.cin] = 0;
    }
  }
  const int taps = d.k * d.k, pairs = d.cp / 2;
  constexpr int P = 6;
  for (int oy = 0; oy < d.h; ++oy) {
    for (int ox0 = 0; ox0 < d.w; ox0 += P) {
      const int np = std::min(P, d.w - ox0);
      for (int g = 0; g < d.cout / 16; ++g) {
        __m256i a[P][2];
        const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.bias.get() + 16 * g));
        const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pf.bias.get() + 16 * g + 8));
        _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p) a[p][0] = b0, a[p][1] = b1;
        for (int t = 0; t < taps; ++t) {
          const int ky = t / d.k, kx = t % d.k;
          const int32_t* px[P];
          _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p) {
            const int ox = ox0 + std::min(p, np - 1);
            px[p] = reinterpret_cast<const int32_t*>(d.in16.data() +
                                                     (size_t(oy + ky) * d.wp + ox + kx) * d.cp);
          }
          const int16_t* wp = d.w16.get() + (size_t(g) * taps + t) * pairs * 32;
          for (int q = 0; q < pairs; ++q, wp += 32) {
            const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp));
            const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp + 16));
            _Pragma("GCC unroll 8") for (int p = 0; p < P; ++p) {
              const __m256i xv = _mm256_set1_epi32(px[p][q]);
              a[p][0] = _mm256_add_epi32(a[p][0], _mm256_madd_epi16(xv, w0));
              a[p][1] = _mm256_add_epi32(a[p][1], _mm256_madd_epi16(xv, w1));
            }
          }
        }
        for (int p = 0; p < np; ++p) {
          int32_t* dst = d.acc.data() + (size_t(oy) * d.w + ox0 + p) * d.cout + 16 * g;
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), a[p][0]);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), a[p][1]);
        }
      }
    }
  }
  // Requantize (the library's AVX2 routine), + zp_out, clamp.
  const int64_t pixels = int64_t(d.h) * d.w;
  for (int64_t m = 0; m < pixels; ++m) {
    int32_t* v = d.acc.data() + m * d.cout;
    ks.requant(v, pf.mult.get(), pf.lshift.get(), pf.rshift.get(), pf.rmask.get(), d.cout, v);
    for (int o = 0; o < d.cout; ++o) {
      out[m * d.cout + o] = int8_t(std::min(std::max(v[o] + pf.zp_out, pf.act_min), pf.act_max));
    }
  }
}

void DenseAvx2Init(DenseAvx2& d, int h, int cin, int cout, int k, const std::vector<int8_t>& f) {
  d.h = d.w = h;
  d.cin = cin;
  d.cout = cout;
  d.k = k;
  d.pad = (k - 1) / 2;
  d.cp = (cin + 1) / 2 * 2;
  d.hp = h + 2 * d.pad;
  d.wp = h + 2 * d.pad;
  d.in16.assign(size_t(d.hp) * d.wp * d.cp, 0);
  d.acc.assign(size_t(h) * h * cout, 0);
  const int taps = k * k, pairs = d.cp / 2;
  d.w16 = tsp::AlignedAlloc<int16_t>(size_t(cout) * taps * d.cp);
  for (int g = 0; g < cout / 16; ++g)
    for (int t = 0; t < taps; ++t)
      for (int q = 0; q < pairs; ++q)
        for (int o = 0; o < 16; ++o)
          for (int e = 0; e < 2; ++e) {
            const int c = 2 * q + e;
            d.w16[(((size_t(g) * taps + t) * pairs + q) * 16 + o) * 2 + e] =
                c < cin ? f[(size_t(16 * g + o) * taps + t) * cin + c] : 0;
          }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int n = argc > 2 ? std::atoi(argv[2]) : 16;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 15;
  const bool quick = argc > 4 && std::string(argv[4]) == "quick";
  struct Layer {
    const char* name;
    int h, cin, cout, k;
  };
  const Layer layers[] = {{"3x3 256->256 14x14", 14, 256, 256, 3},
                          {"1x1 1024->256 14x14", 14, 1024, 256, 1}};
  const double sparsities[] = {0.0, 0.5, 0.8, 0.9};
  std::unique_ptr<tsp::ThreadPool> pool(threads > 1 ? new tsp::ThreadPool(threads) : nullptr);
  const tsp::Int8KernelSet* scalar = tsp::ScalarKernelsInt8();
  const tsp::Int8KernelSet* best = tsp::SelectKernelsInt8("auto");
  const tsp::KernelSet* fks = tsp::SelectKernels("auto");
  std::printf("int8 1x%d sparse conv, %d thread(s); %d rounds, each timing every kernel of a layer "
              "once (slow ones: 3 rounds), min per kernel; int8 path %s, fp32 path %s\n",
              n, threads, reps, best->name, fks->name);
  std::printf("%-21s %4s %-18s %9s %9s %9s %8s\n", "layer", "sp", "kernel", "ms", "GOPS", "keptGOPS",
              "vs dense");
  std::mt19937 rng(7);
  for (const Layer& l : layers) {
    const int taps = l.k * l.k;
    tsp::ConvGeometry g;
    g.in_h = g.in_w = l.h;
    g.cin = l.cin;
    g.cout = l.cout;
    g.kh = g.kw = l.k;
    tsp::ComputeSamePadding(l.h, l.k, 1, 1, &g.out_h, &g.pad_top);
    tsp::ComputeSamePadding(l.h, l.k, 1, 1, &g.out_w, &g.pad_left);
    const double dense_ops = 2.0 * double(g.pixels()) * l.cout * l.cin * taps;
    std::uniform_int_distribution<int> xd(-128, 127), wd(-127, 127);
    std::vector<int8_t> x(size_t(g.pixels()) * l.cin);
    for (auto& v : x) v = int8_t(xd(rng));
    std::vector<float> xf(x.begin(), x.end());
    tsp::Int8ConvParams q;
    q.input_zero_point = -3;
    q.output_zero_point = 5;
    std::vector<float> fs(size_t(l.cout), 0.5f / std::sqrt(float(l.cin * taps)));
    tsp::PerChannelMultipliers(1.0f, fs.data(), l.cout, 64.0f, l.cout, &q);
    std::vector<int32_t> bias(size_t(l.cout), 1000);
    std::vector<float> zeros(size_t(l.cin), 0.0f);
    // Per sparsity: filter, int8 and fp32 packings, plans, reference output.
    struct Case {
      double sp;
      std::vector<int8_t> f, ref;
      tsp::PackedFilterInt8 pf;
      tsp::PackedFilter pff;
      tsp::ConvPlan plan, fplan;
      double kept_ops;
    };
    std::vector<Case> cases(sizeof(sparsities) / sizeof(sparsities[0]));
    for (size_t i = 0; i < cases.size(); ++i) {
      Case& c = cases[i];
      c.sp = sparsities[i];
      c.f.resize(size_t(l.cout) * taps * l.cin);
      for (auto& v : c.f) v = int8_t(wd(rng));
      std::uniform_real_distribution<double> ud(0.0, 1.0);
      for (int r = 0; r < l.cout / n; ++r)
        for (int ch = 0; ch < l.cin; ++ch)
          if (ud(rng) < c.sp)
            for (int j = 0; j < n; ++j)
              for (int t = 0; t < taps; ++t) c.f[(size_t(r * n + j) * taps + t) * l.cin + ch] = 0;
      std::string err;
      if (!tsp::PackFilterInt8(c.f.data(), bias.data(), l.cout, l.k, l.k, l.cin, n, q, &c.pf, &err)) {
        std::printf("pack: %s\n", err.c_str());
        return 1;
      }
      tsp::PrepareConvPlanInt8(g, c.pf, &c.plan);
      std::vector<float> ff(c.f.begin(), c.f.end());
      c.pff = tsp::PackFilter(ff.data(), nullptr, l.cout, l.k, l.k, l.cin, n);
      tsp::PrepareConvPlan(g, c.pff, &c.fplan);
      c.ref.resize(size_t(g.pixels()) * l.cout);
      tsp::ReferenceConvInt8(g, x.data(), c.f.data(), bias.data(), q, c.ref.data());
      c.kept_ops = 2.0 * double(g.pixels()) * double(c.pf.kept_blocks) * n * taps;
    }
    std::vector<tsp::ConvScratchInt8> scratch(size_t(std::max(1, threads)));
    for (auto& s : scratch) s.Reserve(taps, l.cout);
    std::vector<tsp::ConvScratch> fscratch(size_t(std::max(1, threads)));
    for (auto& s : fscratch) s.Reserve(tsp::ConvScratchSize(taps));
#if defined(__x86_64__)
    DenseAvx2 dense;
    DenseAvx2Init(dense, l.h, l.cin, l.cout, l.k, cases[0].f);
#endif
    struct Run {
      std::string kernel;
      const Case* c;
      bool sparse, slow;
      std::function<void(int8_t*)> fn;  // null output: the fp32 path (not checked)
      std::vector<int8_t> out;
      double best = 1e30;
    };
    std::vector<Run> runs;
    const Case& c0 = cases[0];
#if defined(__x86_64__)
    if (!quick && tsp::Avx2KernelsInt8() != nullptr) {
      runs.push_back({"dense avx2", &c0, false, false, [&](int8_t* o) {
                        DenseAvx2Run(dense, c0.pf, *best, x.data(), o);
                      }, {}, 1e30});
    }
#endif
    if (!quick) {
      runs.push_back({"dense reference", &c0, false, true, [&](int8_t* o) {
                        tsp::ReferenceConvInt8(g, x.data(), c0.f.data(), bias.data(), q, o);
                      }, {}, 1e30});
    }
    std::vector<float> fout(c0.ref.size());
    for (const Case& c : cases) {
      for (const tsp::Int8KernelSet* ks : {best, scalar}) {
        if (ks == scalar && (best == scalar || quick)) continue;
        runs.push_back({std::string("sparse int8 ") + ks->name, &c, true, ks == scalar,
                        [&, ks, cp = &c](int8_t* o) {
                          tsp::RunSparseConvInt8(g, cp->pf, *ks, x.data(), o, scratch.data(),
                                                 pool.get(), &cp->plan);
                        }, {}, 1e30});
      }
      runs.push_back({std::string("sparse fp32 ") + fks->name, &c, true, false,
                      [&, cp = &c](int8_t*) {
                        tsp::RunSparseConv(g, cp->pff, *fks, xf.data(), fout.data(), zeros.data(),
                                           fscratch.data(), pool.get(), &cp->fplan);
                      }, {}, 1e30});
    }
    for (Run& r : runs) {
      r.out.assign(c0.ref.size(), 0);
      r.fn(r.out.data());  // warm, and the output checked below
    }
    for (int round = 0; round < reps; ++round) {
      for (Run& r : runs) {
        if (r.slow && round >= 3) continue;
        const auto t0 = std::chrono::steady_clock::now();
        r.fn(r.out.data());
        r.best = std::min(r.best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    }
    double dense_s = 0.0;
    for (const Run& r : runs) {
      if (r.kernel == "dense avx2") dense_s = r.best;
    }
    for (const Run& r : runs) {
      const bool fp32 = r.kernel.compare(0, 11, "sparse fp32") == 0;
      if (!fp32 && r.out != r.c->ref) std::printf("  MISMATCH with the reference: %s\n", r.kernel.c_str());
      const double s = r.best;
      std::printf("%-21s %4.2f %-18s %9.3f %9.1f %9s %7.2fx\n", l.name, r.c->sp, r.kernel.c_str(),
                  s * 1e3, dense_ops / s * 1e-9,
                  r.sparse ? std::to_string(int(std::lround(r.c->kept_ops / s * 1e-9))).c_str() : "-",
                  dense_s > 0 ? dense_s / s : 0.0);
    }
  }
  return 0;
}
