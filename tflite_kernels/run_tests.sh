#!/usr/bin/env bash
# C++ tests of the 1xN delegate's packing and micro-kernels (float, and int8
# bit-exact with TFLite's reference kernels: test_int8):
#   1. host build (x86-64: scalar, AVX2+FMA and AVX-512 paths, as the CPU allows)
#   2. aarch64 cross build (NEON path) run under qemu-aarch64
# Installs the Debian packages g++-aarch64-linux-gnu and qemu-user if missing.
# TSP_SKIP_CROSS=1 skips step 2 (it is reported, never counted as a pass).
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd .. && pwd)"
BUILD="$ROOT/build/native-tests"
JOBS="${JOBS:-$(nproc)}"

echo "== tflite_kernels: host build and tests"
cmake -S . -B "$BUILD/host" -DCMAKE_BUILD_TYPE=Release -DTSP_BUILD_TESTS=ON >/dev/null
cmake --build "$BUILD/host" -j "$JOBS" >/dev/null
(cd "$BUILD/host" && ctest --output-on-failure)

if [ "${TSP_SKIP_CROSS:-0}" = "1" ]; then
  echo "== tflite_kernels: aarch64/NEON tests SKIPPED (TSP_SKIP_CROSS=1)"
  exit 0
fi

if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "== installing g++-aarch64-linux-gnu and qemu-user (Debian packages)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q g++-aarch64-linux-gnu qemu-user >/dev/null
fi

echo "== tflite_kernels: aarch64 cross build, NEON tests under qemu-aarch64"
cmake -S . -B "$BUILD/aarch64" -DCMAKE_BUILD_TYPE=Release -DTSP_BUILD_TESTS=ON \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" >/dev/null
cmake --build "$BUILD/aarch64" -j "$JOBS" >/dev/null
(cd "$BUILD/aarch64" && ctest --output-on-failure)
# The NEON path must have been among those tested.
qemu-aarch64 -L /usr/aarch64-linux-gnu "$BUILD/aarch64/test_kernels" 7 | grep -q "paths: scalar neon" \
  || { echo "NEON path missing from the aarch64 build"; exit 1; }
qemu-aarch64 -L /usr/aarch64-linux-gnu "$BUILD/aarch64/test_int8" 7 | grep -q "int8 paths: scalar neon" \
  || { echo "NEON int8 path missing from the aarch64 build"; exit 1; }
echo "== tflite_kernels: all native tests passed"
