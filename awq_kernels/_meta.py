"""Shape functions ("fake" implementations) of the ops, so torch.compile can trace them.

Each returns an empty tensor of the op's output shape and dtype, or nothing for ops that only
write their out-arguments. They are registered when an extension is loaded.
"""

from __future__ import annotations

import torch


def _layernorm_forward_cuda(input: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor, eps: float) -> None:
    return None


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
    "rotary_embedding_neox": _rotary_embedding_neox,
    "fused_rope_with_pos_forward_func": _fused_rope_with_pos_forward_func,
    "silu_and_mul": _silu_and_mul,
    "invoke_quant": _invoke_quant,
    "rms_norm_general": _rms_norm_general,
    "gelu_and_quant": _gelu_and_quant,
}

_FT_ATTENTION: dict = {}

_BY_NAMESPACE = {"awq_inference_engine": _AWQ_INFERENCE_ENGINE, "ft_attention": _FT_ATTENTION}


def register(namespace: str) -> None:
    for name, fn in _BY_NAMESPACE[namespace].items():
        torch.library.register_fake(f"{namespace}::{name}", fn)
