// Host entry points of the W8A8 row kernels (per-token int8 quantizers).
#pragma once

#include <ATen/core/Tensor.h>

namespace awq {

// llm-awq `invoke_quant(out, input, scale)`: per-token symmetric int8; scale[t] = fp16(amax/127).
void invoke_quant(const at::Tensor& out, const at::Tensor& input, const at::Tensor& scale);

// llm-awq `rms_norm_general(...)`: LayerNorm with bias (despite the name) fused with int8
// quantization, per-token (writes `scaling`) or per-tensor (reads `scaling[0]` as a multiplier).
void rms_norm_general(const at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                      const at::Tensor& bias, const at::Tensor& scaling, double epsilon, bool use_per_token_quant);

// llm-awq `gelu_and_quant(out, input, scale_out, tmp)`: tanh-GELU (written to tmp), then per-token int8.
void gelu_and_quant(const at::Tensor& out, const at::Tensor& input, const at::Tensor& scale_out,
                    const at::Tensor& tmp);

}  // namespace awq
