// What this binary was compiled with, reported by the `build_info` op of each extension
// (awq-kernels doctor and the recipe's test phase read it).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#define AWQ_STRINGIFY_(...) #__VA_ARGS__
#define AWQ_STRINGIFY(...) AWQ_STRINGIFY_(__VA_ARGS__)

namespace awq {

inline std::string build_info() {
  std::string info = "cuda_runtime=" + std::to_string(CUDART_VERSION / 1000) + "." +
                     std::to_string((CUDART_VERSION % 1000) / 10);
#ifdef AWQ_KERNELS_ARCH_LIST
  info += ";archs=" AWQ_STRINGIFY(AWQ_KERNELS_ARCH_LIST);
#endif
#ifdef ENABLE_BF16
  info += ";bf16=1";
#else
  info += ";bf16=0";
#endif
#ifdef AWQ_KERNELS_SM90A
  info += ";sm90a=1";  // wgmma kernels built (compute capability 9.0 SASS is sm_90a)
#else
  info += ";sm90a=0";
#endif
  return info;
}

}  // namespace awq
