// Device helpers shared by the kernels: float conversion, aligned vectors, warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace awq {

// Hint to bring the cache line holding `p` (a valid global address) into L2; nothing waits for it.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ half from_float<half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// CTA raster of the tiled GEMMs that keeps the m-side operand in L2: `group` consecutive m tiles
// sweep all n tiles before the next group starts. The tile coordinates of linear CTA index `tile`.
struct TileCoord {
  int m, n;
};
__device__ __forceinline__ TileCoord grouped_tile(int tile, int tiles_m, int tiles_n, int group) {
  const int per_group = group * tiles_n;
  const int first_m = (tile / per_group) * group;
  const int group_m = min(group, tiles_m - first_m);
  return {first_m + (tile % per_group) % group_m, (tile % per_group) / group_m};
}

// Where part `part` of `count` items cut into `parts` contiguous, in-order pieces begins (piece
// sizes differ by at most one); it ends where part + 1 begins.
__device__ __forceinline__ int split_begin(int count, int part, int parts) {
  return static_cast<int>(static_cast<int64_t>(part) * count / parts);
}

// N elements of T loaded or stored as one access (16 bytes for 8 halves).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Sum over groups of `width` consecutive lanes (width a power of two <= 32). Every lane of the
// warp must call it.
__device__ __forceinline__ float warp_sum(float x, int width = 32) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    if (offset < width) x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

__device__ __forceinline__ float warp_max(float x, int width = 32) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    if (offset < width) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}

}  // namespace awq

namespace awq {

// Reductions over one row of a 2-D block: the blockDim.x threads sharing threadIdx.y ("threads
// per row": a power of two <= 32, or a multiple of 32 up to 1024). Every thread of the block must
// call them, including threads whose row is past the end (they contribute the identity); all
// threads of the row get the result. Wider rows combine per-warp partials through shared memory.
struct SumOp {
  static __device__ __forceinline__ float warp(float x, int width) { return warp_sum(x, width); }
  static __device__ __forceinline__ float combine(float a, float b) { return a + b; }
};
struct MaxOp {
  static __device__ __forceinline__ float warp(float x, int width) { return warp_max(x, width); }
  static __device__ __forceinline__ float combine(float a, float b) { return fmaxf(a, b); }
};

// One barrier. `partials` (shared, one float per warp of the block) belongs to this call: a kernel
// with several reductions gives each its own buffer (a buffer may only be written again after a
// later barrier), which saves the second barrier of the self-contained form below.
template <typename Op>
__device__ __forceinline__ float row_reduce(float x, float* partials) {
  const int threads_per_row = blockDim.x;
  x = Op::warp(x, threads_per_row < 32 ? threads_per_row : 32);
  if (threads_per_row > 32) {
    const int warps_per_row = threads_per_row / 32;
    const int first = threadIdx.y * warps_per_row;
    if (threadIdx.x % 32 == 0) partials[first + threadIdx.x / 32] = x;
    __syncthreads();
    x = partials[first];
    for (int w = 1; w < warps_per_row; ++w) x = Op::combine(x, partials[first + w]);
  }
  return x;
}

// Self-contained form: its own buffer, with a barrier before and after, so consecutive calls may
// reuse it.
template <typename Op>
__device__ __forceinline__ float row_reduce(float x) {
  __shared__ float warp_partials[32];  // one per warp of the block (<= 1024 threads)
  x = row_reduce<Op>(x, warp_partials);
  if (blockDim.x > 32) __syncthreads();
  return x;
}

__device__ __forceinline__ float row_sum(float x) { return row_reduce<SumOp>(x); }
__device__ __forceinline__ float row_max(float x) { return row_reduce<MaxOp>(x); }
__device__ __forceinline__ float row_sum(float x, float* partials) { return row_reduce<SumOp>(x, partials); }
__device__ __forceinline__ float row_max(float x, float* partials) { return row_reduce<MaxOp>(x, partials); }

}  // namespace awq
