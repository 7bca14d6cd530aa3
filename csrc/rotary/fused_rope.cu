#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/checks.h"
#include "common/dispatch.h"
#include "rotary/rotary.cuh"
#include "rotary/rotary.h"

namespace awq {

at::Tensor fused_rope_with_pos_forward_func(const at::Tensor& input, const at::Tensor& freqs,
                                            bool transpose_output_memory) {
  const ArgChecker c("fused_rope_with_pos_forward_func");
  c.dtype_in(input, "input", {at::kFloat, at::kHalf, at::kBFloat16});
  c.dim(input, "input", 4);
  c.dtype(freqs, "freqs", at::kFloat);
  c.min_dim(freqs, "freqs", 1);
  c.contiguous(freqs, "freqs");
  const int64_t a0 = input.size(0), a1 = input.size(1), heads = input.size(2), head_size = input.size(3);
  const int64_t d2 = freqs.size(-1);
  c.check(d2 > 0 && d2 % 2 == 0 && d2 <= head_size, "argument 'freqs' must have an even last dimension in [2, ",
          head_size, "] (input.size(3)), got shape ", freqs.sizes());
  constexpr int64_t kMaxAngles = 48 * 1024 / (2 * sizeof(float));  // cos and sin of each in static-size smem
  c.check(d2 <= kMaxAngles, "argument 'freqs' must have a last dimension <= ", kMaxAngles, ", got shape ",
          freqs.sizes());
  const int64_t tokens = a0 * a1;
  c.check(freqs.numel() >= tokens * d2, "argument 'freqs' must hold an angle vector per (input.size(0), "
          "input.size(1)) pair: at least ", tokens, "*", d2, " elements, got shape ", freqs.sizes());
  c.check(heads * head_size <= std::numeric_limits<int32_t>::max() && tokens <= std::numeric_limits<int32_t>::max(),
          "argument 'input' is too large, got shape ", input.sizes());
  c.cuda(input, "input", {{&freqs, "freqs"}});

  const c10::cuda::CUDAGuard guard(input.device());
  // Output memory [A1][A0][H][D] when transposed (tinychat's layout), else [A0][A1][H][D].
  const at::Tensor out = transpose_output_memory
                             ? at::empty({a1, a0, heads, head_size}, input.options()).transpose(0, 1)
                             : at::empty({a0, a1, heads, head_size}, input.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int rot_half = static_cast<int>(d2 / 2);
  dispatch_float_types(input.scalar_type(), "fused_rope_with_pos_forward_func", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      const int64_t items = heads * (rot_half / V + (head_size - d2) / V);
      const int threads = static_cast<int>(std::min<int64_t>(256, (items + 31) / 32 * 32));
      rope_angles_kernel<T, V><<<static_cast<unsigned>(tokens), threads, 2 * d2 * sizeof(float), stream>>>(
          static_cast<const T*>(input.data_ptr()), static_cast<const float*>(freqs.data_ptr()),
          static_cast<T*>(out.data_ptr()), static_cast<int>(a0), static_cast<int>(heads),
          static_cast<int>(head_size), rot_half, input.stride(0), input.stride(1), input.stride(2), input.stride(3),
          out.stride(0), out.stride(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    const bool vectorized = input.stride(3) == 1 && head_size % kVec == 0 && rot_half % kVec == 0 &&
                            input.stride(0) % kVec == 0 && input.stride(1) % kVec == 0 &&
                            input.stride(2) % kVec == 0 && c.aligned16(input);
    if (vectorized) {
      launch(std::integral_constant<int, kVec>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
  });
  return out;
}

}  // namespace awq
