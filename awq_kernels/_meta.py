"""Shape functions ("fake" implementations) of the ops, so torch.compile can trace them.

Each returns an empty tensor of the op's output shape and dtype, or nothing for ops that only
write their out-arguments. They are registered when an extension is loaded.
"""

from __future__ import annotations

from typing import Optional

import torch


def _layernorm_forward_cuda(input: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor, eps: float) -> None:
    return None


def _gemm_forward_cuda(
    in_feats: torch.Tensor, kernel: torch.Tensor, scaling_factors: torch.Tensor, zeros: torch.Tensor,
    group_size: int, split_k_iters: int,
) -> torch.Tensor:
    return in_feats.new_empty((in_feats.shape[0], kernel.shape[0]))


def _gemv_forward_cuda(
    in_feats: torch.Tensor, kernel: torch.Tensor, scaling_factors: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    return in_feats.new_empty((in_feats.shape[0], kernel.shape[0]))


def _gemm_forward_cuda_new(
    in_feats: torch.Tensor, kernel: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor
) -> torch.Tensor:
    return in_feats.new_empty((*in_feats.shape[:-1], 4 * kernel.shape[0]))


def _gemv_forward_cuda_new(
    in_feats: torch.Tensor, kernel: torch.Tensor, scaling_factors: torch.Tensor, zeros: torch.Tensor,
    m: int, n: int, k: int, group_size: int,
) -> torch.Tensor:
    return in_feats.new_empty((*in_feats.shape[:-1], n))


def _awq_w4a16_gemm(
    in_feats: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, layout: str,
    group_size: int, kernel: str = "auto",
) -> torch.Tensor:
    n = 4 * qweight.shape[0] if layout == "v2" else qweight.shape[0]
    return in_feats.new_empty((*in_feats.shape[:-1], n))
def _w8a8_gemm_forward_cuda(
    in_feats: torch.Tensor, kernel: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor, out_feats: torch.Tensor
) -> None:
    return None


def _w8a8_gemm_fuse_bias_forward_cuda(
    in_feats: torch.Tensor,
    kernel: torch.Tensor,
    wscales: torch.Tensor,
    ascales: torch.Tensor,
    out_feats: torch.Tensor,
    bias: torch.Tensor,
) -> None:
    return None
def _awq_w8a8_gemm(
    in_feats: torch.Tensor,
    weight: torch.Tensor,
    wscales: torch.Tensor,
    ascales: torch.Tensor,
    out_feats: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    kernel: str = "auto",
) -> None:
    return None


def _single_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    length_per_sample_: Optional[torch.Tensor],
    alibi_slopes_: Optional[torch.Tensor],
    timestep: int,
    rotary_embedding_dim: int = 0,
    rotary_base: float = 10000.0,
    rotary_scale: float = 1.0,
    neox_rotary_style: bool = True,
) -> torch.Tensor:
    return q.new_empty(q.shape)  # dense [B, H, Dh] even when q is a strided view


def _rotary_embedding_neox(
    positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, head_size: int, cos_sin_cache: torch.Tensor
) -> None:
    return None


def _fused_rope_with_pos_forward_func(
    input: torch.Tensor, freqs: torch.Tensor, transpose_output_memory: bool
) -> torch.Tensor:
    a0, a1, heads, head_size = input.shape
    if transpose_output_memory:
        return input.new_empty(a1, a0, heads, head_size).transpose(0, 1)
    return input.new_empty(a0, a1, heads, head_size)


def _silu_and_mul(input: torch.Tensor) -> torch.Tensor:
    return input.new_empty(*input.shape[:-1], input.shape[-1] // 2)


def _invoke_quant(out: torch.Tensor, input: torch.Tensor, scale: torch.Tensor) -> None:
    return None


def _rms_norm_general(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scaling: torch.Tensor,
    epsilon: float,
    use_per_token_quant: bool = True,
) -> None:
    return None


def _gelu_and_quant(out: torch.Tensor, input: torch.Tensor, scale_out: torch.Tensor, tmp: torch.Tensor) -> None:
    return None


_AWQ_INFERENCE_ENGINE = {
    "layernorm_forward_cuda": _layernorm_forward_cuda,
    "gemm_forward_cuda": _gemm_forward_cuda,
    "gemv_forward_cuda": _gemv_forward_cuda,
    "gemm_forward_cuda_new": _gemm_forward_cuda_new,
    "gemv_forward_cuda_new": _gemv_forward_cuda_new,
    "awq_w4a16_gemm": _awq_w4a16_gemm,
    "w8a8_gemm_forward_cuda": _w8a8_gemm_forward_cuda,
    "w8a8_gemm_fuse_bias_forward_cuda": _w8a8_gemm_fuse_bias_forward_cuda,
    "awq_w8a8_gemm": _awq_w8a8_gemm,
    "single_query_attention": _single_query_attention,
    "rotary_embedding_neox": _rotary_embedding_neox,
    "fused_rope_with_pos_forward_func": _fused_rope_with_pos_forward_func,
    "silu_and_mul": _silu_and_mul,
    "invoke_quant": _invoke_quant,
    "rms_norm_general": _rms_norm_general,
    "gelu_and_quant": _gelu_and_quant,
}

_FT_ATTENTION: dict = {
    "single_query_attention": _single_query_attention,
}

_BY_NAMESPACE = {"awq_inference_engine": _AWQ_INFERENCE_ENGINE, "ft_attention": _FT_ATTENTION}


def register(namespace: str) -> None:
    for name, fn in _BY_NAMESPACE[namespace].items():
        torch.library.register_fake(f"{namespace}::{name}", fn)
