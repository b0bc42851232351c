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

#if defined(__x86_64__) && defined(TSP_HAVE_X86_PATHS)
// Defined in ukernels_avx2.cc / ukernels_avx512.cc, compiled for those
// instruction sets: even building their static KernelSet may use them (GCC
// initialises it with zmm stores), so they are called only on a CPU that has them.
const KernelSet* Avx2KernelsUnchecked();
const KernelSet* Avx512KernelsUnchecked();

namespace {
bool CpuHasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool CpuHasAvx512() {
  return CpuHasAvx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}
}  // namespace

const KernelSet* Avx2Kernels() {
  static const KernelSet* ks = CpuHasAvx2() ? Avx2KernelsUnchecked() : nullptr;
  return ks;
}
const KernelSet* Avx512Kernels() {
  static const KernelSet* ks = CpuHasAvx512() ? Avx512KernelsUnchecked() : nullptr;
  return ks;
}
#else
const KernelSet* Avx2Kernels() { return nullptr; }
const KernelSet* Avx512Kernels() { return nullptr; }
#endif
#if !(defined(__aarch64__) && defined(TSP_HAVE_NEON_PATH))
const KernelSet* NeonKernels() { return nullptr; }
#endif

// The x86 paths are null on a CPU without their instructions (see above);
// scalar and NEON (part of the aarch64 baseline) always run.
bool CpuSupports(const KernelSet* ks) { return ks != nullptr; }

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
