// int8 API checks: what PackFilterInt8 refuses, and which paths dispatch
// offers on this CPU.
#include <string>
#include <vector>

#include "int8_test_util.h"

void TestPackRejects() {
  std::vector<int8_t> f(16 * 3, 1);
  tsp::Int8ConvParams q;
  q.multiplier.assign(16, 1 << 30);
  q.shift.assign(16, 0);
  tsp::PackedFilterInt8 pf;
  std::string err;
  CHECK(!tsp::PackFilterInt8(f.data(), nullptr, 16, 1, 1, 3, 12, q, &pf, &err), "N=12 accepted");
  CHECK(!tsp::PackFilterInt8(f.data(), nullptr, 16, 1, 1, 3, 32, q, &pf, &err), "32 !| 16");
  q.shift[3] = 31;
  CHECK(!tsp::PackFilterInt8(f.data(), nullptr, 16, 1, 1, 3, 16, q, &pf, &err), "shift 31");
  q.shift[3] = 0;
  q.act_min = 10;
  q.act_max = 5;
  CHECK(!tsp::PackFilterInt8(f.data(), nullptr, 16, 1, 1, 3, 16, q, &pf, &err), "act range");
  q.act_min = -128;
  q.act_max = 127;
  err.clear();
  CHECK(tsp::PackFilterInt8(f.data(), nullptr, 16, 1, 1, 3, 16, q, &pf, &err) && err.empty() &&
            pf.row_ptr.back() == 4 && pf.kept_blocks == 3,
        "3 kept channels -> 4 entries: %s", err.c_str());
}

void TestDispatch() {
  CHECK(tsp::SelectKernelsInt8("scalar") == tsp::ScalarKernelsInt8(), "scalar");
  CHECK(tsp::SelectKernelsInt8("bogus") == nullptr, "unknown isa");
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  CHECK((tsp::Avx2KernelsInt8() != nullptr) == avx2, "AVX2 int8 offered iff AVX2+FMA");
  CHECK(std::string(tsp::SelectKernelsInt8("auto")->name) == (avx2 ? "avx2" : "scalar"), "auto");
  CHECK(tsp::NeonKernelsInt8() == nullptr, "no NEON on x86");
#elif defined(__aarch64__)
  CHECK(tsp::NeonKernelsInt8() != nullptr && tsp::SelectKernelsInt8("auto") == tsp::NeonKernelsInt8(),
        "auto is NEON on aarch64");
#endif
  for (const tsp::Int8KernelSet* ks : Int8Paths()) {
    for (int n : {4, 8, 16, 32}) CHECK(ks->ForN(n) != nullptr, "%s lacks N=%d", ks->name, n);
    CHECK(ks->ForN(2) == nullptr, "N=2");
  }
}
