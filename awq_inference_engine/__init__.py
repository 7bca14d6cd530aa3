"""Drop-in replacement for llm-awq's `awq_inference_engine` extension.

The functions keep llm-awq's names and positional argument order (shared/spec/awq-interface.md);
like the original pybind bindings they take positional arguments only, except
`single_query_attention` and `rms_norm_general`, which have keyword names and defaults. Each one
calls the op registered by awq-kernels, so it also works under torch.compile.

Layouts, dtypes and semantics are documented per op in the spec; in short: 4-bit weights in
llm-awq's v1 (`gemm_forward_cuda`, `gemv_forward_cuda`) and v2 (`*_new`) formats, RMSNorm (named
`layernorm_forward_cuda`), RoPE, decode attention over a FasterTransformer KV cache, and the W8A8
ops (`rms_norm_general` is a LayerNorm fused with int8 quantization).
"""

from __future__ import annotations

import torch

from awq_kernels._extension import load

# One attention implementation serves both modules (also as torch.ops.awq_inference_engine.*).
from ft_attention import single_query_attention  # noqa: F401

_ops = load("awq_inference_engine")


def layernorm_forward_cuda(input: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor, eps: float, /) -> None:
    """RMSNorm over the last dim (despite the name): out = x * rsqrt(mean(x^2) + eps) * gamma."""
    _ops.layernorm_forward_cuda(input, gamma, out, eps)


def gemm_forward_cuda(
    in_feats: torch.Tensor,
    kernel: torch.Tensor,
    scaling_factors: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    split_k_iters: int,
    /,
) -> torch.Tensor:
    """W4A16 GEMM, TinyChat-v1 layout (Format B): returns [M, N]."""
    return _ops.gemm_forward_cuda(in_feats, kernel, scaling_factors, zeros, group_size, split_k_iters)


def gemv_forward_cuda(
    in_feats: torch.Tensor, kernel: torch.Tensor, scaling_factors: torch.Tensor, zeros: torch.Tensor, group_size: int, /
) -> torch.Tensor:
    """W4A16 GEMV, TinyChat-v1 layout (Format B): returns [M, N]."""
    return _ops.gemv_forward_cuda(in_feats, kernel, scaling_factors, zeros, group_size)


def gemm_forward_cuda_new(
    in_feats: torch.Tensor, kernel: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, /
) -> torch.Tensor:
    """W4A16 GEMM, TinyChat-v2 layout (Format C, group size 128); `zeros` are the scaled zeros."""
    return _ops.gemm_forward_cuda_new(in_feats, kernel, scales, zeros)


def gemv_forward_cuda_new(
    in_feats: torch.Tensor,
    kernel: torch.Tensor,
    scaling_factors: torch.Tensor,
    zeros: torch.Tensor,
    m: int,
    n: int,
    k: int,
    group_size: int,
    /,
) -> torch.Tensor:
    """W4A16 GEMV, TinyChat-v2 layout (Format C); m, n, k are checked against the tensors."""
    return _ops.gemv_forward_cuda_new(in_feats, kernel, scaling_factors, zeros, m, n, k, group_size)


def rotary_embedding_neox(
    positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, head_size: int, cos_sin_cache: torch.Tensor, /
) -> None:
    """In-place NeoX RoPE on query and key from a [max_position, rot_dim] cos/sin cache."""
    _ops.rotary_embedding_neox(positions, query, key, head_size, cos_sin_cache)


def fused_rope_with_pos_forward_func(
    input: torch.Tensor, freqs: torch.Tensor, transpose_output_memory: bool, /
) -> torch.Tensor:
    """NeoX RoPE from precomputed angles (fp32 `freqs`); returns a new tensor."""
    return _ops.fused_rope_with_pos_forward_func(input, freqs, transpose_output_memory)


def w8a8_gemm_forward_cuda(
    in_feats: torch.Tensor, kernel: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor, out_feats: torch.Tensor, /
) -> None:
    """int8 x int8 GEMM with per-channel and per-token scales, written into out_feats (fp16)."""
    _ops.w8a8_gemm_forward_cuda(in_feats, kernel, wscales, ascales, out_feats)


def w8a8_gemm_fuse_bias_forward_cuda(
    in_feats: torch.Tensor,
    kernel: torch.Tensor,
    wscales: torch.Tensor,
    ascales: torch.Tensor,
    out_feats: torch.Tensor,
    bias: torch.Tensor,
    /,
) -> None:
    """w8a8_gemm_forward_cuda plus a bias."""
    _ops.w8a8_gemm_fuse_bias_forward_cuda(in_feats, kernel, wscales, ascales, out_feats, bias)


def invoke_quant(out: torch.Tensor, input: torch.Tensor, scale: torch.Tensor, /) -> None:
    """Per-token symmetric int8 quantization: writes out (int8) and scale (fp16, amax/127)."""
    _ops.invoke_quant(out, input, scale)


def rms_norm_general(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scaling: torch.Tensor,
    epsilon: float,
    use_per_token_quant: bool = True,
) -> None:
    """LayerNorm with bias (despite the name) fused with int8 quantization."""
    _ops.rms_norm_general(out, input, weight, bias, scaling, epsilon, use_per_token_quant)


def silu_and_mul(input: torch.Tensor, /) -> torch.Tensor:
    """SwiGLU: silu(input[..., :d]) * input[..., d:]."""
    return _ops.silu_and_mul(input)


def gelu_and_quant(out: torch.Tensor, input: torch.Tensor, scale_out: torch.Tensor, tmp: torch.Tensor, /) -> None:
    """tanh-GELU then per-token int8 quantization (fp16 input)."""
    _ops.gelu_and_quant(out, input, scale_out, tmp)
