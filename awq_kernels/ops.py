"""Pythonic API over the awq-kernels ops (the llm-awq compatible names are in `awq_inference_engine`).

The compiled extension is loaded on the first call, so importing this module works without it.
"""

from __future__ import annotations

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
        kernel: ``"auto"`` picks the fastest kernel for the number of rows; ``"gemv"``, ``"mma"``
            (tensor cores, sm_80+) or ``"portable"`` force one.
    """
    return load("awq_inference_engine").awq_w4a16_gemm(x, qweight, scales, zeros, layout, group_size, kernel)
