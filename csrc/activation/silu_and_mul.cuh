// SwiGLU gate: out[t, j] = silu(x[t, j]) * x[t, d + j] with silu(g) = g / (1 + exp(-g)), all in
// fp32 and rounded once (the original rounds silu to T before the product).
//
// Memory-bound: a grid of (tokens, column blocks); each thread handles one vector of VEC
// elements (16 bytes when vectorized) of the gate half, the matching vector of the "up" half and
// one output vector.
#pragma once

#include "common/cuda_utils.cuh"

namespace awq {

template <typename T, int VEC>
__global__ void silu_and_mul_kernel(const T* __restrict__ input, T* __restrict__ out, int64_t d) {
  using V = Vec<T, VEC>;
  const int64_t token = blockIdx.x;
  const int64_t col = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * VEC;
  if (col >= d) return;
  const V gate = *reinterpret_cast<const V*>(input + token * 2 * d + col);
  const V up = *reinterpret_cast<const V*>(input + token * 2 * d + d + col);
  V y;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const float g = to_float(gate.v[j]);
    y.v[j] = from_float<T>(g / (1.f + expf(-g)) * to_float(up.v[j]));
  }
  *reinterpret_cast<V*>(out + token * d + col) = y;
}

}  // namespace awq
