// RMSNorm (T5LayerNorm / LlamaRMSNorm), the math behind llm-awq's misnamed
// `layernorm_forward_cuda`:  y = (x * rsqrt(mean(x^2) + eps)) * gamma, all in fp32.
//
// Memory-bound: each element is read once and written once. A row is spread over
// `blockDim.x` threads ("threads per row", a power of two up to 32 or a multiple of 32) and a
// block holds `blockDim.y` rows, so narrow rows still fill a 256-thread block. Each thread keeps
// up to ITEMS vectors of its row in registers between the reduction and the write; wider rows
// re-read the rest (from L2) instead of failing.
#pragma once

#include "common/cuda_utils.cuh"

namespace awq {

// fp16 outputs are clamped to +-(65504 - 1000) like the original kernel (no inf from a
// large-gamma row); NaN is passed through, never clamped away.
template <typename T>
__device__ __forceinline__ float clamp_for_output(float y) {
  return y;
}
template <>
__device__ __forceinline__ float clamp_for_output<half>(float y) {
  constexpr float kLimit = 65504.f - 1000.f;
  return y > kLimit ? kLimit : (y < -kLimit ? -kLimit : y);
}

template <typename T, int VEC, int ITEMS>
__global__ void rms_norm_kernel(const T* input, const T* __restrict__ gamma, T* out, int64_t rows, int hidden,
                                float eps) {
  using V = Vec<T, VEC>;
  const int threads_per_row = blockDim.x;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  // Inactive rows (past the end) still take part in the shuffles and the barrier.
  const bool active = row < rows;
  const int nvec = hidden / VEC;
  const V* in_row = reinterpret_cast<const V*>(input + row * hidden);
  const V* gamma_v = reinterpret_cast<const V*>(gamma);
  V* out_row = reinterpret_cast<V*>(out + row * hidden);

  V cache[ITEMS];
  float sum_sq = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int idx = threadIdx.x + i * threads_per_row;
    if (active && idx < nvec) {
      cache[i] = in_row[idx];
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float f = to_float(cache[i].v[j]);
        sum_sq += f * f;
      }
    }
  }
  for (int idx = threadIdx.x + ITEMS * threads_per_row; active && idx < nvec; idx += threads_per_row) {
    const V v = in_row[idx];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float f = to_float(v.v[j]);
      sum_sq += f * f;
    }
  }

  sum_sq = row_sum(sum_sq);
  if (!active) return;
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(hidden) + eps);

  auto normalize = [&](const V& x, const V& g) {
    V y;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      y.v[j] = from_float<T>(clamp_for_output<T>((to_float(x.v[j]) * inv_rms) * to_float(g.v[j])));
    }
    return y;
  };
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int idx = threadIdx.x + i * threads_per_row;
    if (idx < nvec) out_row[idx] = normalize(cache[i], gamma_v[idx]);
  }
  for (int idx = threadIdx.x + ITEMS * threads_per_row; idx < nvec; idx += threads_per_row) {
    out_row[idx] = normalize(in_row[idx], gamma_v[idx]);
  }
}

}  // namespace awq
