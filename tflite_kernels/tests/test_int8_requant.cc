// Requantization: QuantizeMultiplier, the scalar double- and single-rounding
// formulas against independent formulations and hand-computed values, and
// every vector path's requantizations (both forms) against the scalar ones
// (random and edge-case accumulators, multipliers and shifts). Bit-exact: no
// tolerance anywhere.
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <limits>

#include "int8_test_util.h"
#include "qrequant.h"

namespace {

constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kMax = std::numeric_limits<int32_t>::max();

// SRDHM as floor((ab + 2^30) / 2^31) (the ties-up form; an arithmetic shift
// of an int64 floors), MIN x MIN saturated.
int32_t SrdhmFloorForm(int32_t a, int32_t b) {
  if (a == kMin && b == kMin) return kMax;
  return int32_t((int64_t(a) * b + (int64_t(1) << 30)) >> 31);
}

// x / 2^e rounded half away from zero, on magnitudes.
int32_t RoundHalfAwayPot(int32_t x, int e) {
  if (e == 0) return x;
  const int64_t mag = x < 0 ? -int64_t(x) : int64_t(x);
  const int64_t q = (mag + (int64_t(1) << (e - 1))) >> e;
  return int32_t(x < 0 ? -q : q);
}

// Single rounding as round(x * m / 2^t) with ties upward, by exact 128-bit
// floor division: floor((2 * x * m + 2^t) / 2^(t + 1)); low 32 bits.
int32_t SingleRoundingExact(int32_t x, int32_t m, int shift) {
  const int t = 31 - shift;
  const __int128 num = __int128(x) * m * 2 + (__int128(1) << t);
  const __int128 den = __int128(1) << (t + 1);
  __int128 q = num / den;
  if (num % den != 0 && num < 0) --q;  // floor
  return int32_t(uint32_t(static_cast<unsigned __int128>(q)));
}

}  // namespace

void TestQuantizeMultiplier(std::mt19937& rng) {
  struct Case {
    double x;
    int32_t m;
    int shift;
  };
  const Case cases[] = {
      {0.0, 0, 0},
      {0.5, 1 << 30, 0},
      {1.0, 1 << 30, 1},
      {0.75, 1610612736, 0},
      {3.0, 1610612736, 2},
      {std::ldexp(1.0, -32), 1 << 30, -31},  // the smallest shift kept
      {std::ldexp(1.0, -33), 0, 0},          // shift -32: every bit shifted out
      {1.0 - std::ldexp(1.0, -40), 1 << 30, 1},  // rounds to 2^31: halved, shift + 1
      {std::ldexp(1.0, 29), 1 << 30, 30},
  };
  for (const Case& c : cases) {
    int32_t m = -1;
    int shift = 99;
    tsp::QuantizeMultiplier(c.x, &m, &shift);
    CHECK(m == c.m && shift == c.shift, "QuantizeMultiplier(%.17g) = (%d, %d), want (%d, %d)", c.x,
          m, shift, c.m, c.shift);
  }
  // Random: m in [2^30, 2^31), within half a unit of the last place.
  std::uniform_real_distribution<double> ud(-31.0, 30.0);
  int bad = 0;
  for (int i = 0; i < 10000; ++i) {
    const double x = std::exp2(ud(rng));
    int32_t m;
    int shift;
    tsp::QuantizeMultiplier(x, &m, &shift);
    const double back = std::ldexp(double(m), shift - 31);
    if (m < (1 << 30) || std::fabs(back - x) > std::ldexp(0.5, shift - 31)) ++bad;
  }
  CHECK(bad == 0, "QuantizeMultiplier: %d of 10000 random multipliers off", bad);
}

void TestScalarRequantFormulas(std::mt19937& rng) {
  // Hand-computed values.
  CHECK(tsp::SaturatingRoundingDoublingHighMul(kMin, kMin) == kMax, "SRDHM(MIN, MIN)");
  CHECK(tsp::SaturatingRoundingDoublingHighMul(kMin, kMax) == -2147483647, "SRDHM(MIN, MAX)");
  CHECK(tsp::SaturatingRoundingDoublingHighMul(-3, 1 << 30) == -1, "SRDHM(-3, 2^30): -1.5 -> -1");
  CHECK(tsp::SaturatingRoundingDoublingHighMul(3, 1 << 30) == 2, "SRDHM(3, 2^30): 1.5 -> 2");
  CHECK(tsp::SaturatingRoundingDoublingHighMul(-2, 1 << 30) == -1, "SRDHM(-2, 2^30)");
  const int32_t pot[][3] = {{-3, 1, -2}, {3, 1, 2},   {-5, 2, -1}, {-6, 2, -2}, {5, 2, 1},
                            {6, 2, 2},   {-1, 1, -1}, {1, 1, 1},   {kMin, 31, -1},
                            {kMax, 31, 1}, {-(1 << 30), 31, -1}, {1 << 30, 31, 1},
                            {(1 << 30) - 1, 31, 0}, {kMin, 1, kMin / 2}, {7, 0, 7}};
  for (const auto& c : pot) {
    CHECK(tsp::RoundingDivideByPOT(c[0], c[1]) == c[2], "RoundingDivideByPOT(%d, %d) = %d, want %d",
          c[0], c[1], tsp::RoundingDivideByPOT(c[0], c[1]), c[2]);
  }
  CHECK(tsp::MultiplyByQuantizedMultiplier(100, 1 << 30, 0) == 50, "MBQM(100, 0.5)");
  CHECK(tsp::MultiplyByQuantizedMultiplier(-6, 1 << 30, -1) == -2, "MBQM(-6, 0.25): -1.5 -> -2");
  CHECK(tsp::MultiplyByQuantizedMultiplier(-3, 1 << 30, 1) == -3, "MBQM(-3, 1.0)");
  // Double rounding: 5 * 0.25 = 1.25, but 2.5 rounds up to 3 first, then 1.5 to 2.
  CHECK(tsp::MultiplyByQuantizedMultiplier(5, 1 << 30, -1) == 2, "MBQM(5, 0.25) double rounding");
  CHECK(tsp::MultiplyByQuantizedMultiplier(-5, 1 << 30, -1) == -1, "MBQM(-5, 0.25)");
  // The wrap of the left shift (TFLite's int32 x * (1 << shift)).
  CHECK(tsp::MultiplyByQuantizedMultiplier(1 << 30, 1 << 30, 2) == 0, "MBQM left shift wraps");
  // Independent formulations, random and near the edges.
  std::uniform_int_distribution<int32_t> any(kMin, kMax);
  std::uniform_int_distribution<int> e31(0, 31);
  int bad_srdhm = 0, bad_pot = 0;
  for (int i = 0; i < 200000; ++i) {
    int32_t a = any(rng), b = any(rng);
    if (i % 4 == 1) a = kMin + (a & 7);
    if (i % 4 == 2) b = kMax - (b & 7);
    if (i % 8 == 3) a = b = kMin;
    bad_srdhm += tsp::SaturatingRoundingDoublingHighMul(a, b) != SrdhmFloorForm(a, b);
    const int e = e31(rng);
    int32_t x = any(rng);
    if (i % 3 == 0 && e > 0) {  // a tie, where it fits
      const int64_t tie = (int64_t(x % 65536) * 2 + 1) * (int64_t(1) << (e - 1));
      if (tie >= kMin && tie <= kMax) x = int32_t(tie);
    }
    if (i % 7 == 0) x = i % 2 ? kMin : kMax;
    bad_pot += tsp::RoundingDivideByPOT(x, e) != RoundHalfAwayPot(x, e);
  }
  CHECK(bad_srdhm == 0, "SRDHM vs floor((ab + 2^30) / 2^31): %d mismatches", bad_srdhm);
  CHECK(bad_pot == 0, "RoundingDivideByPOT vs round-half-away: %d mismatches", bad_pot);
}

void TestScalarSingleRounding(std::mt19937& rng) {
  // Hand-computed values: single rounding, ties upward.
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(100, 1 << 30, 0) == 50, "MBQMS(100, 0.5)");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(5, 1 << 30, -1) == 1, "MBQMS(5, 0.25)");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(-5, 1 << 30, -1) == -1, "MBQMS(-5, 0.25)");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(6, 1 << 30, -1) == 2, "MBQMS(6, 0.25) tie up");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(-6, 1 << 30, -1) == -1, "MBQMS(-6, 0.25) tie up");
  CHECK(tsp::MultiplyByQuantizedMultiplier(-6, 1 << 30, -1) == -2, "MBQM(-6, 0.25) double");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(-3, 1 << 30, 1) == -3, "MBQMS(-3, 1.0)");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(-25079, 1939978760, -8) == -88,
        "MBQMS(-25079, 1939978760, -8) (docs: single -88)");
  CHECK(tsp::MultiplyByQuantizedMultiplier(-25079, 1939978760, -8) == -89,
        "MBQM(-25079, 1939978760, -8) (docs: double -89)");
  // (2^62 + 2^61) >> 62 = 1; (2^62 + 2^0) >> 1 = 2^61 (low 32 bits 0).
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(kMin, kMin, -31) == 1, "MBQMS(MIN, MIN, -31)");
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(kMin, kMin, 30) == 0, "MBQMS(MIN, MIN, 30)");
  // 2^60 >> 29 = 2^31: the int32 cast keeps the low 32 bits, INT32_MIN.
  CHECK(tsp::MultiplyByQuantizedMultiplierSingle(1 << 30, 1 << 30, 2) == kMin,
        "MBQMS(2^30, 2^30, 2) wraps");
  CHECK(tsp::MultiplyByQuantizedMultiplier(5, 1 << 30, -1, true) == 1 &&
            tsp::MultiplyByQuantizedMultiplier(5, 1 << 30, -1, false) == 2,
        "MBQM(..., single_rounding) picks the form");
  // Independent formulation (128-bit exact), random and at the edges.
  std::uniform_int_distribution<int32_t> any(kMin, kMax);
  std::uniform_int_distribution<int> sh(-31, 30);
  int bad = 0;
  for (int i = 0; i < 200000; ++i) {
    int32_t x = any(rng), m = any(rng);
    const int s = sh(rng);
    if (i % 4 == 1) x = kMin + (x & 7);
    if (i % 4 == 2) m = kMax - (m & 7);
    if (i % 8 == 3) x = m = kMin;
    if (i % 8 == 5) x >>= 16;
    bad += tsp::MultiplyByQuantizedMultiplierSingle(x, m, s) != SingleRoundingExact(x, m, s);
  }
  CHECK(bad == 0, "single rounding vs exact 128-bit rounding: %d mismatches", bad);
}

namespace {

// Runs fn over (acc, m, shift) triples in batches of 8 and compares with the
// scalar function; returns the mismatches, printing the first few.
int CompareRequant(const char* path, tsp::Int8RequantFn fn, const std::vector<int32_t>& acc,
                   const std::vector<int32_t>& mult, const std::vector<int>& shift) {
  const size_t n = (acc.size() + 7) / 8 * 8;
  std::vector<int32_t> a(n, 0), m(n, 0), l(n, 0), r(n, 0), mask(n, 0), out(n, 0);
  for (size_t i = 0; i < acc.size(); ++i) {
    a[i] = acc[i];
    m[i] = mult[i];
    l[i] = shift[i] > 0 ? shift[i] : 0;
    r[i] = shift[i] > 0 ? 0 : -shift[i];
    mask[i] = int32_t((int64_t(1) << r[i]) - 1);
  }
  fn(a.data(), m.data(), l.data(), r.data(), mask.data(), int(n), out.data());
  int bad = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    const int32_t want = tsp::MultiplyByQuantizedMultiplier(acc[i], mult[i], shift[i]);
    if (out[i] != want && ++bad <= 5) {
      std::printf("  %s: MBQM(%d, %d, %d) = %d, want %d\n", path, acc[i], mult[i], shift[i],
                  out[i], want);
    }
  }
  return bad;
}

// The same for a single-rounding requantization (total = 31 - shift).
int CompareRequantSingle(const char* path, tsp::Int8RequantSingleFn fn,
                         const std::vector<int32_t>& acc, const std::vector<int32_t>& mult,
                         const std::vector<int>& shift) {
  const size_t n = (acc.size() + 7) / 8 * 8;
  std::vector<int32_t> a(n, 0), m(n, 0), t(n, 31), out(n, 0);
  for (size_t i = 0; i < acc.size(); ++i) {
    a[i] = acc[i];
    m[i] = mult[i];
    t[i] = 31 - shift[i];
  }
  fn(a.data(), m.data(), t.data(), int(n), out.data());
  int bad = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    const int32_t want = tsp::MultiplyByQuantizedMultiplierSingle(acc[i], mult[i], shift[i]);
    if (out[i] != want && ++bad <= 5) {
      std::printf("  %s: MBQM single(%d, %d, %d) = %d, want %d\n", path, acc[i], mult[i],
                  shift[i], out[i], want);
    }
  }
  return bad;
}

}  // namespace

void TestVectorRequant(std::mt19937& rng) {
  std::vector<int32_t> acc, mult;
  std::vector<int> shift;
  auto add = [&](int32_t a, int32_t m, int s) {
    acc.push_back(a);
    mult.push_back(m);
    shift.push_back(s);
  };
  // Edge cases: every shift from -31 to 30 with extreme accumulators and
  // multipliers (those QuantizeMultiplier produces, [2^30, 2^31), and any int32).
  const int32_t accs[] = {kMin,        kMin + 1,     kMin + 2,  -(1 << 30) - 1, -(1 << 30),
                          -(1 << 30) + 1, -65537,    -65536,    -3,             -2,
                          -1,          0,            1,         2,              3,
                          65535,       (1 << 30) - 1, 1 << 30,  (1 << 30) + 1,  kMax - 1,
                          kMax};
  const int32_t mults[] = {0,          1,          -1,        1 << 30,  (1 << 30) + 1,
                           kMax,       kMax - 1,   kMin,      kMin + 1, 1518500250,
                           1073741823, 2147483000};
  for (int s = -31; s <= 30; ++s) {
    for (int32_t a : accs) {
      for (int32_t m : mults) add(a, m, s);
    }
  }
  // Ties of RoundingDivideByPOT: with m = INT32_MAX the SRDHM returns x
  // itself for |x| < 2^30, so x = +-(2q + 1) * 2^(e - 1) reaches the rounding
  // divide as an exact tie; with m = 2^30 it halves (ties upward) first.
  int ties = 0;
  for (int e = 1; e <= 31; ++e) {
    for (int q = 0; q < 6; ++q) {
      const int64_t x = (2 * int64_t(q) + 1) << (e - 1);
      if (x >= (int64_t(1) << 30)) break;
      for (int sign : {-1, 1}) {
        const int32_t xs = int32_t(sign * x);
        CHECK(tsp::SaturatingRoundingDoublingHighMul(xs, kMax) == xs, "tie setup %d", xs);
        add(xs, kMax, -e);
        add(xs, 1 << 30, -e);
        // Single rounding's ties: x * 2^30 = (2q + 1) * 2^(total - 1) at
        // shift 1 - e (total = 30 + e).
        add(xs, 1 << 30, 1 - e);
        ++ties;
      }
    }
  }
  // Random: accumulators over the whole range and small ones, multipliers of
  // QuantizeMultiplier's range and arbitrary, shifts from -31 to 30.
  std::uniform_int_distribution<int32_t> any(kMin, kMax);
  std::uniform_int_distribution<int32_t> small(-100000, 100000);
  std::uniform_int_distribution<int32_t> qm(1 << 30, kMax);
  std::uniform_int_distribution<int> sh(-31, 30);
  for (int i = 0; i < 200000; ++i) {
    add(i % 2 ? any(rng) : small(rng), i % 5 ? qm(rng) : any(rng), sh(rng));
  }
  std::printf("requantization: %zu cases (%d exact ties) per path and rounding\n", acc.size(),
              ties);
  for (const tsp::Int8KernelSet* ks : Int8Paths()) {
    const int bad = CompareRequant(ks->name, ks->requant, acc, mult, shift);
    CHECK(bad == 0, "path %s: requantization differs from the scalar in %d cases", ks->name, bad);
    if (ks->requant_n4 != ks->requant) {
      const int bad4 = CompareRequant(ks->name, ks->requant_n4, acc, mult, shift);
      CHECK(bad4 == 0, "path %s (N=4): requantization differs in %d cases", ks->name, bad4);
    }
    const int bad_s = CompareRequantSingle(ks->name, ks->requant_single, acc, mult, shift);
    CHECK(bad_s == 0, "path %s: single-rounding requantization differs from the scalar in %d cases",
          ks->name, bad_s);
    if (ks->requant_single_n4 != ks->requant_single) {
      const int bad_s4 = CompareRequantSingle(ks->name, ks->requant_single_n4, acc, mult, shift);
      CHECK(bad_s4 == 0, "path %s (N=4): single-rounding requantization differs in %d cases",
            ks->name, bad_s4);
    }
  }
}
