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

// The sm_90a (Hopper wgmma) kernels can run on `prop`'s GPU: they are compiled in (a 9.0 entry of
// the arch list with CUDA >= 12.0, see build_env.py) and the GPU has compute capability 9.0 exactly
// (sm_90a SASS runs on no other device).
inline bool sm90a_kernels_run_on(const cudaDeviceProp& prop) {
#ifdef AWQ_KERNELS_SM90A
  return prop.major == 9 && prop.minor == 0;
#else
  (void)prop;
  return false;
#endif
}

}  // namespace awq
