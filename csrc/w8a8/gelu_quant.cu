// gelu_and_quant: tanh-approximate GELU of an fp16 row, written to `tmp`, then per-token int8
// (layout: quant.cuh). In fp32 (the original rounds every step to fp16):
//   g_i = 0.5 x (1 + tanh(0.79788456 x (1 + 0.044715 x²)));  tmp_i = fp16(g_i)
//   A = max_i |g_i| (a true abs: the original's max(g > 1e-4 ? g : -g) ignores tiny positive g);
//   scale_out[t] = fp16(A/127);  q_i = int8_rn_sat(g_i * (127/A))   (A = 0: scale 0, codes 0)
#include <ATen/MemoryOverlap.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/checks.h"
#include "common/row_layout.h"
#include "w8a8/quant.cuh"
#include "w8a8/quantize.h"

namespace awq {
namespace {

constexpr int kItemsPerThread = 4;
constexpr int kThreadsPerBlock = 256;

// 0.5 x (1 + tanh(u)) written as x * sigmoid(2u) = x / (1 + 2^(-2u log2(e))): the same function
// without the cancellation of 1 + tanh(u) for negative x. ex2.approx and rcp.approx (2 ulp and
// 1 ulp) instead of expf and an IEEE division: a third of the instructions, for an error that
// stays at the level of the rounding of u itself (which 2^(...) amplifies by |2u| in either form,
// and only where g is far below the row's max). An infinite exponential gives g = -0 (x = -inf:
// -inf * 0 = NaN, as the division gives); one flushed to zero gives g = x.
__device__ __forceinline__ float gelu_tanh(float x) {
  // -2u log2(e) = x (c + c 0.044715 x^2) with c = -2 log2(e) sqrt(2/pi): three operations
  constexpr float kC = -2.f * 1.44269504088896341f * 0.79788456f;
  float e, inv;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * fmaf(kC * 0.044715f, x * x, kC)));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(inv) : "f"(1.f + e));
  return x * inv;
}

// The row's GELU values are computed once, kept in registers as fp32 for both the max and the
// codes (vectors past the cache are recomputed, identically, from the input).
template <int VEC, int ITEMS>
__global__ void __launch_bounds__(kThreadsPerBlock)
    gelu_quant_kernel(const half* __restrict__ input, int8_t* __restrict__ out, half* __restrict__ scale_out,
                      half* __restrict__ tmp, int64_t rows, int hidden) {
  using V = Vec<half, VEC>;
  using FV = Vec<float, VEC>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const V* in_row = reinterpret_cast<const V*>(input + row * hidden);
  auto g = make_row_cache<float, VEC, ITEMS>(
      [&](int idx, FV& v) {
        const V raw = in_row[idx];
#pragma unroll
        for (int j = 0; j < VEC; ++j) v.v[j] = gelu_tanh(__half2float(raw.v[j]));
      },
      hidden, row < rows);
  V* tmp_row = reinterpret_cast<V*>(tmp + row * hidden);
  float amax = 0.f;
  g.for_each([&](int idx, const FV& v) {
    V rounded;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      amax = fmaxf(amax, fabsf(v.v[j]));
      rounded.v[j] = __float2half_rn(v.v[j]);
    }
    tmp_row[idx] = rounded;
  });
  store_per_token_codes(g, amax, row, rows, hidden, scale_out, out);
}

}  // namespace

void gelu_and_quant(const at::Tensor& out, const at::Tensor& input, const at::Tensor& scale_out,
                    const at::Tensor& tmp) {
  const ArgChecker c("gelu_and_quant");
  c.dtype(input, "input", at::kHalf);
  const int64_t hidden = c.hidden_size(input, "input");
  c.contiguous(input, "input");
  c.dtype(out, "out", at::kChar);
  c.same_numel(out, "out", input, "input");
  c.contiguous(out, "out");
  const int64_t rows = input.numel() / hidden;
  c.dtype(scale_out, "scale_out", at::kHalf);
  c.contiguous(scale_out, "scale_out");
  c.check(scale_out.numel() >= rows, "argument 'scale_out' must have at least one element per token (", rows,
          "), got shape ", scale_out.sizes());
  c.dtype(tmp, "tmp", at::kHalf);
  c.contiguous(tmp, "tmp");
  c.check(tmp.numel() >= input.numel(), "argument 'tmp' must have at least as many elements as 'input' (",
          input.numel(), "), got shape ", tmp.sizes());
  // tmp receives the GELU values while the input of a long row is still being read (vectors past the
  // kernel's register cache are recomputed from it).
  c.check(at::get_overlap_status(tmp, input) == at::MemOverlapStatus::No,
          "arguments 'tmp' and 'input' overlap in memory (tmp is written while input is read: pass disjoint tensors)");
  c.cuda(input, "input", {{&out, "out"}, {&scale_out, "scale_out"}, {&tmp, "tmp"}});
  if (rows == 0) return;

  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  constexpr int kVec = 8;
  auto launch = [&](auto vec_tag) {
    constexpr int V = decltype(vec_tag)::value;
    const RowLayout l = row_layout("gelu_and_quant", rows, hidden / V, kItemsPerThread, kThreadsPerBlock,
                                   /*max_threads_per_row=*/kThreadsPerBlock);
    gelu_quant_kernel<V, kItemsPerThread><<<l.blocks, dim3(l.threads_per_row, l.rows_per_block), 0, stream>>>(
        static_cast<const half*>(input.data_ptr()), static_cast<int8_t*>(out.data_ptr()),
        static_cast<half*>(scale_out.data_ptr()), static_cast<half*>(tmp.data_ptr()), rows,
        static_cast<int>(hidden));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (hidden % kVec == 0 && c.aligned16(input) && c.aligned16(out) && c.aligned16(tmp)) {
    launch(std::integral_constant<int, kVec>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

}  // namespace awq
