// Host entry points of the activation family.
#pragma once

#include <ATen/core/Tensor.h>

namespace awq {

// llm-awq `silu_and_mul(input)`: SwiGLU, silu(input[..., :d]) * input[..., d:] -> new [..., d].
at::Tensor silu_and_mul(const at::Tensor& input);

}  // namespace awq
