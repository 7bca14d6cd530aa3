#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "activation/activation.h"
#include "activation/silu_and_mul.cuh"
#include "common/checks.h"
#include "common/dispatch.h"

namespace awq {

at::Tensor silu_and_mul(const at::Tensor& input) {
  const ArgChecker c("silu_and_mul");
  c.dtype_in(input, "input", {at::kFloat, at::kHalf, at::kBFloat16});
  c.min_dim(input, "input", 1);
  const int64_t two_d = input.size(-1);
  c.check(two_d > 0 && two_d % 2 == 0, "argument 'input' must have an even, non-zero last dimension (2*d), got shape ",
          input.sizes());
  c.contiguous(input, "input");
  c.cuda(input, "input");

  const int64_t d = two_d / 2;
  auto out_shape = input.sizes().vec();
  out_shape.back() = d;
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor out = at::empty(out_shape, input.options());
  const int64_t tokens = input.numel() / two_d;
  if (tokens == 0) return out;
  c.check(tokens <= std::numeric_limits<int32_t>::max(), "argument 'input' has too many rows (", tokens, ")");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_types(input.scalar_type(), "silu_and_mul", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      constexpr int kThreads = 128;
      const int64_t col_blocks = (d / V + kThreads - 1) / kThreads;
      c.check(col_blocks <= 65535, "argument 'input' has a too long last dimension (", two_d, ")");
      silu_and_mul_kernel<T, V><<<dim3(static_cast<unsigned>(tokens), static_cast<unsigned>(col_blocks)), kThreads,
                                  0, stream>>>(static_cast<const T*>(input.data_ptr()),
                                               static_cast<T*>(out.data_ptr()), d);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (d % kVec == 0 && c.aligned16(input)) {
      launch(std::integral_constant<int, kVec>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
  });
  return out;
}

}  // namespace awq
