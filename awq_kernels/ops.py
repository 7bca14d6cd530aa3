"""Pythonic API over the compiled ops (allocating outputs, inferring redundant arguments)."""

from __future__ import annotations

import torch

from awq_kernels._extension import load


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU: silu(x[..., :d]) * x[..., d:], a new [..., d] tensor."""
    return load("awq_inference_engine").silu_and_mul(x)


def rotary_embedding(
    positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    """In-place NeoX RoPE of query [..., Hq, D] and key [..., Hk, D] from a [max_pos, rot_dim] cos|sin cache."""
    load("awq_inference_engine").rotary_embedding_neox(positions, query, key, query.size(-1), cos_sin_cache)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token int8 quantization: (codes like x, fp16 scales [tokens]) with x ~ codes * scale."""
    codes = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    scales = torch.empty(x.numel() // x.size(-1), dtype=torch.float16, device=x.device)
    load("awq_inference_engine").invoke_quant(codes, x, scales)
    return codes, scales
