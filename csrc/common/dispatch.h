// Dtype dispatch for the 16-bit float kernels (fp16 always, bf16 when built with ENABLE_BF16).
//
//   awq::dispatch_half_types(x.scalar_type(), "op", [&](auto tag) {
//     using T = decltype(tag);  // half or __nv_bfloat16
//     ...
//   });
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace awq {

template <typename F>
void dispatch_half_types(at::ScalarType dtype, const char* op, F&& f) {
  switch (dtype) {
    case at::kHalf:
      f(half{});
      return;
    case at::kBFloat16:
#ifdef ENABLE_BF16
      f(__nv_bfloat16{});
      return;
#else
      TORCH_CHECK(false, op, ": this build of awq-kernels has no bfloat16 kernels "
                  "(it was compiled with AWQ_KERNELS_ENABLE_BF16=0)");
#endif
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", dtype, " (expected Half or BFloat16)");
  }
}

// fp32, fp16 and bf16 (the activation and quantization kernels).
template <typename F>
void dispatch_float_types(at::ScalarType dtype, const char* op, F&& f) {
  if (dtype == at::kFloat) {
    f(float{});
    return;
  }
  dispatch_half_types(dtype, op, static_cast<F&&>(f));
}

}  // namespace awq
