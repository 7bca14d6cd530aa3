// Host entry points of the W4A16 family (4-bit weights, fp16/bf16 activations, fp32 accumulation).
// Layouts: csrc/w4a16/layouts.cuh; semantics: shared/spec/awq-interface.md §2-§3.5.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace awq {

// llm-awq, Format B (TinyChat v1): in_feats [M, K], qweight int32 [N, K/8], scales [N, Gp],
// qzeros int32 [N, Zw]; returns [M, N]. split_k_iters (>= 1) is the mma GEMM's K split and an upper
// bound on the wgmma GEMM's (sm_90a), which otherwise chooses its own.
at::Tensor gemm_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& scaling_factors,
                             const at::Tensor& zeros, int64_t group_size, int64_t split_k_iters);
at::Tensor gemv_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& scaling_factors,
                             const at::Tensor& zeros, int64_t group_size);

// llm-awq, Format C (TinyChat v2): in_feats [..., K], qweight int16 [N/4, K], scales and scaled zeros
// [Gp, N]; returns [..., N]. The GEMM has G = 128 (no argument, as the original).
at::Tensor gemm_forward_cuda_new(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& scales,
                                 const at::Tensor& zeros);
at::Tensor gemv_forward_cuda_new(const at::Tensor& in_feats, const at::Tensor& kernel,
                                 const at::Tensor& scaling_factors, const at::Tensor& zeros, int64_t m, int64_t n,
                                 int64_t k, int64_t group_size);

// Either layout ("v2" | "v1"), G in {32, 64, 128}, kernel "auto" | "gemv" | "mma" | "wgmma" | "portable"
// ("wgmma": sm_90a builds on compute capability 9.0); returns [..., N].
at::Tensor awq_w4a16_gemm(const at::Tensor& in_feats, const at::Tensor& qweight, const at::Tensor& scales,
                          const at::Tensor& zeros, c10::string_view layout, int64_t group_size,
                          c10::string_view kernel);

}  // namespace awq
