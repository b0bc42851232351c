// Shared by the int8 test sources (one executable, test_int8).
#ifndef TSP_INT8_TEST_UTIL_H_
#define TSP_INT8_TEST_UTIL_H_

#include <cstdio>
#include <random>
#include <vector>

#include "int8_conv.h"

extern int g_failures;
extern int g_checks;

#define CHECK(cond, ...)                               \
  do {                                                 \
    ++g_checks;                                        \
    if (!(cond)) {                                     \
      ++g_failures;                                    \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
    }                                                  \
  } while (0)

// The int8 paths this binary runs on this CPU (scalar first).
std::vector<const tsp::Int8KernelSet*> Int8Paths();

// tests/test_int8_requant.cc
void TestQuantizeMultiplier(std::mt19937& rng);
void TestScalarRequantFormulas(std::mt19937& rng);
void TestScalarSingleRounding(std::mt19937& rng);
void TestVectorRequant(std::mt19937& rng);
// tests/test_int8_api.cc
void TestPackRejects();
void TestDispatch();
// tests/test_int8_add.cc: the fused residual ADD
namespace tsp {
class ThreadPool;
}
void TestInt8Add(std::mt19937& rng, tsp::ThreadPool* pool2);

#endif  // TSP_INT8_TEST_UTIL_H_
