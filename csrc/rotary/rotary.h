// Host entry points of the rotary-embedding family.
#pragma once

#include <ATen/core/Tensor.h>

namespace awq {

// llm-awq `rotary_embedding_neox(positions, query, key, head_size, cos_sin_cache)`: in-place NeoX
// RoPE of query [..., Hq, D] and key [..., Hk, D] (Hk may differ from Hq: GQA/MQA) from a
// [max_position, rot_dim] cache of cos | sin.
void rotary_embedding_neox(const at::Tensor& positions, const at::Tensor& query, const at::Tensor& key,
                           int64_t head_size, const at::Tensor& cos_sin_cache);

// llm-awq `fused_rope_with_pos_forward_func(input, freqs, transpose_output_memory)`: NeoX RoPE of a
// strided [A0, A1, H, D] input from fp32 angles; returns a new tensor.
at::Tensor fused_rope_with_pos_forward_func(const at::Tensor& input, const at::Tensor& freqs,
                                            bool transpose_output_memory);

}  // namespace awq
