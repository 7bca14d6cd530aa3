// W4A16 on CUDA cores (no tensor cores, builds for every arch): the GEMV for few rows, and the
// portable path for any M.
//
// Work split: a CTA owns kRows output rows (n) and kM activation rows (m, blockIdx.z) and one range of
// K (blockIdx.y, the K split). K is cut into 1024-wide slices; a warp takes slices round-robin, and in
// a slice lane l owns the 32 codes k in [slice*1024 + 32l, +32) of each of the kRows rows: one
// 16-byte chunk per row (layouts.cuh), all kRows loads issued before any use. Every 32-code chunk lies
// in one group (G >= 32), so the group's affine map is applied once per chunk:
//   sum_k x[k] * (s*q[k] + off) = s * sum_k x[k]*q[k] + off * sum_k x[k].
// The codes are turned into floats without a conversion instruction: nibble i of a word, masked in
// place and OR-ed into the mantissa of 2^23, is the float 2^23 + q*16^e (e = i, or i - 3 for the upper
// nibbles, taken from the word shifted right by 12 so that every field stays below bit 23); one FADD
// removes 2^23 exactly. The lane's activations are kept in registers pre-multiplied by 16^-e (exact, a
// power of two) and stored in the chunk's nibble order, so each code costs one LOP3, one FADD and one
// FFMA per activation row, all in fp32 with exact products.
// Reduction: per row, lanes by shuffles, then the warps through shared memory in a fixed order; the
// result goes to `out` (cast to T), or with a K split to the fp32 partials [split, M, N] that
// reduce_splits_kernel sums in order (deterministic; no atomics, no semaphores).
#pragma once

#include "common/cuda_utils.cuh"
#include "w4a16/layouts.cuh"

namespace awq {
namespace w4a16 {

constexpr int kGemvWarps = 4;
constexpr int kGemvSlice = 1024;  // K per warp step: 32 lanes x 32 codes

// Nibble i of a word is read at 16^exponent (see above).
__host__ __device__ constexpr int nibble_exponent(int i) { return i <= 4 ? i : i - 3; }

template <typename T, Layout L, int kM, int kRows>
__global__ void __launch_bounds__(kGemvWarps * 32)
    w4a16_gemv_kernel(const T* __restrict__ x, WeightArgs<T> w, T* __restrict__ out, float* __restrict__ partial,
                      int m_total, int k_splits) {
  using Traits = LayoutTraits<L>;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int row0 = blockIdx.x * kRows;
  const int m0 = blockIdx.z * kM;
  const int split = blockIdx.y;
  const int slices = (w.k + kGemvSlice - 1) / kGemvSlice;
  const int slice_begin = static_cast<int>(static_cast<int64_t>(split) * slices / k_splits);
  const int slice_end = static_cast<int>(static_cast<int64_t>(split + 1) * slices / k_splits);

  float acc[kRows][kM];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = 0.f;

  for (int slice = slice_begin + warp; slice < slice_end; slice += kGemvWarps) {
    const int k32 = slice * kGemvSlice + lane * 32;
    if (k32 >= w.k) continue;  // masked K tail (no shuffles inside the loop)

    uint4 codes[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int n = min(row0 + r, w.n - 1);  // rows past N read row N-1 and are not stored
      codes[r] = __ldg(reinterpret_cast<const uint4*>(w.qweight + Traits::chunk_offset(n, k32, w.k)));
    }
    const int g = min(k32 >> w.group_shift, w.groups - 1);
    float scale[kRows], offset[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) Traits::group_affine(w, min(row0 + r, w.n - 1), g, scale[r], offset[r]);

    float xs[kM][32];  // activations of this chunk, in nibble order, times 16^-e
    float xsum[kM];
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      float xf[32];
      const int row = min(m0 + m, m_total - 1);  // rows past M compute garbage that is not stored
      const auto* src = reinterpret_cast<const Vec<T, 8>*>(x + static_cast<int64_t>(row) * w.k + k32);
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const Vec<T, 8> xv = src[v];
#pragma unroll
        for (int e = 0; e < 8; ++e) xf[8 * v + e] = to_float(xv.v[e]);
      }
      xsum[m] = 0.f;
#pragma unroll
      for (int i = 0; i < 32; ++i) xsum[m] += xf[i];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 8; ++i)
          xs[m][8 * j + i] = xf[Traits::k_offset(j, i)] * (1.f / static_cast<float>(1 << (4 * nibble_exponent(i))));
    }

#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float dot[kM];
#pragma unroll
      for (int m = 0; m < kM; ++m) dot[m] = 0.f;
      const uint32_t words[4] = {codes[r].x, codes[r].y, codes[r].z, codes[r].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t upper = words[j] >> 12;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const uint32_t src = i <= 4 ? words[j] : upper;
          const uint32_t field = src & (0xFu << (4 * nibble_exponent(i)));
          const float q = __uint_as_float(field | 0x4B000000u) - 8388608.f;
#pragma unroll
          for (int m = 0; m < kM; ++m) dot[m] = fmaf(q, xs[m][8 * j + i], dot[m]);
        }
      }
#pragma unroll
      for (int m = 0; m < kM; ++m) acc[r][m] += fmaf(scale[r], dot[m], offset[r] * xsum[m]);
    }
  }

  __shared__ float warp_partial[kGemvWarps][kRows][kM];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) warp_partial[warp][r][m] = v;
    }
  __syncthreads();
  if (threadIdx.x < kRows * kM) {
    const int r = threadIdx.x / kM;
    const int m = threadIdx.x % kM;
    float sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kGemvWarps; ++wi) sum += warp_partial[wi][r][m];
    store_result(out, partial, split, k_splits, m0 + m, m_total, row0 + r, w.n, sum);
  }
}

// out[m, n] = sum over splits of partial[split, m, n], in split order.
template <typename T>
__global__ void reduce_splits_kernel(const float* __restrict__ partial, T* __restrict__ out, int64_t elements,
                                     int splits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < elements;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += partial[s * elements + i];
    out[i] = from_float<T>(sum);
  }
}

}  // namespace w4a16
}  // namespace awq
