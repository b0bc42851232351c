// Run-time selection of the micro-kernel path. Compiled with the baseline
// flags of the target, so it runs on any CPU of the architecture.
#include <string>

#include "sparse_conv.h"

namespace tsp {

const UKernel* KernelSet::ForN(int n) const {
  switch (n) {
    case 4: return &by_n[0];
    case 8: return &by_n[1];
    case 16: return &by_n[2];
    case 32: return &by_n[3];
    default: return nullptr;
  }
}

#if !(defined(__x86_64__) && defined(TSP_HAVE_X86_PATHS))
const KernelSet* Avx2Kernels() { return nullptr; }
const KernelSet* Avx512Kernels() { return nullptr; }
#endif
#if !(defined(__aarch64__) && defined(TSP_HAVE_NEON_PATH))
const KernelSet* NeonKernels() { return nullptr; }
#endif

bool CpuSupports(const KernelSet* ks) {
  if (ks == nullptr) return false;
#if defined(__x86_64__) && defined(TSP_HAVE_X86_PATHS)
  __builtin_cpu_init();
  if (ks == Avx512Kernels()) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  if (ks == Avx2Kernels()) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
#endif
  return true;  // scalar, and NEON (part of the aarch64 baseline)
}

const KernelSet* SelectKernels(const std::string& isa) {
  if (isa == "scalar") return ScalarKernels();
  if (isa == "avx2") return CpuSupports(Avx2Kernels()) ? Avx2Kernels() : nullptr;
  if (isa == "avx512") return CpuSupports(Avx512Kernels()) ? Avx512Kernels() : nullptr;
  if (isa == "neon") return CpuSupports(NeonKernels()) ? NeonKernels() : nullptr;
  if (isa != "auto" && !isa.empty()) return nullptr;
  if (CpuSupports(Avx512Kernels())) return Avx512Kernels();
  if (CpuSupports(Avx2Kernels())) return Avx2Kernels();
  if (CpuSupports(NeonKernels())) return NeonKernels();
  return ScalarKernels();
}

}  // namespace tsp
