// Unit tests of packing and every micro-kernel path against the dense
// reference convolution (and the scalar path). Plain main(), run by ctest.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "arena_plan.h"
#include "sparse_conv.h"
#include "winograd.h"
#include "thread_pool.h"

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    ++g_checks;                                            \
    if (!(cond)) {                                         \
      ++g_failures;                                        \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);     \
      std::printf(__VA_ARGS__);                            \
      std::printf("\n");                                   \
    }                                                      \
  } while (0)

struct Config {
  int batch, in_h, in_w, cin, cout, kh, kw, stride, dil, n;
  bool same, has_bias;
  int act;  // 0 none, 1 relu, 2 relu6, 3 relu_n1_to_1
  double sparsity;
};

std::string Describe(const Config& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "b%d %dx%dx%d->%d k%dx%d s%d d%d N%d %s bias%d act%d sp%.2f", c.batch, c.in_h,
                c.in_w, c.cin, c.cout, c.kh, c.kw, c.stride, c.dil, c.n,
                c.same ? "SAME" : "VALID", int(c.has_bias), c.act, c.sparsity);
  return buf;
}

// Random OHWI filter whose zeros form 1xN blocks at about the given sparsity.
std::vector<float> MakeFilter(const Config& c, std::mt19937& rng) {
  const int taps = c.kh * c.kw;
  std::vector<float> f(size_t(c.cout) * taps * c.cin);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  for (auto& v : f) v = nd(rng);
  for (int r = 0; r < c.cout / c.n; ++r) {
    for (int ci = 0; ci < c.cin; ++ci) {
      if (ud(rng) >= c.sparsity) continue;
      for (int j = 0; j < c.n; ++j) {
        for (int t = 0; t < taps; ++t) f[(size_t(r * c.n + j) * taps + t) * c.cin + ci] = 0.0f;
      }
    }
  }
  return f;
}

tsp::ConvGeometry Geometry(const Config& c) {
  tsp::ConvGeometry g;
  g.batch = c.batch;
  g.in_h = c.in_h;
  g.in_w = c.in_w;
  g.cin = c.cin;
  g.cout = c.cout;
  g.kh = c.kh;
  g.kw = c.kw;
  g.stride_h = g.stride_w = c.stride;
  g.dil_h = g.dil_w = c.dil;
  if (c.same) {
    tsp::ComputeSamePadding(c.in_h, c.kh, c.stride, c.dil, &g.out_h, &g.pad_top);
    tsp::ComputeSamePadding(c.in_w, c.kw, c.stride, c.dil, &g.out_w, &g.pad_left);
  } else {
    tsp::ComputeValidPadding(c.in_h, c.kh, c.stride, c.dil, &g.out_h, &g.pad_top);
    tsp::ComputeValidPadding(c.in_w, c.kw, c.stride, c.dil, &g.out_w, &g.pad_left);
  }
  switch (c.act) {
    case 1: g.act_min = 0.0f; break;
    case 2: g.act_min = 0.0f; g.act_max = 6.0f; break;
    case 3: g.act_min = -1.0f; g.act_max = 1.0f; break;
    default: break;
  }
  return g;
}

std::vector<const tsp::KernelSet*> Paths() {
  std::vector<const tsp::KernelSet*> paths;
  for (const tsp::KernelSet* ks : {tsp::ScalarKernels(), tsp::Avx2Kernels(),
                                   tsp::Avx512Kernels(), tsp::NeonKernels()}) {
    if (ks != nullptr && tsp::CpuSupports(ks)) paths.push_back(ks);
  }
  return paths;
}

void RunConfig(const Config& c, std::mt19937& rng, tsp::ThreadPool* pool2) {
  const std::string name = Describe(c);
  const tsp::ConvGeometry g = Geometry(c);
  if (g.out_h <= 0 || g.out_w <= 0) return;
  const std::vector<float> filter = MakeFilter(c, rng);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> bias(c.cout);
  for (auto& v : bias) v = nd(rng);
  std::vector<float> input(size_t(c.batch) * c.in_h * c.in_w * c.cin);
  for (auto& v : input) v = nd(rng);
  const float* bias_ptr = c.has_bias ? bias.data() : nullptr;

  // Packing: lossless, and the block structure is what was generated.
  tsp::PackedFilter pf = tsp::PackFilter(filter.data(), bias_ptr, c.cout, c.kh, c.kw, c.cin, c.n);
  CHECK(tsp::UnpackFilter(pf) == filter, "unpack(pack(W)) != W for %s", name.c_str());
  CHECK(pf.row_ptr.back() == pf.kept_blocks, "row_ptr end for %s", name.c_str());
  for (int r = 0; r < pf.rows; ++r) {
    for (int j = pf.row_ptr[r] + 1; j < pf.row_ptr[r + 1]; ++j) {
      CHECK(pf.idx[j - 1] < pf.idx[j], "kept indices not ascending for %s", name.c_str());
    }
  }
  CHECK(reinterpret_cast<uintptr_t>(pf.w.get()) % 64 == 0, "weights not 64-byte aligned");
  const double bs = tsp::BlockSparsity(filter.data(), c.cout, c.kh * c.kw, c.cin, c.n);
  CHECK(std::fabs(bs - (1.0 - double(pf.kept_blocks) / (double(pf.rows) * c.cin))) < 1e-12,
        "BlockSparsity disagrees with packing for %s", name.c_str());

  std::vector<float> ref(size_t(g.pixels()) * c.cout);
  tsp::ReferenceConv(g, input.data(), filter.data(), bias_ptr, ref.data());
  double scale = 1.0;
  for (float v : ref) scale = std::max(scale, double(std::fabs(v)));
  // A fused residual ADD: the residual is added before the activation clamp.
  std::vector<float> residual(ref.size()), ref_res(ref.size());
  for (auto& v : residual) v = nd(rng);
  tsp::ReferenceConv(g, input.data(), filter.data(), bias_ptr, ref_res.data(), residual.data());
  for (float v : ref_res) scale = std::max(scale, double(std::fabs(v)));

  std::vector<float> zeros(c.cin, 0.0f);
  std::vector<tsp::ConvScratch> scratch(2);
  for (auto& s : scratch) s.Reserve(tsp::ConvScratchSize(c.kh * c.kw));
  std::vector<float> scalar_out;
  tsp::ConvPlan plan;
  tsp::PrepareConvPlan(g, pf, &plan);
  CHECK(plan.valid, "plan not built for %s", name.c_str());
  // The transformed filter (used where Winograd applies) does not depend on the path.
  const tsp::WinogradFilter wf =
      tsp::WinogradApplies(g, pf) ? tsp::TransformFilter(pf) : tsp::WinogradFilter();
  for (const tsp::KernelSet* ks : Paths()) {
    for (int variant = 0; variant < 5; ++variant) {
      // 0: no plan, 1 thread; 1: plan, 1 thread; 2: plan, pool of 2; with a
      // fused residual: 3: no plan, 1 thread; 4: plan, pool of 2.
      tsp::ThreadPool* pool = (variant == 2 || variant == 4) ? pool2 : nullptr;
      const tsp::ConvPlan* pl = (variant == 0 || variant == 3) ? nullptr : &plan;
      const bool with_res = variant >= 3;
      const std::vector<float>& want = with_res ? ref_res : ref;
      std::vector<float> out(ref.size(), std::nanf(""));
      tsp::ConvGeometry gv = g;
      gv.min_parallel_macs = 0.0;  // exercise the pool even on small layers
      // Variant 4 also prefetches a "next" filter (a hint: values unchanged).
      tsp::RunSparseConv(gv, pf, *ks, input.data(), out.data(), zeros.data(), scratch.data(), pool,
                         pl, with_res ? residual.data() : nullptr, variant == 4 ? &pf : nullptr);
      double max_err = 0.0;
      for (size_t i = 0; i < out.size(); ++i) {
        double e = std::fabs(double(out[i]) - double(want[i]));
        if (!(e <= max_err)) max_err = std::isnan(e) ? INFINITY : std::max(max_err, e);
      }
      CHECK(max_err <= 1e-5 * scale * std::sqrt(double(c.cin * c.kh * c.kw)),
            "%s path %s variant %d: max error %g (scale %g)", name.c_str(), ks->name, variant,
            max_err, scale);
      if (ks == tsp::ScalarKernels() && variant == 0) scalar_out = out;
      if (variant == 0 && tsp::WinogradApplies(g, pf)) {
        // Winograd F(2x2, 3x3): 1 thread and a pool of 2, with and without
        // the residual, against the same reference.
        CHECK(wf.valid(), "winograd filter for %s", name.c_str());
        if (c.in_h == 41) {
          const int rows = tsp::WinogradChunkRows(g);
          CHECK(rows > 0 && 21 % rows != 0, "%s: chunks of %d tile rows", name.c_str(), rows);
        }
        tsp::AlignedPtr<float> wscratch = tsp::AlignedAlloc<float>(tsp::WinogradScratchFloats(g, 2));
        for (int wv = 0; wv < 4; ++wv) {
          const bool wres = wv >= 2;
          const std::vector<float>& wwant = wres ? ref_res : ref;
          std::vector<float> wout(ref.size(), std::nanf(""));
          tsp::RunWinogradConv(gv, pf, wf, *ks, input.data(), wout.data(),
                               wres ? residual.data() : nullptr, zeros.data(), wscratch.get(),
                               scratch.data(), (wv % 2) ? pool2 : nullptr,
                               wv == 3 ? &pf : nullptr);  // a prefetch hint: values unchanged
          double werr = 0.0;
          for (size_t i = 0; i < wout.size(); ++i) {
            const double e = std::fabs(double(wout[i]) - double(wwant[i]));
            if (!(e <= werr)) werr = std::isnan(e) ? INFINITY : std::max(werr, e);
          }
          CHECK(werr <= 1e-5 * scale * std::sqrt(double(c.cin * c.kh * c.kw)),
                "%s path %s winograd variant %d: max error %g (scale %g)", name.c_str(),
                ks->name, wv, werr, scale);
        }
      }
      if (ks != tsp::ScalarKernels() && !scalar_out.empty() && !with_res) {
        double d = 0.0;
        for (size_t i = 0; i < out.size(); ++i) {
          d = std::max(d, double(std::fabs(out[i] - scalar_out[i])));
        }
        CHECK(d <= 1e-5 * scale * std::sqrt(double(c.cin * c.kh * c.kw)),
              "%s path %s differs from scalar by %g", name.c_str(), ks->name, d);
      }
    }
  }
}

void TestPlanArena(std::mt19937& rng) {
  // A chain a -> b -> c -> d (each read only by the next) needs two buffers.
  {
    std::vector<tsp::ArenaRequest> r(4);
    for (int i = 0; i < 4; ++i) r[i] = {1000, i, i + 1, -1};
    tsp::ArenaPlan p = tsp::PlanArena(r);
    CHECK(p.size == 2 * 1024, "chain: arena of %lld bytes, want 2048", (long long)p.size);
    CHECK(p.offset[0] != p.offset[1] && p.offset[0] == p.offset[2], "chain: reuse");
  }
  // In place: the alias shares its residual's buffer.
  {
    std::vector<tsp::ArenaRequest> r = {{512, 0, 2, -1}, {256, 1, 2, -1}, {512, 2, 3, 0}};
    tsp::ArenaPlan p = tsp::PlanArena(r);
    CHECK(p.offset[2] == p.offset[0], "alias: offsets %lld vs %lld", (long long)p.offset[2],
          (long long)p.offset[0]);
    CHECK(p.offset[1] != p.offset[0], "alias: live buffers overlap");
  }
  // Random: buffers alive at the same time never overlap, offsets aligned.
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  for (int rep = 0; rep < 200; ++rep) {
    const int n = 1 + pick(rng) % 30;
    std::vector<tsp::ArenaRequest> r(n);
    for (int i = 0; i < n; ++i) {
      r[i].bytes = 1 + pick(rng) % 5000;
      r[i].first = i;
      r[i].last = i + pick(rng) % 6;
      // Take over an earlier buffer whose last reader is this op.
      if (i > 0 && pick(rng) % 4 == 0) {
        const int j = pick(rng) % i;
        if (r[j].alias_of < 0) {
          r[j].last = i;
          r[i].bytes = r[j].bytes;
          r[i].alias_of = j;
        }
      }
    }
    tsp::ArenaPlan p = tsp::PlanArena(r);
    int64_t total = 0;
    for (int i = 0; i < n; ++i) {
      total += r[i].bytes;
      CHECK(p.offset[i] % 64 == 0 && p.offset[i] + r[i].bytes <= p.size, "offset in the arena");
    }
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) {
        // Members of one alias chain share memory by design.
        int ri = i, rj = j;
        while (r[ri].alias_of >= 0) ri = r[ri].alias_of;
        while (r[rj].alias_of >= 0) rj = r[rj].alias_of;
        if (ri == rj) {
          CHECK(p.offset[i] == p.offset[j], "alias chain with two offsets");
          continue;
        }
        const bool alive = r[i].first <= r[j].last && r[j].first <= r[i].last;
        const bool overlap =
            p.offset[i] < p.offset[j] + r[j].bytes && p.offset[j] < p.offset[i] + r[i].bytes;
        CHECK(!(alive && overlap), "requests %d and %d alive together share memory", i, j);
      }
    }
    CHECK(p.size <= total + 64 * n, "arena larger than no reuse");
  }
}

void TestStridedTileFitsL1() {
  // 64 B lines, 64 sets: 16 rows 4 KiB or 8 KiB apart share one set; 2 KiB
  // apart they alternate between two sets (8 each); odd strides spread out.
  CHECK(!tsp::StridedTileFitsL1(4096, 16), "C_in 1024 at 16 pixels must not fit");
  CHECK(!tsp::StridedTileFitsL1(8192, 16), "C_in 2048 at 16 pixels must not fit");
  CHECK(tsp::StridedTileFitsL1(4096, 8), "8 pixels fit any stride");
  CHECK(tsp::StridedTileFitsL1(2048, 16), "C_in 512 at 16 pixels fits");
  CHECK(tsp::StridedTileFitsL1(256, 16), "C_in 64 at 16 pixels fits");
  CHECK(tsp::StridedTileFitsL1(6144, 16), "C_in 1536 at 16 pixels fits");
}

void TestCostModel() {
  // The layers it was fitted on (1x16): MobileNetV2's 1x1 16->96 and 32->16 at
  // 0.5 ran 1.9x / 2.3x XNNPACK's time (declined); its 24->144 at 0.5 and
  // ResNet-50's 64-channel 1x1 layers at 0.9 and 0.4 ran faster (claimed).
  struct Case { int64_t kept; int rows, cin; bool declined; };
  const Case cases[] = {
      {6 * 8, 6, 16, true},        // 16->96, 8 of 16 kept per row
      {16, 1, 32, true},           // 32->16, one row
      {9 * 12, 9, 24, false},      // 24->144
      {16 * 6, 16, 64, false},     // 64->256 at 0.9
      {4 * 38, 4, 64, false},      // 64->64 at 0.4
      {16 * 1024, 16, 2048, false} // long rows
  };
  for (const Case& c : cases) {
    const double r = tsp::EstimatedCostRatio(c.kept, c.rows, 16, 1, c.cin);
    CHECK(r > 0 && (r > tsp::kMaxCostRatio) == c.declined,
          "cost model: %lld kept, %d rows, cin %d -> %.3f", static_cast<long long>(c.kept),
          c.rows, c.cin, r);
  }
  // Taps multiply both sides: a 3x3 layer with as many kept channels is cheaper.
  CHECK(tsp::EstimatedCostRatio(48, 6, 16, 9, 16) < tsp::EstimatedCostRatio(48, 6, 16, 1, 16),
        "cost model: 3x3 vs 1x1");
  CHECK(tsp::EstimatedCostRatio(48, 6, 8, 1, 16) == 0.0, "cost model: N=8 is not modelled");
}

void TestChooseBlockSize(std::mt19937& rng) {
  for (int n : tsp::kBlockSizes) {
    Config c{1, 4, 4, 24, 64, 3, 3, 1, 1, n, true, true, 0, 0.7};
    std::vector<float> f = MakeFilter(c, rng);
    tsp::BlockChoice ch = tsp::ChooseBlockSize(f.data(), c.cout, 9, c.cin, 0.3);
    CHECK(ch.n == n, "ChooseBlockSize picked N=%d for a 1x%d pattern (%s)", ch.n, n,
          ch.reason.c_str());
    tsp::BlockChoice none = tsp::ChooseBlockSize(f.data(), c.cout, 9, c.cin, 0.95);
    CHECK(none.n == 0 && !none.reason.empty(), "min_sparsity 0.95 should decline");
  }
  // Per-N thresholds: a 1x8 pattern at ~0.7 passes 0.6 and fails 0.8 for N=8.
  {
    Config c{1, 4, 4, 40, 64, 1, 1, 1, 1, 8, true, true, 0, 0.7};
    std::vector<float> f = MakeFilter(c, rng);
    const double lo[4] = {0.0, 0.6, 0.0, 0.0}, hi[4] = {0.0, 0.8, 0.0, 0.0};
    CHECK(tsp::ChooseBlockSize(f.data(), 64, 1, 40, lo).n == 8, "1x8 at 0.7 vs 0.6");
    tsp::BlockChoice ch = tsp::ChooseBlockSize(f.data(), 64, 1, 40, hi);
    CHECK(ch.n == 0 && ch.reason.find("1x8") != std::string::npos, "1x8 at 0.7 vs 0.8: %s",
          ch.reason.c_str());
    const double lanes[4] = {0.25, 0.5, 1.0, 1.0};
    double t[4];
    tsp::WidthAwareThresholds(0.4, lanes, t);
    CHECK(std::fabs(t[0] - 0.85) < 1e-12 && std::fabs(t[1] - 0.7) < 1e-12 &&
              std::fabs(t[2] - 0.4) < 1e-12 && std::fabs(t[3] - 0.4) < 1e-12,
          "WidthAwareThresholds %g %g %g %g", t[0], t[1], t[2], t[3]);
  }
  // Dense filter: nothing to claim.
  std::vector<float> dense(64 * 9 * 8, 1.0f);
  tsp::BlockChoice ch = tsp::ChooseBlockSize(dense.data(), 64, 9, 8, 0.1);
  CHECK(ch.n == 0, "dense filter claimed with N=%d", ch.n);
  // Output channels not a multiple of 4.
  std::vector<float> odd(6 * 8, 0.0f);
  ch = tsp::ChooseBlockSize(odd.data(), 6, 1, 8, 0.1);
  CHECK(ch.n == 0, "cout=6 claimed");
}

// Every task runs exactly once, on a valid thread index, for many jobs.
void TestThreadPool() {
  for (int threads : {1, 2, 3}) {
    tsp::ThreadPool pool(threads);
    CHECK(pool.size() == threads, "pool size %d != %d", pool.size(), threads);
    for (int64_t tasks : {int64_t(0), int64_t(1), int64_t(2), int64_t(7), int64_t(1000)}) {
      for (int rep = 0; rep < 20; ++rep) {
        struct Ctx {
          std::vector<std::atomic<int>> hits;
          std::atomic<int> bad_thread{0};
          int threads;
        } ctx{std::vector<std::atomic<int>>(size_t(tasks)), {}, threads};
        pool.ParallelFor(
            tasks,
            [](void* c, int64_t t, int thread) {
              auto* x = static_cast<Ctx*>(c);
              x->hits[size_t(t)].fetch_add(1);
              if (thread < 0 || thread >= x->threads) x->bad_thread.fetch_add(1);
            },
            &ctx);
        int wrong = 0;
        for (auto& h : ctx.hits) wrong += h.load() != 1;
        CHECK(wrong == 0 && ctx.bad_thread.load() == 0,
              "pool of %d, %lld tasks: %d tasks not run exactly once", threads,
              static_cast<long long>(tasks), wrong);
      }
    }
  }
}

void TestPadding() {
  int out, pad;
  tsp::ComputeSamePadding(7, 3, 2, 1, &out, &pad);
  CHECK(out == 4 && pad == 1, "SAME 7/k3/s2: out %d pad %d", out, pad);
  tsp::ComputeSamePadding(8, 3, 2, 1, &out, &pad);
  CHECK(out == 4 && pad == 0, "SAME 8/k3/s2: out %d pad %d", out, pad);
  tsp::ComputeSamePadding(10, 3, 1, 2, &out, &pad);
  CHECK(out == 10 && pad == 2, "SAME 10/k3/d2: out %d pad %d", out, pad);
  tsp::ComputeValidPadding(9, 3, 2, 2, &out, &pad);
  CHECK(out == 3 && pad == 0, "VALID 9/k3/s2/d2: out %d", out);
}

}  // namespace

// Which 3x3 layers take Winograd: ResNet-50's shapes at the sparsities its
// rule was measured on (winograd.h).
void TestWinogradPays() {
  auto layer = [](int hw, int c, double sparsity, int k = 3, int stride = 1) {
    tsp::ConvGeometry g;
    g.in_h = g.in_w = hw;
    g.cin = g.cout = c;
    g.kh = g.kw = k;
    g.stride_h = g.stride_w = stride;
    tsp::ComputeSamePadding(hw, k, stride, 1, &g.out_h, &g.pad_top);
    tsp::ComputeSamePadding(hw, k, stride, 1, &g.out_w, &g.pad_left);
    tsp::PackedFilter pf;
    pf.n = 16;
    pf.rows = c / 16;
    pf.kh = pf.kw = k;
    pf.taps = k * k;
    pf.cin = c;
    pf.kept_blocks = int64_t(pf.rows * c * (1.0 - sparsity) + 0.5);
    return tsp::WinogradApplies(g, pf) && tsp::WinogradPays(g, pf);
  };
  CHECK(layer(14, 256, 0.5) && layer(14, 256, 0.9), "3x3 256 at 14x14 takes Winograd");
  CHECK(layer(28, 128, 0.8), "3x3 128 at 28x28, 26 kept per row, takes Winograd");
  CHECK(!layer(28, 128, 0.9), "3x3 128 at 28x28, 13 kept per row: too short");
  CHECK(!layer(7, 512, 0.5), "7x7 images (16 tiles) stay direct");
  CHECK(layer(56, 64, 0.5) && !layer(56, 64, 0.8), "56x56 x 64: 32 kept yes, 13 no");
  CHECK(!layer(14, 256, 0.5, 3, 2) && !layer(14, 256, 0.5, 1), "stride 2 and 1x1 never");
}

// Each x86 path is offered exactly when the CPU has its instructions, and
// asking for a missing one returns null instead of executing it (building the
// AVX-512 KernelSet used to run zmm stores: SIGILL on AVX2-only CPUs).
void TestDispatchMatchesCpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 =
      avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  CHECK((tsp::Avx2Kernels() != nullptr) == avx2, "AVX2 path offered iff the CPU has AVX2+FMA");
  CHECK((tsp::Avx512Kernels() != nullptr) == avx512,
        "AVX-512 path offered iff the CPU has AVX-512F/VL");
  CHECK((tsp::SelectKernels("avx512") != nullptr) == avx512, "isa=avx512 refused without it");
  const char* best = avx512 ? "avx512" : avx2 ? "avx2" : "scalar";
  CHECK(std::string(tsp::SelectKernels("auto")->name) == best, "auto picks the widest path");
#endif
  CHECK(tsp::CpuSupports(tsp::ScalarKernels()) && !tsp::CpuSupports(nullptr),
        "scalar always runs; a missing path never");
}

int main(int argc, char** argv) {
  unsigned seed = argc > 1 ? unsigned(std::strtoul(argv[1], nullptr, 10)) : 1234u;
  std::mt19937 rng(seed);
  std::printf("paths:");
  for (auto* ks : Paths()) std::printf(" %s", ks->name);
  std::printf("\n");
  tsp::ThreadPool pool2(2);
  TestDispatchMatchesCpu();
  TestPadding();
  TestThreadPool();
  TestChooseBlockSize(rng);
  TestCostModel();
  TestStridedTileFitsL1();
  TestPlanArena(rng);
  TestWinogradPays();

  // Fixed configurations covering the list.
  std::vector<Config> configs = {
      {1, 5, 7, 13, 16, 1, 1, 1, 1, 16, true, true, 0, 0.5},   // 1x1, odd sizes
      {3, 9, 9, 17, 32, 3, 3, 1, 1, 8, true, false, 1, 0.7},   // batch 3, 3x3
      {1, 11, 13, 9, 32, 7, 7, 2, 1, 32, true, true, 2, 0.6},  // 7x7 stride 2
      {2, 10, 10, 8, 12, 3, 3, 1, 2, 4, true, true, 3, 0.4},   // dilation 2
      {1, 9, 8, 6, 16, 3, 3, 2, 2, 4, false, true, 1, 0.5},    // VALID s2 d2
      {1, 1, 37, 33, 64, 1, 1, 1, 1, 16, false, true, 0, 0.8}, // FC-like rows
      {1, 6, 6, 5, 16, 3, 3, 1, 1, 16, true, true, 0, 1.0},    // all blocks zero
      {1, 6, 6, 5, 32, 3, 3, 1, 1, 32, true, true, 1, 0.0},    // dense
      // Large weights: row blocks of one row, 16-tile chunks, interior tiles.
      {1, 10, 12, 256, 64, 3, 3, 1, 1, 16, true, true, 0, 0.2},
      {2, 9, 9, 128, 64, 3, 3, 1, 1, 8, false, true, 1, 0.5},
      // Strided tiles: 1x1 stride 1 with a tail (35 pixels = 2 x 16 + 3); rows
      // wide enough for 16-pixel interior tiles (3x3, dilation 2); 1x1
      // stride 2 (pixel stride 2 C_in); fewer pixels than one tile; C_in 1024
      // (pixel stride 4 KiB: pointer tiles instead).
      {1, 5, 7, 24, 32, 1, 1, 1, 1, 32, true, true, 1, 0.5},
      {1, 4, 40, 24, 32, 3, 3, 1, 1, 16, true, true, 1, 0.6},
      {2, 6, 45, 20, 16, 3, 3, 1, 2, 4, true, false, 0, 0.5},
      {1, 6, 40, 24, 16, 1, 1, 2, 1, 8, true, true, 2, 0.5},
      {1, 2, 5, 24, 16, 1, 1, 1, 1, 16, true, true, 0, 0.5},
      {1, 3, 7, 1024, 16, 1, 1, 1, 1, 16, true, true, 0, 0.7},
      // Winograd in chunks of tile rows (scratch of the whole layer > 4 MiB),
      // the last chunk shorter, an odd width.
      {1, 41, 39, 96, 96, 3, 3, 1, 1, 16, true, true, 1, 0.5},
  };
  // Random configurations.
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  for (int i = 0; i < 40; ++i) {
    Config c;
    c.n = tsp::kBlockSizes[pick(rng) % 4];
    c.batch = 1 + pick(rng) % 3;
    c.in_h = 1 + pick(rng) % 12;
    c.in_w = 1 + pick(rng) % 12;
    c.cin = 1 + pick(rng) % 40;
    c.cout = c.n * (1 + pick(rng) % 3);
    const int ks[] = {1, 1, 3, 3, 5, 7};
    c.kh = ks[pick(rng) % 6];
    c.kw = (pick(rng) % 3 == 0) ? ks[pick(rng) % 6] : c.kh;
    c.stride = 1 + pick(rng) % 2;
    c.dil = 1 + pick(rng) % 2;
    c.same = pick(rng) % 2 == 0;
    c.has_bias = pick(rng) % 3 != 0;
    c.act = pick(rng) % 4;
    c.sparsity = 0.1 * (pick(rng) % 10);
    configs.push_back(c);
  }
  for (const Config& c : configs) RunConfig(c, rng, &pool2);
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
