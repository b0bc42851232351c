// Portable scalar int8 path: plain int32 arithmetic (compiled without
// auto-vectorisation), its requantizations the scalar ones of qrequant.h.
#include <algorithm>
#include <cstdint>

#include "int8_conv.h"
#include "qrequant.h"

namespace {

struct ScalarInt8Traits {
  static constexpr int kOut = 1;
  using acc = int32_t;
  struct wreg {
    int32_t w0, w1;
  };
  struct xreg {
    int32_t x0, x1;
  };
  static acc load32(const int32_t* p) { return *p; }
  static void store32(int32_t* p, acc v) { *p = v; }
  static wreg loadw(const int8_t* p) { return {p[0], p[1]}; }
  static xreg pair(const int8_t* a, const int8_t* b) { return {*a, *b}; }
  static acc madd(acc a, xreg x, wreg w) {
    return int32_t(uint32_t(a) + uint32_t(w.w0 * x.x0 + w.w1 * x.x1));
  }
  static acc rshift_param(const int32_t* p) { return *p; }
  static acc requant(acc x, acc m, acc l, acc r, acc /*rmask*/) {
    return tsp::MultiplyByQuantizedMultiplierSplit(x, m, l, r);
  }
  static acc total_param(const int32_t* p) { return *p; }
  static acc requant_single(acc x, acc m, acc total) {
    return tsp::MultiplyByQuantizedMultiplierSingleTotal(x, m, total);
  }
  static acc splat(int32_t v) { return v; }
  static acc add(acc a, acc b) { return int32_t(uint32_t(a) + uint32_t(b)); }
  static acc max(acc a, acc b) { return std::max(a, b); }
  static acc min(acc a, acc b) { return std::min(a, b); }
  template <int G>
  static void narrow_store(int8_t* out, const acc (&v)[G]) {
    for (int g = 0; g < G; ++g) out[g] = int8_t(v[g]);
  }
};

#include "ukernel_int8_impl.h"

tsp::Int8KernelSet MakeScalarInt8() {
  tsp::Int8KernelSet ks;
  ks.name = "scalar";
  ks.by_n[0] = MakeInt8UKernel<ScalarInt8Traits, 4, 4>();
  ks.by_n[1] = MakeInt8UKernel<ScalarInt8Traits, 8, 4>();
  ks.by_n[2] = MakeInt8UKernel<ScalarInt8Traits, 16, 2>();
  ks.by_n[3] = MakeInt8UKernel<ScalarInt8Traits, 32, 1>();
  ks.requant = &Int8RequantArray<ScalarInt8Traits>;
  ks.requant_n4 = ks.requant;
  ks.requant_single = &Int8RequantSingleArray<ScalarInt8Traits>;
  ks.requant_single_n4 = ks.requant_single;
  ks.add_row = &tsp::Int8AddRow;  // the reference itself
  return ks;
}

}  // namespace

namespace tsp {
const Int8KernelSet* ScalarKernelsInt8() {
  static const Int8KernelSet ks = MakeScalarInt8();
  return &ks;
}
}  // namespace tsp
