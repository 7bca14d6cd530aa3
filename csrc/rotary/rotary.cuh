// NeoX ("rotate_half") rotary embeddings. Within the first rot_dim = 2R elements of a head, the
// element i < R pairs with i + R:
//     out[i]     = x[i] * cos[i]     - x[R + i] * sin[i]
//     out[R + i] = x[R + i] * cos[R+i] + x[i] * sin[R+i]
// (the cache op has one angle per pair, cos[R+i] = cos[i]; the fused op reads one angle per
// element). Math in fp32 (fp64 for fp64 tensors), rounded once.
//
// Both kernels are memory-bound and give one block to one token: its threads walk over
// (head, vector of VEC pairs) items, so each thread reads and writes 16-byte vectors of both
// halves of a pair at once.
#pragma once

#include <c10/macros/Macros.h>

#include "common/cuda_utils.cuh"

namespace awq {

// The arithmetic type: fp32, except fp64 for fp64 tensors.
template <typename T>
struct RopeMath {
  using type = float;
  static __device__ __forceinline__ float load(T x) { return to_float(x); }
  static __device__ __forceinline__ T store(float x) { return from_float<T>(x); }
};
template <>
struct RopeMath<double> {
  using type = double;
  static __device__ __forceinline__ double load(double x) { return x; }
  static __device__ __forceinline__ double store(double x) { return x; }
};

// One head's pair of vectors (x = elements [p, p+VEC), y = [R+p, R+p+VEC)) rotated in place.
template <typename T, int VEC, typename Angle>
__device__ __forceinline__ void rotate_pair(Vec<T, VEC>& x, Vec<T, VEC>& y, Angle angle) {
  using M = RopeMath<T>;
  using A = typename M::type;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    A cos_x, sin_x, cos_y, sin_y;
    angle(j, cos_x, sin_x, cos_y, sin_y);
    const A xf = M::load(x.v[j]);
    const A yf = M::load(y.v[j]);
    x.v[j] = M::store(xf * cos_x - yf * sin_x);
    y.v[j] = M::store(yf * cos_y + xf * sin_y);
  }
}

// rotary_embedding_neox. query/key rows: token t, head h at t*token_stride + h*head_stride.
// cache row p = [cos(p f_0) .. cos(p f_{R-1}), sin(p f_0) .. sin(p f_{R-1})].
template <typename T, int VEC>
__global__ void rope_cache_kernel(const int64_t* __restrict__ positions, T* query, T* key,
                                  const T* __restrict__ cos_sin_cache, int64_t max_position, int rot_half,
                                  int q_heads, int k_heads, int64_t q_token_stride, int64_t q_head_stride,
                                  int64_t k_token_stride, int64_t k_head_stride) {
  using V = Vec<T, VEC>;
  using A = typename RopeMath<T>::type;
  const int64_t token = blockIdx.x;
  const int64_t pos = positions[token];
  CUDA_KERNEL_ASSERT_MSG(pos >= 0 && pos < max_position,
                         "rotary_embedding_neox: a position is outside [0, cos_sin_cache.size(0))");
  if (pos < 0 || pos >= max_position) return;  // never read outside the cache, even without asserts
  const T* cos_row = cos_sin_cache + pos * 2 * rot_half;
  const T* sin_row = cos_row + rot_half;
  const int vecs_per_head = rot_half / VEC;
  const int items = (q_heads + k_heads) * vecs_per_head;
  for (int item = threadIdx.x; item < items; item += blockDim.x) {
    const int head = item / vecs_per_head;
    const int p = (item - head * vecs_per_head) * VEC;
    T* base = head < q_heads ? query + token * q_token_stride + head * q_head_stride
                             : key + token * k_token_stride + (head - q_heads) * k_head_stride;
    V x = *reinterpret_cast<const V*>(base + p);
    V y = *reinterpret_cast<const V*>(base + rot_half + p);
    const V c = *reinterpret_cast<const V*>(cos_row + p);
    const V s = *reinterpret_cast<const V*>(sin_row + p);
    rotate_pair<T, VEC>(x, y, [&](int j, A& cos_x, A& sin_x, A& cos_y, A& sin_y) {
      cos_x = cos_y = RopeMath<T>::load(c.v[j]);
      sin_x = sin_y = RopeMath<T>::load(s.v[j]);
    });
    *reinterpret_cast<V*>(base + p) = x;
    *reinterpret_cast<V*>(base + rot_half + p) = y;
  }
}

// fused_rope_with_pos_forward_func. Token t = i1*A0 + i0 (the order of freqs, viewed as
// [A1][A0][d2]); input element (i0, i1, h, j) at i0*in_s0 + i1*in_s1 + h*in_s2 + j*in_s3, output
// at i0*out_s0 + i1*out_s1 + h*head_size + j (heads of a token are dense in both output layouts).
// The block first turns its token's d2 angles into cos/sin in shared memory (shared by all heads).
template <typename T, int VEC>
__global__ void rope_angles_kernel(const T* input, const float* __restrict__ freqs, T* out, int a0, int heads,
                                   int head_size, int rot_half, int64_t in_s0, int64_t in_s1, int64_t in_s2,
                                   int64_t in_s3, int64_t out_s0, int64_t out_s1) {
  using V = Vec<T, VEC>;
  extern __shared__ float cos_sin[];  // [cos(θ_0..θ_{d2-1}), sin(θ_0..θ_{d2-1})]
  const int64_t token = blockIdx.x;
  const int64_t i0 = token % a0;
  const int64_t i1 = token / a0;
  const int d2 = 2 * rot_half;
  for (int j = threadIdx.x; j < d2; j += blockDim.x) {
    sincosf(freqs[token * d2 + j], &cos_sin[d2 + j], &cos_sin[j]);
  }
  __syncthreads();

  const T* in_token = input + i0 * in_s0 + i1 * in_s1;
  T* out_token = out + i0 * out_s0 + i1 * out_s1;
  const int pair_vecs = rot_half / VEC;
  const int items_per_head = pair_vecs + (head_size - d2) / VEC;
  const int items = heads * items_per_head;
  auto load = [&](const T* head_in, int j) -> V {
    if constexpr (VEC == 1) {
      return V{{head_in[j * in_s3]}};
    } else {
      return *reinterpret_cast<const V*>(head_in + j);  // vectorized only when in_s3 == 1
    }
  };
  for (int item = threadIdx.x; item < items; item += blockDim.x) {
    const int head = item / items_per_head;
    const int k = item - head * items_per_head;
    const T* head_in = in_token + head * in_s2;
    T* head_out = out_token + static_cast<int64_t>(head) * head_size;
    if (k < pair_vecs) {
      const int p = k * VEC;
      V x = load(head_in, p);
      V y = load(head_in, rot_half + p);
      rotate_pair<T, VEC>(x, y, [&](int j, float& cos_x, float& sin_x, float& cos_y, float& sin_y) {
        cos_x = cos_sin[p + j];
        sin_x = cos_sin[d2 + p + j];
        cos_y = cos_sin[rot_half + p + j];
        sin_y = cos_sin[d2 + rot_half + p + j];
      });
      *reinterpret_cast<V*>(head_out + p) = x;
      *reinterpret_cast<V*>(head_out + rot_half + p) = y;
    } else {
      const int p = d2 + (k - pair_vecs) * VEC;  // pass-through beyond the rotated dims
      *reinterpret_cast<V*>(head_out + p) = load(head_in, p);
    }
  }
}

}  // namespace awq
