// invoke_quant: dynamic per-token symmetric int8 quantization (layout: quant.cuh).
//   amax = max_i |x_i| (fp32, init 0);  scale[t] = fp16(amax / 127);  q_i = int8_rn_sat(x_i * (127 / amax))
// An all-zero row gives scale 0 and codes 0 (0 * inf = NaN -> 0), as in the original.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/row_layout.h"
#include "w8a8/quant.cuh"
#include "w8a8/quantize.h"

namespace awq {
namespace {

constexpr int kItemsPerThread = 4;
constexpr int kThreadsPerBlock = 256;

// The row stays in registers in the input type (converted on both passes): this kernel has few
// instructions per element, so halving the cache's registers is worth more than one conversion.
template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(kThreadsPerBlock)
    invoke_quant_kernel(const T* __restrict__ input, int8_t* __restrict__ out, half* __restrict__ scale,
                        int64_t rows, int hidden) {
  using V = Vec<T, VEC>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const V* in_row = reinterpret_cast<const V*>(input + row * hidden);
  auto x = make_row_cache<T, VEC, ITEMS>([&](int idx, V& v) { v = in_row[idx]; }, hidden, row < rows);
  float amax = 0.f;
  x.for_each([&](int, const V& v) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) amax = fmaxf(amax, fabsf(to_float(v.v[j])));
  });
  store_per_token_codes(x, amax, row, rows, hidden, scale, out);
}

}  // namespace

void invoke_quant(const at::Tensor& out, const at::Tensor& input, const at::Tensor& scale) {
  const ArgChecker c("invoke_quant");
  c.dtype_in(input, "input", {at::kFloat, at::kHalf, at::kBFloat16});
  const int64_t hidden = c.hidden_size(input, "input");
  c.contiguous(input, "input");
  c.dtype(out, "out", at::kChar);
  c.same_numel(out, "out", input, "input");
  c.contiguous(out, "out");
  c.dtype(scale, "scale", at::kHalf);
  c.contiguous(scale, "scale");
  const int64_t rows = input.numel() / hidden;
  c.check(scale.numel() >= rows, "argument 'scale' must have at least one element per token (", rows,
          "), got shape ", scale.sizes());
  c.cuda(input, "input", {{&out, "out"}, {&scale, "scale"}});
  if (rows == 0) return;

  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_types(input.scalar_type(), "invoke_quant", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      const RowLayout l = row_layout("invoke_quant", rows, hidden / V, kItemsPerThread, kThreadsPerBlock,
                                     /*max_threads_per_row=*/kThreadsPerBlock);
      invoke_quant_kernel<T, V, kItemsPerThread>
          <<<l.blocks, dim3(l.threads_per_row, l.rows_per_block), 0, stream>>>(
              static_cast<const T*>(input.data_ptr()), static_cast<int8_t*>(out.data_ptr()),
              static_cast<half*>(scale.data_ptr()), rows, static_cast<int>(hidden));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    // The int8 output vector is VEC bytes: aligned when `out` is 16-byte aligned and hidden % VEC == 0.
    if (hidden % kVec == 0 && c.aligned16(input) && c.aligned16(out)) {
      launch(std::integral_constant<int, kVec>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
  });
}

}  // namespace awq
