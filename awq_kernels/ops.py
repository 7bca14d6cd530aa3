"""Pythonic API over the awq-kernels ops (the llm-awq compatible names are in `awq_inference_engine`).

These allocate their outputs and accept leading batch dims. The compiled extension is loaded on the
first call, so importing this module works without it.
"""

from __future__ import annotations

from typing import Optional

import torch

from awq_kernels._extension import load


def w4a16_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    *,
    group_size: int,
    layout: str = "v2",
    kernel: str = "auto",
) -> torch.Tensor:
    """``x @ W.T`` for a 4-bit AWQ weight ``W [N, K]``; returns ``x.shape[:-1] + (N,)`` in ``x.dtype``.

    Args:
        x: fp16 or bf16 activations ``[..., K]``.
        qweight, scales, zeros: the packed weight, in the layout named by ``layout``:
            ``"v2"`` (TinyChat v2, Format C): int16 ``qweight [N/4, K]``, ``scales`` and scaled zeros
            ``[Gp, N]`` in ``x.dtype``; ``"v1"`` (TinyChat v1, Format B): int32 ``qweight [N, K/8]``,
            ``scales [N, Gp]``, int32 ``qzeros [N, Gp/8]`` (see ``awq_kernels.quantization``).
        group_size: 32, 64 or 128.
        kernel: ``"auto"`` picks the fastest kernel for the number of rows; ``"gemv"`` (tensor-core
            GEMV for few rows, sm_80+: per-warp or shared-activation kernel by shape),
            ``"gemv_shared_x"`` (its shared-activation kernel), ``"mma"`` (tensor-core GEMM, sm_80+), ``"wgmma"`` (Hopper
            GEMM: builds with sm_90a, compute capability 9.0 only), ``"wgmma_ws"`` (its
            warp-specialized TMA-fed variant, same requirements) or ``"portable"`` (CUDA cores, any
            arch) force one.
    """
    return load("awq_inference_engine").awq_w4a16_gemm(x, qweight, scales, zeros, layout, group_size, kernel)


def w8a8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    wscales: torch.Tensor,
    ascales: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    kernel: str = "auto",
) -> torch.Tensor:
    """int8 linear layer with per-channel weight and per-token activation scales.

    x: int8 [..., K] (per-token quantized activations); weight: int8 [N, K] (nn.Linear layout);
    wscales: fp16 [N]; ascales: fp16 with one scale per token (x.numel() // K of them); bias: fp16 [N]
    or None. Returns fp16 [..., N] = (x @ weight.T in exact int32) * wscales * ascales (+ bias), as
    `w8a8_gemm_forward_cuda` / `w8a8_gemm_fuse_bias_forward_cuda` (spec §3.9, §3.10).
    kernel: ``"auto"`` (what those ops use), ``"mma"`` (mma.sync, sm_80+) or ``"wgmma"`` (Hopper
    wgmma + TMA: needs a build with compute capability 9.0 and a compute capability 9.0 GPU).
    """
    x2d = x.reshape(-1, x.shape[-1])
    out = torch.empty(x2d.shape[0], weight.shape[0], dtype=torch.float16, device=x.device)
    load("awq_inference_engine").awq_w8a8_gemm(x2d, weight, wscales, ascales.reshape(-1), out, bias, kernel)
    return out.reshape(*x.shape[:-1], weight.shape[0])


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
