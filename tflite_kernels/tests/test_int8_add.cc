// The int8 residual ADD the delegate fuses into an int8 CONV_2D's epilogue
// (int8_add.h; RunSparseConvInt8's residual): the scalar ADD against closed
// forms and an independent int64 formula, and the fused convolution + ADD on
// every path equal to the reference convolution then the reference ADD.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "int8_add.h"
#include "int8_test_util.h"
#include "qrequant.h"
#include "thread_pool.h"

namespace {

// add.cc's formula written independently: int64 arithmetic, rounding half
// away from zero by hand (SRDHM: ties up; RoundingDivideByPOT: away from 0).
int64_t Srdhm64(int64_t a, int64_t m) {
  const int64_t ab = a * m;
  const int64_t q = ab >= 0 ? (ab + (int64_t(1) << 30)) >> 31 : -((-ab + (int64_t(1) << 30) - 1) >> 31);
  return q;
}
int64_t RoundAway(int64_t x, int e) {
  if (e == 0) return x;
  const int64_t half = int64_t(1) << (e - 1);
  return x >= 0 ? (x + half) >> e : -((-x + half) >> e);
}
int8_t Add64(int x1, int x2, const tsp::Int8AddParams& p) {
  const int64_t a = RoundAway(Srdhm64(int64_t(x1 - p.zp1) * (1 << 20), p.m1), p.rshift1);
  const int64_t b = RoundAway(Srdhm64(int64_t(x2 - p.zp2) * (1 << 20), p.m2), p.rshift2);
  const int64_t raw = RoundAway(Srdhm64(a + b, p.m_out), p.rshift_out) + p.zp_out;
  return int8_t(std::min<int64_t>(std::max<int64_t>(raw, p.act_min), p.act_max));
}

void TestScalarAdd(std::mt19937& rng) {
  tsp::Int8AddParams p;
  // Equal scales: out = x1 + x2 (zero points 0), exactly.
  CHECK(tsp::MakeInt8AddParams(0.1f, 0, 0.1f, 0, 0.1f, 0, -128, 127, &p), "equal scales");
  int bad = 0;
  for (int a = -128; a < 128; ++a) {
    for (int b = -128; b < 128; ++b) bad += tsp::Int8Add(a, b, p) != std::clamp(a + b, -128, 127);
  }
  CHECK(bad == 0, "equal scales: %d sums wrong", bad);
  // s_out = 2 s: out = (x1 + x2) / 2 rounded half away from zero (double
  // rounding's ties; single rounding would round -0.5 to 0).
  CHECK(tsp::MakeInt8AddParams(0.25f, 3, 0.25f, -5, 0.5f, 7, -128, 127, &p), "s_out = 2s");
  bad = 0;
  for (int a = -128; a < 128; ++a) {
    for (int b = -128; b < 128; ++b) {
      const int s = (a - 3) + (b + 5);
      const int half = s >= 0 ? (s + 1) / 2 : -((-s + 1) / 2);
      bad += tsp::Int8Add(a, b, p) != std::clamp(half + 7, -128, 127);
    }
  }
  CHECK(bad == 0, "s_out = 2s: %d halves wrong", bad);
  // The dyadic case of tests/test_int8_delegate.py (s 1/64, 1/32, 1/32) and
  // random scales, zero points and ranges: every (x1, x2) pair against the
  // int64 formula.
  std::uniform_real_distribution<double> e(-8.0, 0.0);
  std::uniform_int_distribution<int> zp(-128, 127);
  int sets = 0, ok_sets = 0;
  for (int t = 0; t < 40; ++t) {
    float s1 = 1.0f / 64, s2 = 1.0f / 32, so = 1.0f / 32;
    int z1 = 0, z2 = 0, zo = 0, lo = -128, hi = 127;
    if (t > 0) {
      s1 = float(std::exp2(e(rng)));
      s2 = float(std::exp2(e(rng)));
      so = float(std::exp2(e(rng)));
      z1 = zp(rng);
      z2 = zp(rng);
      zo = zp(rng);
      if (t % 3 == 1) lo = zo;  // RELU
      if (t % 3 == 2) lo = std::max(-128, zo - 30), hi = std::min(127, zo + 30);
    }
    ++sets;
    if (!tsp::MakeInt8AddParams(s1, z1, s2, z2, so, zo, lo, hi, &p)) continue;
    ++ok_sets;
    bad = 0;
    for (int a = -128; a < 128; ++a) {
      for (int b = -128; b < 128; ++b) bad += tsp::Int8Add(a, b, p) != Add64(a, b, p);
    }
    CHECK(bad == 0, "set %d: %d elements differ from the int64 formula", t, bad);
  }
  CHECK(ok_sets > 30, "only %d of %d parameter sets accepted", ok_sets, sets);
  // A multiplier not below one (s_out tiny) is refused, as a scale <= 0.
  CHECK(!tsp::MakeInt8AddParams(1.0f, 0, 1.0f, 0, 1e-7f, 0, -128, 127, &p), "s_out tiny");
  CHECK(!tsp::MakeInt8AddParams(0.0f, 0, 1.0f, 0, 1.0f, 0, -128, 127, &p), "scale 0");
}

int g_row_runs = 0;
int64_t g_row_elements = 0;

// Every path's add_row against the scalar Int8AddRow: parameter sets from
// MakeInt8AddParams and raw ones (any multiplier in [0, 2^31), every shift
// 0..31 at each of the three stages, zero points at -128 / 127), inputs
// biased to -128 / 127, lengths not multiples of the vector step, in place
// and not; some sets over every (x1, x2) pair.
void TestAddRowPaths(std::mt19937& rng) {
  std::uniform_int_distribution<int> x8(-128, 127), pick(0, 1 << 30), sh(0, 31);
  std::uniform_int_distribution<int32_t> mult(0, INT32_MAX);
  std::uniform_real_distribution<double> e(-8.0, 0.0);
  const int zps[] = {-128, 127, 0, 1, -1};
  auto zp = [&]() { return pick(rng) % 2 ? zps[pick(rng) % 5] : x8(rng); };
  for (int t = 0; t < 400; ++t) {
    tsp::Int8AddParams p;
    if (t % 2 == 0) {
      const float s1 = float(std::exp2(e(rng))), s2 = float(std::exp2(e(rng)));
      const float so = float(std::exp2(e(rng)));
      const int zo = zp();
      int lo = -128, hi = 127;
      if (t % 3 == 1) lo = zo;
      if (t % 3 == 2) lo = std::max(-128, zo - 30), hi = std::min(127, zo + 30);
      if (!tsp::MakeInt8AddParams(s1, zp(), s2, zp(), so, zo, lo, hi, &p)) continue;
    } else {
      p.zp1 = zp();
      p.zp2 = zp();
      p.zp_out = zp();
      const int32_t edge[] = {0, 1, INT32_MAX, 1 << 30, (1 << 30) + 1};
      p.m1 = pick(rng) % 4 ? mult(rng) : edge[pick(rng) % 5];
      p.m2 = pick(rng) % 4 ? mult(rng) : edge[pick(rng) % 5];
      p.m_out = pick(rng) % 4 ? mult(rng) : edge[pick(rng) % 5];
      // each stage's shift over 0..31 in turn, the others random
      p.rshift1 = t % 3 == 0 ? (t / 3) % 32 : sh(rng);
      p.rshift2 = t % 3 == 1 ? (t / 3) % 32 : sh(rng);
      p.rshift_out = t % 3 == 2 ? (t / 3) % 32 : sh(rng);
      p.act_min = x8(rng);
      p.act_max = std::max(p.act_min, x8(rng));
      if (t % 5 == 0) p.act_min = -128, p.act_max = 127;
    }
    // Every 16th set: every (x1, x2) pair; else a short random row.
    const bool grid = t % 16 == 0;
    const int64_t count = grid ? 65536 : 1 + pick(rng) % 300;
    std::vector<int8_t> a(static_cast<size_t>(count)), b(a), want(a);
    for (int64_t i = 0; i < count; ++i) {
      const int r = pick(rng) % 8;
      a[size_t(i)] = int8_t(grid ? i / 256 - 128 : r == 0 ? -128 : r == 1 ? 127 : x8(rng));
      b[size_t(i)] = int8_t(grid ? i % 256 - 128 : r == 2 ? -128 : r == 3 ? 127 : x8(rng));
    }
    tsp::Int8AddRow(a.data(), b.data(), want.data(), count, p);
    for (const tsp::Int8KernelSet* ks : Int8Paths()) {
      CHECK(ks->add_row != nullptr, "path %s has no add_row", ks->name);
      if (ks->add_row == nullptr) continue;
      for (bool in_place : {false, true}) {
        std::vector<int8_t> out = a;
        if (!in_place) std::fill(out.begin(), out.end(), int8_t(0x5a));
        ks->add_row(in_place ? out.data() : a.data(), b.data(), out.data(), count, p);
        int64_t d = -1;
        for (int64_t i = 0; i < count && d < 0; ++i) d = out[size_t(i)] != want[size_t(i)] ? i : -1;
        CHECK(d < 0,
              "add_row %s set %d (m %d %d %d, rshift %d %d %d, zp %d %d %d) in_place %d: element "
              "%lld of %lld: %d + %d = %d, scalar %d",
              ks->name, t, p.m1, p.m2, p.m_out, p.rshift1, p.rshift2, p.rshift_out, p.zp1, p.zp2,
              p.zp_out, int(in_place), (long long)d, (long long)count, d < 0 ? 0 : a[size_t(d)],
              d < 0 ? 0 : b[size_t(d)], d < 0 ? 0 : out[size_t(d)], d < 0 ? 0 : want[size_t(d)]);
        ++g_row_runs;
        g_row_elements += count;
      }
    }
  }
  // The requantization the vector ADD runs (each path's requant) at SRDHM's
  // saturation case a = b = INT32_MIN and around it, every right shift 0..31:
  // the ADD's own values never reach it (|(x - zp) << 20| < 2^28), so it is
  // checked here directly, as the ADD applies it (no left shift, one shift
  // for all lanes).
  for (const tsp::Int8KernelSet* ks : Int8Paths()) {
    constexpr int kCount = 16;
    for (int r = 0; r < 32; ++r) {
      int32_t acc[kCount], m[kCount], l[kCount], rs[kCount], mask[kCount], got[kCount];
      for (int i = 0; i < kCount; ++i) {
        acc[i] = i % 2 ? INT32_MIN : (i % 4 == 0 ? INT32_MIN + 1 : INT32_MAX);
        m[i] = i % 3 ? INT32_MIN : (i % 4 == 0 ? INT32_MAX : INT32_MIN + 1);
        l[i] = 0;
        rs[i] = r;
        mask[i] = int32_t((int64_t(1) << r) - 1);
      }
      ks->requant(acc, m, l, rs, mask, kCount, got);
      for (int i = 0; i < kCount; ++i) {
        const int32_t want = tsp::RoundingDivideByPOT(
            tsp::SaturatingRoundingDoublingHighMul(acc[i], m[i]), r);
        CHECK(got[i] == want, "requant %s: SRDHM(%d, %d) >> %d = %d, scalar %d", ks->name,
              acc[i], m[i], r, got[i], want);
      }
    }
  }
}

int g_fused_runs = 0;
int64_t g_fused_outputs = 0, g_fused_unclamped = 0;

void TestFusedConvAdd(std::mt19937& rng, tsp::ThreadPool* pool2) {
  std::uniform_int_distribution<int> pick(0, 1 << 30), x8(-128, 127), wd(-127, 127);
  std::uniform_real_distribution<double> ud(0.0, 1.0), e(-6.0, 0.0);
  for (int it = 0; it < 40; ++it) {
    const int n = tsp::kBlockSizes[pick(rng) % 4];
    tsp::ConvGeometry g;
    g.batch = 1 + pick(rng) % 2;
    g.in_h = 1 + pick(rng) % 10;
    g.in_w = 1 + pick(rng) % 10;
    g.cin = 1 + pick(rng) % 40;
    g.cout = n * (1 + pick(rng) % 3);
    g.kh = g.kw = (pick(rng) % 2) ? 3 : 1;
    g.stride_h = g.stride_w = 1 + pick(rng) % 2;
    g.dil_h = g.dil_w = 1;
    const bool same = pick(rng) % 2 == 0;
    auto pad = same ? tsp::ComputeSamePadding : tsp::ComputeValidPadding;
    pad(g.in_h, g.kh, g.stride_h, 1, &g.out_h, &g.pad_top);
    pad(g.in_w, g.kw, g.stride_w, 1, &g.out_w, &g.pad_left);
    g.min_parallel_macs = 0.0;
    if (g.out_h <= 0 || g.out_w <= 0) continue;
    const int taps = g.kh * g.kw;
    const double sparsity = ud(rng) * 0.9;
    std::vector<int8_t> filter(size_t(g.cout) * taps * g.cin);
    for (auto& w : filter) w = int8_t(wd(rng));
    for (int r = 0; r < g.cout / n; ++r) {
      for (int ci = 0; ci < g.cin; ++ci) {
        if (ud(rng) >= sparsity) continue;
        for (int j = 0; j < n; ++j) {
          for (int t = 0; t < taps; ++t) filter[(size_t(r * n + j) * taps + t) * g.cin + ci] = 0;
        }
      }
    }
    // The convolution: no activation (what fuses), outputs spread over int8.
    tsp::Int8ConvParams q;
    q.input_zero_point = x8(rng);
    q.output_zero_point = x8(rng) / 2;
    std::vector<int32_t> bias(size_t(g.cout));
    q.multiplier.resize(size_t(g.cout));
    q.shift.resize(size_t(g.cout));
    const double typical = 60.0 * std::sqrt(double(taps * g.cin)) * 100.0 + 1.0;
    for (int o = 0; o < g.cout; ++o) {
      bias[size_t(o)] = x8(rng) * 64;
      tsp::QuantizeMultiplier(40.0 / typical * std::exp2(ud(rng) * 2 - 1), &q.multiplier[size_t(o)],
                              &q.shift[size_t(o)]);
    }
    tsp::PackedFilterInt8 pf;
    std::string err;
    CHECK(tsp::PackFilterInt8(filter.data(), bias.data(), g.cout, g.kh, g.kw, g.cin, n, q, &pf, &err),
          "pack: %s", err.c_str());
    // The ADD: random scales, zero points and activation (none, RELU, band).
    tsp::Int8AddParams ap;
    const int zo = x8(rng);
    int lo = -128, hi = 127;
    if (it % 3 == 1) lo = zo;
    if (it % 3 == 2) lo = std::max(-128, zo - 40), hi = std::min(127, zo + 40);
    // s_out from 0.7 to 2.8 times the larger input scale: most sums in range.
    const float s1 = float(std::exp2(e(rng))), s2 = float(std::exp2(e(rng)));
    const float so = std::max(s1, s2) * float(std::exp2(ud(rng) * 2 - 0.5));
    const bool made =
        tsp::MakeInt8AddParams(s1, q.output_zero_point, s2, x8(rng), so, zo, lo, hi, &ap);
    CHECK(made, "add params");
    if (!made) continue;
    std::vector<int8_t> input(size_t(g.batch) * g.in_h * g.in_w * g.cin);
    for (auto& v : input) v = int8_t(x8(rng));
    const size_t count = size_t(g.pixels()) * g.cout;
    std::vector<int8_t> residual(count), conv(count), want(count);
    for (auto& v : residual) v = int8_t(x8(rng));
    tsp::ReferenceConvInt8(g, input.data(), filter.data(), bias.data(), q, conv.data());
    tsp::Int8AddRow(conv.data(), residual.data(), want.data(), int64_t(count), ap);
    int spread = 0;
    for (size_t i = 0; i < count; ++i) spread += want[i] != lo && want[i] != hi;
    tsp::ConvPlan plan;
    tsp::PrepareConvPlanInt8(g, pf, &plan);
    std::vector<tsp::ConvScratchInt8> scratch(2);
    for (auto& s : scratch) s.Reserve(pf.taps, pf.cout());
    for (const tsp::Int8KernelSet* ks : Int8Paths()) {
      for (int variant = 0; variant < 3; ++variant) {
        std::vector<int8_t> out(count, int8_t(0x5a));
        tsp::RunSparseConvInt8(g, pf, *ks, input.data(), out.data(), scratch.data(),
                               variant == 2 ? pool2 : nullptr, variant == 0 ? nullptr : &plan,
                               residual.data(), &ap);
        long d = -1;
        for (size_t i = 0; i < count && d < 0; ++i) d = out[i] != want[i] ? long(i) : -1;
        CHECK(d < 0, "fused ADD %d (%dx%dx%d->%d k%d N%d) path %s variant %d: output %ld = %d, "
              "reference %d", it, g.in_h, g.in_w, g.cin, g.cout, g.kh, n, ks->name, variant, d,
              d < 0 ? 0 : out[size_t(d)], d < 0 ? 0 : want[size_t(d)]);
        ++g_fused_runs;
      }
    }
    g_fused_outputs += int64_t(count);
    g_fused_unclamped += spread;
  }
  // The outputs spread over the int8 range (not a test of clamping alone).
  CHECK(g_fused_unclamped * 5 > g_fused_outputs, "fused ADD: %lld of %lld outputs unclamped",
        (long long)g_fused_unclamped, (long long)g_fused_outputs);
}

}  // namespace

void TestInt8Add(std::mt19937& rng, tsp::ThreadPool* pool2) {
  TestScalarAdd(rng);
  TestAddRowPaths(rng);
  TestFusedConvAdd(rng, pool2);
  std::printf("int8 ADD: scalar formula checks, %d add_row runs (%lld elements) bit-exact with "
              "the scalar ADD on every path, %d fused conv + ADD runs compared bit-exact "
              "(%lld outputs, %.0f%% strictly inside the ADD's activation range)\n",
              g_row_runs, (long long)g_row_elements, g_fused_runs, (long long)g_fused_outputs,
              100.0 * double(g_fused_unclamped) / double(std::max<int64_t>(1, g_fused_outputs)));
}
