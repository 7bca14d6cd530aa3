// Host entry points of the normalization family.
#pragma once

#include <ATen/core/Tensor.h>

namespace awq {

// llm-awq `layernorm_forward_cuda(input, gamma, out, eps)`: RMSNorm over the last dim of `input`
// (any rank), written into `out` (which may be `input` itself).
void layernorm_forward_cuda(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& out, double eps);

}  // namespace awq
