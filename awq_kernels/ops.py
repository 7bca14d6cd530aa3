"""Pythonic API over the awq-kernels ops (the llm-awq compatible names are in `awq_inference_engine`).

The compiled extension is loaded on the first call, so importing this module works without it.
"""

from __future__ import annotations

import torch

from awq_kernels._extension import load

W4A16_LAYOUTS = ("v2", "v1")
W4A16_KERNELS = ("auto", "gemv", "mma", "portable")


def w4a16_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int = 128,
    layout: str = "v2",
    kernel: str = "auto",
) -> torch.Tensor:
    """``x @ W.T`` for a 4-bit AWQ weight ``W [N, K]``; returns ``x.shape[:-1] + (N,)`` in ``x.dtype``.

    Accumulation is fp32 in every kernel.

    Args:
        x: fp16 or bf16 activations ``[..., K]``, contiguous.
        qweight, scales, zeros: the packed weight in the layout named by ``layout``:
            ``"v2"`` (TinyChat v2, Format C): int16 ``qweight [N/4, K]``, ``scales`` and scaled zeros
            ``[Gp, N]`` in ``x.dtype`` (``w = q * s + sz``; K % 64 == 0);
            ``"v1"`` (TinyChat v1, Format B): int32 ``qweight [N, K/8]``, ``scales [N, Gp]`` in
            ``x.dtype``, int32 ``qzeros [N, Gp/8]`` (``w = s * (q - z)``).
        group_size: 32, 64 or 128 (K % group_size == 0).
        kernel: ``"auto"`` picks the fastest kernel for the number of rows and the device;
            ``"gemv"`` (CUDA cores, best for a few rows), ``"mma"`` (tensor cores, sm_80+) and
            ``"portable"`` (CUDA cores, every arch; the same kernel as ``"gemv"``) force one.
    """
    if layout not in W4A16_LAYOUTS:
        raise ValueError(f"w4a16_gemm: layout must be one of {W4A16_LAYOUTS}, got {layout!r}")
    if kernel not in W4A16_KERNELS:
        raise ValueError(f"w4a16_gemm: kernel must be one of {W4A16_KERNELS}, got {kernel!r}")
    return load("awq_inference_engine").awq_w4a16_gemm(x, qweight, scales, zeros, layout, group_size, kernel)
