// The two 4-bit weight layouts of llm-awq, as compile-time traits shared by every W4A16 kernel.
//
// Both describe the same quantized weight W[N, K] (shared/spec/awq-interface.md §2.1):
// 4-bit unsigned codes q[n, k] in [0, 15], and per row n and group g = k / G a scale and a zero.
// Both are read in units of one 16-byte "chunk": the 32 codes of one row n for k in [k32, k32 + 32),
// k32 a multiple of 32. A chunk is four little-endian 32-bit words; nibble i of word j (bits 4i..4i+3)
// holds the code of k = k32 + k_offset(j, i).
//
// Format C, "v2" (TinyChat v2, spec §2.5; `*_new` ops): int16 qweight [N/4, K]. Packed row nb holds
//   the four rows n = 4*nb + r; each 64-wide K block kb of it is 128 bytes: 32 bytes per r, and in
//   them 16 bytes per half h (k = 64*kb + 32*h + o). Inside a half, code o = 8a + 2b + c sits at
//   nibble p = 8b + 4c + a, so word j, nibble i holds o = 8*(i & 3) + 2*j + (i >> 2). Decoded with the
//   nibble-pair order (0,4) (1,5) (2,6) (3,7), word j gives the k pairs (2j, 2j+1), (2j+8, 2j+9),
//   (2j+16, 2j+17), (2j+24, 2j+25): exactly a thread's B fragment of mma.m16n8k16 (k = 2t, 2t+1,
//   2t+8, 2t+9 for t = j) for two consecutive k16 steps. scales and scaled_zeros are [Gp, N] in T:
//   w = q * s[g, n] + sz[g, n].
// Format B, "v1" (TinyChat v1, spec §2.4; `gemm_forward_cuda`, `gemv_forward_cuda`): int32 qweight
//   [N, K/8] with sequential nibbles (word c, nibble i holds k = 8c + i); int32 qzeros [N, Zw] packed
//   the same way along the groups; scales [N, Gp] in T: w = s[n, g] * (q - z[n, g]).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_utils.cuh"

namespace awq {
namespace w4a16 {

enum class Layout { kV2, kV1 };

// Everything a kernel needs to read the weight. `zeros` is T scaled zeros (v2) or int32 qzeros (v1);
// the strides are in elements of the respective tensor (rows of scales / zeros).
template <typename T>
struct WeightArgs {
  const uint8_t* qweight;
  const T* scales;
  const void* zeros;
  int n;             // N (out features)
  int k;             // K (in features)
  int group_shift;   // log2(G)
  int groups;        // K / G: group indices are clamped below this (masked K tails)
  int64_t scale_stride;  // v2: N (row g); v1: scales.size(1) (row n)
  int64_t zero_stride;   // v2: N; v1: qzeros.size(1)
};

// Stores element (m, n) of the [M, N] result: rounded to T into `out`, or with a K split
// (k_splits > 1) as the fp32 partial of split `split` into `partial` [k_splits, M, N], which
// reduce_splits_kernel (gemv.cuh) sums in split order. Elements past M or N are not stored.
template <typename T>
__device__ __forceinline__ void store_result(T* __restrict__ out, float* __restrict__ partial, int split, int k_splits,
                                             int m, int m_total, int n, int n_total, float value) {
  if (m >= m_total || n >= n_total) return;
  const int64_t index = static_cast<int64_t>(m) * n_total + n;
  if (k_splits == 1) {
    out[index] = from_float<T>(value);
  } else {
    partial[static_cast<int64_t>(split) * m_total * n_total + index] = value;
  }
}

template <Layout L>
struct LayoutTraits;

template <>
struct LayoutTraits<Layout::kV2> {
  // Byte offset of the chunk (row n, k in [k32, k32 + 32)) from the start of qweight.
  __host__ __device__ static int64_t chunk_offset(int n, int k32, int k) {
    return static_cast<int64_t>(n >> 2) * (2 * static_cast<int64_t>(k)) + (k32 >> 6) * 128 + (n & 3) * 32 +
           ((k32 >> 5) & 1) * 16;
  }
  __host__ __device__ static constexpr int k_offset(int word, int nibble) {
    return 8 * (nibble & 3) + 2 * word + (nibble >> 2);
  }
  // w = scale * q + offset, in fp32, for row n and group g.
  template <typename T>
  __device__ static void group_affine(const WeightArgs<T>& w, int n, int g, float& scale, float& offset) {
    const int64_t i = g * w.scale_stride + n;
    scale = to_float(w.scales[i]);
    offset = to_float(static_cast<const T*>(w.zeros)[i]);
  }
};

template <>
struct LayoutTraits<Layout::kV1> {
  __host__ __device__ static int64_t chunk_offset(int n, int k32, int k) {
    return static_cast<int64_t>(n) * (k / 2) + k32 / 2;
  }
  __host__ __device__ static constexpr int k_offset(int word, int nibble) { return 8 * word + nibble; }
  __device__ static int zero_point(const int32_t* qzeros, int64_t zero_stride, int n, int g) {
    return (qzeros[n * zero_stride + (g >> 3)] >> (4 * (g & 7))) & 15;
  }
  template <typename T>
  __device__ static void group_affine(const WeightArgs<T>& w, int n, int g, float& scale, float& offset) {
    scale = to_float(w.scales[n * w.scale_stride + g]);
    offset = -scale * static_cast<float>(zero_point(static_cast<const int32_t*>(w.zeros), w.zero_stride, n, g));
  }
};

}  // namespace w4a16
}  // namespace awq
