"""Shape functions ("fake" implementations) of the ops, so torch.compile can trace them.

Each returns an empty tensor of the op's output shape and dtype, or nothing for ops that only
write their out-arguments. They are registered when an extension is loaded.
"""

from __future__ import annotations

import torch


def _layernorm_forward_cuda(input: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor, eps: float) -> None:
    return None


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


_AWQ_INFERENCE_ENGINE = {
    "layernorm_forward_cuda": _layernorm_forward_cuda,
    "w8a8_gemm_forward_cuda": _w8a8_gemm_forward_cuda,
    "w8a8_gemm_fuse_bias_forward_cuda": _w8a8_gemm_fuse_bias_forward_cuda,
}

_FT_ATTENTION: dict = {}

_BY_NAMESPACE = {"awq_inference_engine": _AWQ_INFERENCE_ENGINE, "ft_attention": _FT_ATTENTION}


def register(namespace: str) -> None:
    for name, fn in _BY_NAMESPACE[namespace].items():
        torch.library.register_fake(f"{namespace}::{name}", fn)
