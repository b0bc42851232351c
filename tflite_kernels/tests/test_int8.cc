// int8 1xN sparse convolution: packing, and every path (scalar, AVX2, NEON;
// with and without a plan, with a pool of 2) BIT-EXACT against TFLite's
// reference ConvPerChannel / FullyConnectedPerChannel (int8_reference.cc),
// with double rounding (TFLite's CONV_2D) and single rounding (its
// FULLY_CONNECTED), plus the requantization tests (test_int8_requant.cc).
// Plain main(), ctest.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "int8_test_util.h"
#include "qrequant.h"
#include "thread_pool.h"

int g_failures = 0;
int g_checks = 0;

std::vector<const tsp::Int8KernelSet*> Int8Paths() {
  std::vector<const tsp::Int8KernelSet*> paths;
  for (const tsp::Int8KernelSet* ks :
       {tsp::ScalarKernelsInt8(), tsp::Avx2KernelsInt8(), tsp::NeonKernelsInt8()}) {
    if (ks != nullptr) paths.push_back(ks);
  }
  return paths;
}

namespace {

int g_convs = 0;  // layer x path x variant runs compared
int g_single_runs = 0;  // of which with single rounding
int64_t g_outputs = 0, g_unclamped = 0;
int g_channels = 0, g_positive_shifts = 0;  // output channels generated, with a shift > 0
int g_shift_lo = 99, g_shift_hi = -99;  // reference outputs, those strictly inside the clamp

struct Config {
  int batch, in_h, in_w, cin, cout, kh, kw, stride, dil, n;
  bool same;
  double sparsity;
  int zp_in, zp_out;  // 999: random
  int act;            // 0 none, 1 relu [zp_out, 127], 2 relu6-like, 3 narrow band
  bool full_range_weights;  // weights in [-128, 127] instead of [-127, 127]
};

std::string Describe(const Config& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "b%d %dx%dx%d->%d k%dx%d s%d d%d N%d %s sp%.2f zp%d/%d act%d%s",
                c.batch, c.in_h, c.in_w, c.cin, c.cout, c.kh, c.kw, c.stride, c.dil, c.n,
                c.same ? "SAME" : "VALID", c.sparsity, c.zp_in, c.zp_out, c.act,
                c.full_range_weights ? " w-128" : "");
  return buf;
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
  auto pad = c.same ? tsp::ComputeSamePadding : tsp::ComputeValidPadding;
  pad(c.in_h, c.kh, c.stride, c.dil, &g.out_h, &g.pad_top);
  pad(c.in_w, c.kw, c.stride, c.dil, &g.out_w, &g.pad_left);
  g.min_parallel_macs = 0.0;  // exercise the pool on small layers too
  return g;
}

// Random OHWI filter whose zeros form 1xN blocks at about the given
// sparsity; every 8th output channel has small weights (|w| <= 2), so that
// multipliers >= 1 (positive shifts) give outputs inside the int8 range.
std::vector<int8_t> MakeFilter(const Config& c, std::mt19937& rng) {
  const int taps = c.kh * c.kw;
  std::vector<int8_t> f(size_t(c.cout) * taps * c.cin);
  std::uniform_int_distribution<int> w(c.full_range_weights ? -128 : -127, 127);
  std::uniform_int_distribution<int> small(-2, 2);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  for (size_t i = 0; i < f.size(); ++i) {
    const bool tiny = (i / (size_t(taps) * c.cin)) % 8 == 7;
    f[i] = int8_t(tiny ? small(rng) : w(rng));
  }
  for (int r = 0; r < c.cout / c.n; ++r) {
    for (int ci = 0; ci < c.cin; ++ci) {
      if (c.sparsity < 1.0 && ud(rng) >= c.sparsity) continue;
      for (int j = 0; j < c.n; ++j) {
        for (int t = 0; t < taps; ++t) f[(size_t(r * c.n + j) * taps + t) * c.cin + ci] = 0;
      }
    }
  }
  return f;
}

// Random output stage and bias. Per channel, the multiplier scales the
// accumulator's typical size (the weights' norm times the inputs' spread
// about zp_in, plus the bias) to ~40 within a factor 4 either way, so most
// outputs are not clamped; every 16th channel takes a multiplier from 2^-17 to
// 2^2 regardless (saturation). Small-weight channels get small biases (and
// the left shifts: shifts come out about -16..+7).
tsp::Int8ConvParams MakeParams(const Config& c, const std::vector<int8_t>& filter,
                               std::vector<int32_t>* bias, std::mt19937& rng) {
  std::uniform_int_distribution<int> zp(-128, 127);
  tsp::Int8ConvParams q;
  q.input_zero_point = c.zp_in == 999 ? zp(rng) : c.zp_in;
  q.output_zero_point = c.zp_out == 999 ? zp(rng) : c.zp_out;
  const int z = q.output_zero_point;
  switch (c.act) {
    case 1: q.act_min = z; break;
    case 2: q.act_min = z; q.act_max = std::min(127, z + 60); break;
    case 3: q.act_min = std::max(-128, z - 20); q.act_max = std::min(127, z + 20); break;
    default: break;
  }
  const int taps = c.kh * c.kw;
  std::uniform_real_distribution<double> factor(-2.0, 2.0), wild(-17.0, 2.0);
  std::uniform_int_distribution<int32_t> big(-(1 << 14), 1 << 14), tiny(-16, 16);
  const double xspread = std::sqrt(5461.0 + (q.input_zero_point + 0.5) * (q.input_zero_point + 0.5));
  bias->resize(size_t(c.cout));
  q.multiplier.resize(size_t(c.cout));
  q.shift.resize(size_t(c.cout));
  for (int o = 0; o < c.cout; ++o) {
    (*bias)[size_t(o)] = o % 8 == 7 ? tiny(rng) : big(rng);
    double w2 = 0.0;
    for (size_t i = size_t(o) * taps * c.cin; i < size_t(o + 1) * taps * c.cin; ++i) {
      w2 += double(filter[i]) * filter[i];
    }
    const double typical = std::sqrt(w2) * xspread + std::fabs(double((*bias)[size_t(o)])) + 1.0;
    const double scale = o % 16 == 3 ? std::exp2(wild(rng)) : 40.0 / typical * std::exp2(factor(rng));
    tsp::QuantizeMultiplier(scale, &q.multiplier[size_t(o)], &q.shift[size_t(o)]);
    g_positive_shifts += q.shift[size_t(o)] > 0;
    g_shift_lo = std::min(g_shift_lo, q.shift[size_t(o)]);
    g_shift_hi = std::max(g_shift_hi, q.shift[size_t(o)]);
    ++g_channels;
  }
  return q;
}

// First differing index, or -1.
long FirstDiff(const std::vector<int8_t>& a, const std::vector<int8_t>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return long(i);
  }
  return -1;
}

void CheckPacking(const Config& c, const std::string& name, const std::vector<int8_t>& filter,
                  const std::vector<int32_t>& bias, const tsp::Int8ConvParams& q,
                  const tsp::PackedFilterInt8& pf) {
  const int taps = c.kh * c.kw;
  CHECK(tsp::UnpackFilterInt8(pf) == filter, "unpack(pack(W)) != W for %s", name.c_str());
  int64_t kept = 0;
  for (int r = 0; r < pf.rows; ++r) {
    const int e0 = pf.row_ptr[r], ne = pf.row_ptr[r + 1] - e0;
    CHECK(ne % 2 == 0, "row %d of %s: %d entries (odd)", r, name.c_str(), ne);
    int distinct = 0;
    for (int j = 0; j < ne; ++j) distinct += (j == 0 || pf.idx[e0 + j] > pf.idx[e0 + j - 1]);
    kept += distinct;
    CHECK(ne == distinct + distinct % 2, "row %d of %s: %d entries, %d channels", r, name.c_str(),
          ne, distinct);
  }
  CHECK(kept == pf.kept_blocks, "kept blocks %lld vs %lld", (long long)kept,
        (long long)pf.kept_blocks);
  CHECK(reinterpret_cast<uintptr_t>(pf.w.get()) % 64 == 0, "weights not 64-byte aligned");
  int bad_bias = 0;
  for (int o = 0; o < c.cout; ++o) {
    int64_t sum = 0;
    for (size_t i = size_t(o) * taps * c.cin; i < size_t(o + 1) * taps * c.cin; ++i) sum += filter[i];
    bad_bias += int64_t(pf.bias[o]) != int64_t(bias[size_t(o)]) - q.input_zero_point * sum;
  }
  CHECK(bad_bias == 0, "%s: %d folded biases wrong", name.c_str(), bad_bias);
  bool pad_ok = true;
  for (int i = 0; i < c.cin; ++i) pad_ok = pad_ok && pf.pad_row[i] == int8_t(q.input_zero_point);
  CHECK(pad_ok, "%s: pad row is not zp_in", name.c_str());
}

void RunConfig(const Config& c, bool single, std::mt19937& rng, tsp::ThreadPool* pool2) {
  const std::string name = Describe(c) + (single ? " single" : "");
  const tsp::ConvGeometry g = Geometry(c);
  if (g.out_h <= 0 || g.out_w <= 0) return;
  const std::vector<int8_t> filter = MakeFilter(c, rng);
  std::vector<int32_t> bias;
  tsp::Int8ConvParams q = MakeParams(c, filter, &bias, rng);
  q.single_rounding = single;
  std::uniform_int_distribution<int> xd(-128, 127);
  std::vector<int8_t> input(size_t(c.batch) * c.in_h * c.in_w * c.cin);
  for (auto& v : input) v = int8_t(xd(rng));

  tsp::PackedFilterInt8 pf;
  std::string err;
  const bool packed =
      tsp::PackFilterInt8(filter.data(), bias.data(), c.cout, c.kh, c.kw, c.cin, c.n, q, &pf, &err);
  CHECK(packed, "pack %s: %s", name.c_str(), err.c_str());
  if (!packed) return;
  CheckPacking(c, name, filter, bias, q, pf);
  CHECK(pf.single_rounding == single && pf.requant().single_rounding == single,
        "%s: rounding mode not packed", name.c_str());

  std::vector<int8_t> ref(size_t(g.pixels()) * c.cout);
  tsp::ReferenceConvInt8(g, input.data(), filter.data(), bias.data(), q, ref.data());
  if (c.sparsity >= 1.0) {  // no kept channel: every pixel is the requantized bias
    int bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const int o = int(i % size_t(c.cout));
      int32_t v = tsp::MultiplyByQuantizedMultiplier(bias[size_t(o)], q.multiplier[size_t(o)],
                                                     q.shift[size_t(o)], single);
      v = std::min(std::max(v + q.output_zero_point, q.act_min), q.act_max);
      bad += ref[i] != int8_t(v);
    }
    CHECK(bad == 0 && pf.kept_blocks == 0, "%s: empty rows are not the bias alone", name.c_str());
  }
  for (int8_t v : ref) g_unclamped += v != q.act_min && v != q.act_max;
  g_outputs += int64_t(ref.size());
  tsp::ConvPlan plan;
  tsp::PrepareConvPlanInt8(g, pf, &plan);
  CHECK(plan.valid, "plan not built for %s", name.c_str());
  std::vector<tsp::ConvScratchInt8> scratch(2);
  for (auto& s : scratch) s.Reserve(pf.taps, pf.cout());
  for (const tsp::Int8KernelSet* ks : Int8Paths()) {
    for (int variant = 0; variant < 3; ++variant) {
      // 0: per-tap pointers only, 1 thread; 1: plan, 1 thread; 2: plan, pool of 2.
      std::vector<int8_t> out(ref.size(), int8_t(0x5a));
      tsp::RunSparseConvInt8(g, pf, *ks, input.data(), out.data(), scratch.data(),
                             variant == 2 ? pool2 : nullptr, variant == 0 ? nullptr : &plan);
      const long d = FirstDiff(out, ref);
      CHECK(d < 0, "%s path %s variant %d: output %ld (pixel %ld ch %ld) = %d, reference %d",
            name.c_str(), ks->name, variant, d, d / c.cout, d % c.cout, d < 0 ? 0 : out[size_t(d)],
            d < 0 ? 0 : ref[size_t(d)]);
      ++g_convs;
      g_single_runs += single;
    }
  }
}

// FULLY_CONNECTED: the per-channel reference, the 1x1 convolution reference
// over the same M rows, and every path (ConvGeometry 1 x M). single: single
// rounding (TFLite's FULLY_CONNECTED), else double.
void RunFullyConnected(int m, int cin, int cout, int n, double sparsity, bool single,
                       std::mt19937& rng, tsp::ThreadPool* pool2) {
  Config c{1, 1, m, cin, cout, 1, 1, 1, 1, n, false, sparsity, 999, 999, 1, false};
  const std::string name = "FC " + Describe(c) + (single ? " single" : "");
  const std::vector<int8_t> filter = MakeFilter(c, rng);
  std::vector<int32_t> bias;
  tsp::Int8ConvParams q = MakeParams(c, filter, &bias, rng);
  // Multipliers from scales, as TFLite computes them (per-channel filter scales).
  std::vector<float> fs(static_cast<size_t>(cout));
  std::uniform_real_distribution<float> sd(0.001f, 0.05f);
  for (auto& s : fs) s = sd(rng);
  tsp::PerChannelMultipliers(0.02f, fs.data(), cout, 0.1f, cout, &q);
  q.single_rounding = single;
  std::uniform_int_distribution<int> xd(-128, 127);
  std::vector<int8_t> input(size_t(m) * cin);
  for (auto& v : input) v = int8_t(xd(rng));
  std::vector<int8_t> ref(size_t(m) * cout), ref_conv(ref.size());
  tsp::ReferenceFullyConnectedInt8(input.data(), m, cin, filter.data(), bias.data(), cout, q,
                                   ref.data());
  const tsp::ConvGeometry g = Geometry(c);
  tsp::ReferenceConvInt8(g, input.data(), filter.data(), bias.data(), q, ref_conv.data());
  CHECK(ref == ref_conv, "%s: FC reference != 1x1 conv reference", name.c_str());
  tsp::PackedFilterInt8 pf;
  std::string err;
  CHECK(tsp::PackFilterInt8(filter.data(), bias.data(), cout, 1, 1, cin, n, q, &pf, &err), "%s",
        err.c_str());
  std::vector<tsp::ConvScratchInt8> scratch(2);
  for (auto& s : scratch) s.Reserve(1, cout);
  for (const tsp::Int8KernelSet* ks : Int8Paths()) {
    for (tsp::ThreadPool* pool : {static_cast<tsp::ThreadPool*>(nullptr), pool2}) {
      std::vector<int8_t> out(ref.size(), int8_t(0x5a));
      tsp::RunSparseConvInt8(g, pf, *ks, input.data(), out.data(), scratch.data(), pool);
      const long d = FirstDiff(out, ref);
      CHECK(d < 0, "%s path %s: output %ld = %d, reference %d", name.c_str(), ks->name, d,
            d < 0 ? 0 : out[size_t(d)], d < 0 ? 0 : ref[size_t(d)]);
      ++g_convs;
      g_single_runs += single;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned seed = argc > 1 ? unsigned(std::strtoul(argv[1], nullptr, 10)) : 1234u;
  std::mt19937 rng(seed);
  std::printf("int8 paths:");
  for (auto* ks : Int8Paths()) std::printf(" %s", ks->name);
  std::printf("\n");
  tsp::ThreadPool pool2(2);
  TestDispatch();
  TestQuantizeMultiplier(rng);
  TestScalarRequantFormulas(rng);
  TestScalarSingleRounding(rng);
  TestVectorRequant(rng);
  TestPackRejects();

  constexpr int R = 999;  // random zero point
  std::vector<Config> configs = {
      {1, 5, 7, 13, 16, 1, 1, 1, 1, 16, true, 0.5, R, R, 0, false},     // 1x1, cin 13
      {2, 9, 9, 17, 32, 3, 3, 1, 1, 16, true, 0.5, -128, 127, 1, false},  // 3x3 s1, batch 2, relu
      {1, 11, 10, 7, 48, 3, 3, 2, 1, 16, true, 0.9, 127, -128, 0, false},  // 3x3 s2
      {2, 10, 10, 9, 32, 3, 3, 1, 2, 8, true, 0.5, R, R, 2, false},      // dilation 2
      {1, 9, 8, 6, 16, 3, 3, 2, 2, 4, false, 0.5, R, R, 1, false},       // VALID s2 d2
      {1, 8, 8, 33, 64, 3, 3, 1, 1, 32, false, 0.0, R, R, 3, false},     // VALID, dense
      {1, 6, 6, 5, 16, 3, 3, 1, 1, 16, true, 1.0, R, R, 0, false},       // every row empty
      {2, 6, 7, 21, 32, 3, 3, 1, 1, 16, true, 1.0, -128, R, 1, false},   // empty, relu
      {1, 1, 37, 33, 64, 1, 1, 1, 1, 16, false, 0.8, R, R, 0, false},    // FC-like rows
      {1, 6, 40, 24, 16, 1, 1, 2, 1, 8, true, 0.5, R, R, 2, false},      // 1x1 stride 2
      {1, 7, 9, 1, 16, 3, 3, 1, 1, 16, true, 0.0, R, R, 0, false},       // cin 1: one pad per row
      {1, 7, 7, 15, 16, 5, 5, 1, 1, 16, true, 0.5, R, R, 0, true},       // 5x5, weights -128
      {1, 12, 12, 96, 64, 3, 3, 1, 1, 16, true, 0.5, R, R, 1, true},     // longer rows
      {1, 6, 6, 640, 64, 3, 3, 1, 1, 16, true, 0.2, R, R, 0, false},     // > 256 KiB: 16-tile chunks
      {1, 3, 7, 1024, 16, 1, 1, 1, 1, 16, true, 0.7, R, R, 0, false},    // C_in 1024
      {1, 4, 40, 24, 32, 3, 3, 1, 1, 32, true, 0.6, R, R, 1, false},     // N=32, long rows of pixels
  };
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  const double sparsities[] = {0.0, 0.5, 0.5, 0.7, 0.9, 0.9, 1.0};
  for (int i = 0; i < 60; ++i) {
    Config c;
    c.n = tsp::kBlockSizes[pick(rng) % 4];
    c.batch = 1 + pick(rng) % 2;
    c.in_h = 1 + pick(rng) % 11;
    c.in_w = 1 + pick(rng) % 11;
    c.cin = 1 + pick(rng) % 40;
    c.cout = c.n * (1 + pick(rng) % 3);
    const int ks[] = {1, 1, 3, 3, 3, 5};
    c.kh = ks[pick(rng) % 6];
    c.kw = (pick(rng) % 4 == 0) ? ks[pick(rng) % 6] : c.kh;
    c.stride = 1 + pick(rng) % 2;
    c.dil = 1 + pick(rng) % 2;
    c.same = pick(rng) % 2 == 0;
    c.sparsity = sparsities[pick(rng) % 7];
    const int zps[] = {-128, 127, 0, R, R};
    c.zp_in = zps[pick(rng) % 5];
    c.zp_out = zps[pick(rng) % 5];
    c.act = pick(rng) % 4;
    c.full_range_weights = pick(rng) % 4 == 0;
    configs.push_back(c);
  }
  // Every layer with double rounding (TFLite's CONV_2D), then with single
  // rounding (new random weights and parameters).
  for (bool single : {false, true}) {
    for (const Config& c : configs) RunConfig(c, single, rng, &pool2);
  }
  int fcs = 0;
  for (bool single : {false, true}) {
    RunFullyConnected(1, 100, 32, 16, 0.5, single, rng, &pool2);
    RunFullyConnected(7, 257, 64, 16, 0.9, single, rng, &pool2);
    RunFullyConnected(33, 64, 48, 8, 0.0, single, rng, &pool2);
    RunFullyConnected(5, 50, 64, 32, 1.0, single, rng, &pool2);
    RunFullyConnected(3, 37, 16, 4, 0.5, single, rng, &pool2);
    RunFullyConnected(2, 1024, 128, 32, 0.8, single, rng, &pool2);
    fcs += 6;
  }
  TestInt8Add(rng, &pool2);  // last: the layers above keep their random streams
  std::printf("%zu layers x 2 roundings + %d FC, %d runs compared bit-exact (%d with single "
              "rounding; %lld outputs per path and variant, %.0f%% strictly inside the "
              "activation range; %d of %d channels with a left shift, shifts %d..%d); %d checks, "
              "%d failures\n",
              configs.size(), fcs, g_convs, g_single_runs,
              (long long)g_outputs,
              100.0 * double(g_unclamped) / double(std::max<int64_t>(1, g_outputs)),
              g_positive_shifts, g_channels, g_shift_lo, g_shift_hi, g_checks,
              g_failures);
  return g_failures == 0 ? 0 : 1;
}
