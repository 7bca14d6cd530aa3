// Host entry points of the W8A8 GEMMs (spec §3.9, §3.10).
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>
#include <c10/util/string_view.h>

namespace awq {

// llm-awq `w8a8_gemm_forward_cuda(in_feats, kernel, wscales, ascales, out_feats)`:
// out_feats[m, n] = fp16(acc[m, n] * (wscales[n] * ascales[m])), acc = in_feats[m, :] . kernel[n, :]
// in exact int32. in_feats int8 [M, K], kernel int8 [N, K], wscales fp16 [N], ascales fp16 [M]
// (or [M, 1]), out_feats fp16 [M, N]; K % 16 == 0.
void w8a8_gemm_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel, const at::Tensor& wscales,
                            const at::Tensor& ascales, const at::Tensor& out_feats);

// The same with a bias, and the spec's other multiplication order:
// out_feats[m, n] = fp16((acc * wscales[n]) * ascales[m] + bias[n]), bias fp16 [N].
void w8a8_gemm_fuse_bias_forward_cuda(const at::Tensor& in_feats, const at::Tensor& kernel,
                                      const at::Tensor& wscales, const at::Tensor& ascales,
                                      const at::Tensor& out_feats, const at::Tensor& bias);

// Both of the above in one op (bias optional) with a kernel choice, for tests and benchmarks:
// "auto" (what the two ops above do), "mma" (mma.sync, sm_80+) or "wgmma" (sm_90a builds on compute
// capability 9.0 GPUs). The weight is `kernel` of the ops above.
void awq_w8a8_gemm(const at::Tensor& in_feats, const at::Tensor& weight, const at::Tensor& wscales,
                   const at::Tensor& ascales, const at::Tensor& out_feats, const std::optional<at::Tensor>& bias,
                   c10::string_view kernel);

}  // namespace awq
