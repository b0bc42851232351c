// Run-time selection of the int8 micro-kernel path (baseline flags, like
// dispatch.cc, whose CPU checks it reuses).
#include <string>

#include "int8_conv.h"

namespace tsp {

const Int8UKernel* Int8KernelSet::ForN(int n) const {
  switch (n) {
    case 4: return by_n[0].rows ? &by_n[0] : nullptr;
    case 8: return by_n[1].rows ? &by_n[1] : nullptr;
    case 16: return by_n[2].rows ? &by_n[2] : nullptr;
    case 32: return by_n[3].rows ? &by_n[3] : nullptr;
    default: return nullptr;
  }
}

#if defined(__x86_64__) && defined(TSP_HAVE_X86_PATHS)
// ukernels_int8_avx2.cc, compiled for AVX2: called only on a CPU that has it
// (the float AVX2 path's check: AVX2 and FMA).
const Int8KernelSet* Avx2KernelsInt8Unchecked();
const Int8KernelSet* Avx2KernelsInt8() {
  static const Int8KernelSet* ks = Avx2Kernels() != nullptr ? Avx2KernelsInt8Unchecked() : nullptr;
  return ks;
}
#else
const Int8KernelSet* Avx2KernelsInt8() { return nullptr; }
#endif
#if !(defined(__aarch64__) && defined(TSP_HAVE_NEON_PATH))
const Int8KernelSet* NeonKernelsInt8() { return nullptr; }
#endif

const Int8KernelSet* SelectKernelsInt8(const std::string& isa) {
  if (isa == "scalar") return ScalarKernelsInt8();
  if (isa == "avx2") return Avx2KernelsInt8();
  // No AVX-512 int8 kernels yet: an AVX-512 CPU runs the AVX2 ones.
  if (isa == "avx512") return Avx512Kernels() != nullptr ? Avx2KernelsInt8() : nullptr;
  if (isa == "neon") return NeonKernelsInt8();
  if (isa != "auto" && !isa.empty()) return nullptr;
  if (Avx2KernelsInt8() != nullptr) return Avx2KernelsInt8();
  if (NeonKernelsInt8() != nullptr) return NeonKernelsInt8();
  return ScalarKernelsInt8();
}

}  // namespace tsp
