// Shared pieces of the per-token int8 quantizers (invoke_quant, rms_norm_general, gelu_and_quant).
//
// Layout: one row (token) per group of blockDim.x threads, blockDim.y rows per block (see
// common/row_layout.h); each thread owns the vectors threadIdx.x + k*blockDim.x of its row, keeps
// the first ITEMS of them in registers across the row reductions and re-reads the rest (from L2).
// Threads of rows past the end still join every reduction, so no shuffle runs with a partial
// warp whatever the hidden size.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_utils.cuh"

namespace awq {

// The PTX conversion the original uses: round half to even, saturate to [-128, 127], NaN -> 0.
__device__ __forceinline__ int8_t int8_rn_sat(float x) {
  int32_t code;
  asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(code) : "f"(x));
  return static_cast<int8_t>(code);
}

template <typename T, int VEC, int ITEMS>
struct RowCache {
  using V = Vec<T, VEC>;
  const V* row;
  int nvec;
  bool active;
  V cache[ITEMS];

  __device__ __forceinline__ RowCache(const T* row_start, int hidden, bool row_active)
      : row(reinterpret_cast<const V*>(row_start)), nvec(hidden / VEC), active(row_active) {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const int idx = threadIdx.x + i * blockDim.x;
      if (active && idx < nvec) cache[i] = row[idx];
    }
  }

  // f(vector index in the row, vector) over this thread's share of the row.
  template <typename F>
  __device__ __forceinline__ void for_each(F&& f) const {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const int idx = threadIdx.x + i * blockDim.x;
      if (active && idx < nvec) f(idx, cache[i]);
    }
    for (int idx = threadIdx.x + ITEMS * blockDim.x; active && idx < nvec; idx += blockDim.x) f(idx, row[idx]);
  }
};

}  // namespace awq
