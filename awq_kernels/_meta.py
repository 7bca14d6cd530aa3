"""Shape functions ("fake" implementations) of the ops, so torch.compile can trace them.

Each returns an empty tensor of the op's output shape and dtype, or nothing for ops that only
write their out-arguments. They are registered when an extension is loaded.
"""

from __future__ import annotations

from typing import Optional

import torch


def _layernorm_forward_cuda(input: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor, eps: float) -> None:
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


_AWQ_INFERENCE_ENGINE = {
    "layernorm_forward_cuda": _layernorm_forward_cuda,
    "single_query_attention": _single_query_attention,
}

_FT_ATTENTION: dict = {
    "single_query_attention": _single_query_attention,
}

_BY_NAMESPACE = {"awq_inference_engine": _AWQ_INFERENCE_ENGINE, "ft_attention": _FT_ATTENTION}


def register(namespace: str) -> None:
    for name, fn in _BY_NAMESPACE[namespace].items():
        torch.library.register_fake(f"{namespace}::{name}", fn)
