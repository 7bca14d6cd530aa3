// Host entry points of the attention family.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace awq {

// llm-awq / FasterTransformer `single_query_attention` (shared/spec/awq-interface.md §3.7): decode
// attention of one new token per sequence over a FasterTransformer KV cache, with rotary, ALiBi,
// GQA/MQA and a circular cache. Writes the new (rotated) key and value into the caches at slot
// t % L and returns the output [B, H, Dh] in q's dtype.
at::Tensor single_query_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const std::optional<at::Tensor>& length_per_sample_,
                                  const std::optional<at::Tensor>& alibi_slopes_, int64_t timestep,
                                  int64_t rotary_embedding_dim, double rotary_base, double rotary_scale,
                                  bool neox_rotary_style);

}  // namespace awq
