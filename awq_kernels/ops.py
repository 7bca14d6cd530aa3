"""Pythonic entry points over the compiled ops (allocate outputs, accept leading batch dims)."""

from __future__ import annotations

from typing import Optional

import torch

from awq_kernels import _extension


def w8a8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    wscales: torch.Tensor,
    ascales: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """int8 linear layer with per-channel weight and per-token activation scales.

    x: int8 [..., K] (per-token quantized activations); weight: int8 [N, K] (nn.Linear layout);
    wscales: fp16 [N]; ascales: fp16 with one scale per token (x.numel() // K of them); bias: fp16 [N]
    or None. Returns fp16 [..., N] = (x @ weight.T in exact int32) * wscales * ascales (+ bias), as
    `w8a8_gemm_forward_cuda` / `w8a8_gemm_fuse_bias_forward_cuda` (spec §3.9, §3.10).
    """
    ops = _extension.load("awq_inference_engine")
    x2d = x.reshape(-1, x.shape[-1])
    out = torch.empty(x2d.shape[0], weight.shape[0], dtype=torch.float16, device=x.device)
    ascales1d = ascales.reshape(-1)
    if bias is None:
        ops.w8a8_gemm_forward_cuda(x2d, weight, wscales, ascales1d, out)
    else:
        ops.w8a8_gemm_fuse_bias_forward_cuda(x2d, weight, wscales, ascales1d, out, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])
