// Shared pieces of the per-token int8 quantizers (invoke_quant, rms_norm_general, gelu_and_quant).
//
// Layout: one row (token) per group of blockDim.x threads, blockDim.y rows per block (see
// common/row_layout.h); each thread owns the vectors threadIdx.x + k*blockDim.x of its row, keeps
// the first ITEMS of them in registers across the row reductions and re-reads the rest (from L2).
// Threads of rows past the end still join every reduction, so no shuffle runs with a partial
// warp whatever the hidden size.
//
// Speed: these kernels are memory-bound only if they stay cheap in instructions (an H100 must
// retire ~4 elements per SM clock to keep up with DRAM for a 16-bit row in, int8 out). So the
// cache may hold fp32 values that the kernel updates in place between passes (x, then x - mean,
// then y), each element is converted and each expensive function evaluated once, and the codes
// are packed with byte permutes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cuda_utils.cuh"

namespace awq {

// The PTX conversion the original uses: round half to even, saturate to [-128, 127], NaN -> 0.
// The code is in the low byte of the result.
__device__ __forceinline__ uint32_t int8_rn_sat_bits(float x) {
  uint32_t code;
  asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(code) : "f"(x));
  return code;
}

__device__ __forceinline__ int8_t int8_rn_sat(float x) { return static_cast<int8_t>(int8_rn_sat_bits(x)); }

// Stores int8_rn_sat of VEC scaled values as one access of VEC bytes (`dst` aligned to VEC), packed
// four to a word with three byte permutes per word.
template <int VEC>
__device__ __forceinline__ void store_int8_rn_sat(Vec<int8_t, VEC>* dst, const float (&scaled)[VEC]) {
  if constexpr (VEC % 4 == 0) {
    Vec<uint32_t, VEC / 4> words;
#pragma unroll
    for (int w = 0; w < VEC / 4; ++w) {
      const uint32_t lo = __byte_perm(int8_rn_sat_bits(scaled[4 * w]), int8_rn_sat_bits(scaled[4 * w + 1]), 0x0040);
      const uint32_t hi =
          __byte_perm(int8_rn_sat_bits(scaled[4 * w + 2]), int8_rn_sat_bits(scaled[4 * w + 3]), 0x0040);
      words.v[w] = __byte_perm(lo, hi, 0x5410);
    }
    static_assert(sizeof(words) == sizeof(*dst) && alignof(decltype(words)) == alignof(Vec<int8_t, VEC>));
    *reinterpret_cast<Vec<uint32_t, VEC / 4>*>(dst) = words;
  } else {
    Vec<int8_t, VEC> q;
#pragma unroll
    for (int j = 0; j < VEC; ++j) q.v[j] = int8_rn_sat(scaled[j]);
    *dst = q;
  }
}

// max_i |fp32(T(y_i))| of fp32 values y_i, without converting back: the maximum is taken on
// packed pairs of T (rounding is monotone, so this is exact). NaN is ignored like fmaxf.
template <typename T>
struct RoundedAbsMax {
  float acc = 0.f;
  __device__ __forceinline__ void add(float a) { acc = fmaxf(acc, fabsf(a)); }
  __device__ __forceinline__ void add(float a, float b) { acc = fmaxf(acc, fmaxf(fabsf(a), fabsf(b))); }
  __device__ __forceinline__ float value() const { return acc; }
};
template <>
struct RoundedAbsMax<half> {
  __half2 acc = __float2half2_rn(0.f);
  __device__ __forceinline__ void add(float a) { acc = __hmax2(acc, __habs2(__float2half2_rn(a))); }
  __device__ __forceinline__ void add(float a, float b) { acc = __hmax2(acc, __habs2(__floats2half2_rn(a, b))); }
  __device__ __forceinline__ float value() const { return fmaxf(__low2float(acc), __high2float(acc)); }
};
template <>
struct RoundedAbsMax<__nv_bfloat16> {
  __nv_bfloat162 acc = __float2bfloat162_rn(0.f);
  __device__ __forceinline__ void add(float a) { acc = __hmax2(acc, __habs2(__float2bfloat162_rn(a))); }
  __device__ __forceinline__ void add(float a, float b) {
    acc = __hmax2(acc, __habs2(__floats2bfloat162_rn(a, b)));
  }
  __device__ __forceinline__ float value() const { return fmaxf(__low2float(acc), __high2float(acc)); }
};

template <typename T, int VEC>
__device__ __forceinline__ void add_rounded_abs(RoundedAbsMax<T>& m, const float (&y)[VEC]) {
#pragma unroll
  for (int j = 0; j + 1 < VEC; j += 2) m.add(y[j], y[j + 1]);
  if constexpr (VEC % 2 == 1) m.add(y[VEC - 1]);
}

// fp32 values of a vector. bf16 pairs are widened with one shift or mask each (to_float on an
// element extracts its half first: two instructions for the high one). By value: the vector is
// loaded as one access, never read piecewise from global memory.
template <typename T, int VEC>
__device__ __forceinline__ void to_float(const Vec<T, VEC> v, float (&out)[VEC]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> && VEC % 2 == 0) {
#pragma unroll
    for (int j = 0; j < VEC; j += 2) {
      uint32_t pair;
      memcpy(&pair, &v.v[j], sizeof(pair));
      out[j] = __uint_as_float(pair << 16);
      out[j + 1] = __uint_as_float(pair & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = to_float(v.v[j]);
  }
}

// This thread's vectors of one row. `load(idx, V&)` produces vector idx as the kernel's current
// pass sees it (reading global memory); the first ITEMS are produced once, kept in registers and
// may be updated in place by for_each, so a kernel that does so must make `load` return the
// updated value for the rest (they are produced again on every pass).
template <typename S, int VEC, int ITEMS, typename Load>
struct RowCache {
  using V = Vec<S, VEC>;
  Load load;
  int nvec;
  bool active;
  V cache[ITEMS];

  __device__ __forceinline__ RowCache(Load load_vec, int hidden, bool row_active)
      : load(load_vec), nvec(hidden / VEC), active(row_active) {
    if (fully_cached()) {
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) load(threadIdx.x + i * blockDim.x, cache[i]);
    } else {
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int idx = threadIdx.x + i * blockDim.x;
        if (active && idx < nvec) load(idx, cache[i]);
      }
    }
  }

  // Every cached vector is in the row (the usual case: then the passes need no per-vector test
  // or branch). Uniform over the row's threads.
  __device__ __forceinline__ bool fully_cached() const {
    return active && nvec >= ITEMS * static_cast<int>(blockDim.x);
  }

  // f(vector index in the row, V& vector) over this thread's share of the row.
  template <typename F>
  __device__ __forceinline__ void for_each(F&& f) {
    if (fully_cached()) {
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) f(threadIdx.x + i * blockDim.x, cache[i]);
    } else {
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int idx = threadIdx.x + i * blockDim.x;
        if (active && idx < nvec) f(idx, cache[i]);
      }
    }
    for (int idx = threadIdx.x + ITEMS * blockDim.x; active && idx < nvec; idx += blockDim.x) {
      V v;
      load(idx, v);
      f(idx, v);
    }
  }
};

template <typename S, int VEC, int ITEMS, typename Load>
__device__ __forceinline__ RowCache<S, VEC, ITEMS, Load> make_row_cache(Load load, int hidden, bool active) {
  return RowCache<S, VEC, ITEMS, Load>(load, hidden, active);
}

// The per-token ending shared by invoke_quant and gelu_and_quant. `amax` is this thread's part of
// the row's max |value|: writes scale[row] = fp16(amax / 127) and the codes
// int8_rn_sat(value * 127 / amax) (the fp32 amax, not the rounded scale, as the original). Threads of
// rows past the end take part in the reduction, then return.
template <typename S, int VEC, int ITEMS, typename Load>
__device__ __forceinline__ void store_per_token_codes(RowCache<S, VEC, ITEMS, Load>& values, float amax, int64_t row,
                                                      int64_t rows, int hidden, half* __restrict__ scale,
                                                      int8_t* __restrict__ out) {
  __shared__ float partials[32];  // the reduction's, one float per warp (no later barrier)
  amax = row_max(amax, partials);
  if (row >= rows) return;
  if (threadIdx.x == 0) scale[row] = __float2half_rn(amax / 127.f);
  const float inv_scale = 127.f / amax;
  Vec<int8_t, VEC>* out_row = reinterpret_cast<Vec<int8_t, VEC>*>(out + row * hidden);
  values.for_each([&](int idx, const Vec<S, VEC>& v) {
    float scaled[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) scaled[j] = to_float(v.v[j]) * inv_scale;
    store_int8_rn_sat(out_row + idx, scaled);
  });
}

}  // namespace awq
