"""silu_and_mul (SwiGLU) against torch eager silu(x[..., :d]) * x[..., d:]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import awq_inference_engine
from benchmarks.harness import Case


def _torch_silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    d = x.size(-1) // 2
    return F.silu(x[..., :d]) * x[..., d:]


def cases(quick: bool) -> list[Case]:
    shapes = [(16384, 14336)] if quick else [(16384, 14336), (4096, 11008), (16384, 28672), (1, 14336), (16, 14336)]
    out = []
    for dtype in (torch.float16, torch.bfloat16):
        for tokens, d in shapes:
            x = torch.randn(tokens, 2 * d, dtype=dtype, device="cuda")
            nbytes = (x.numel() + x.numel() // 2) * x.element_size()
            out.append(Case(
                family="activation", name=f"silu_and_mul {str(dtype)[6:]} {tokens}x2*{d}",
                ours=lambda x=x: awq_inference_engine.silu_and_mul(x),
                baseline=lambda x=x: _torch_silu_and_mul(x), baseline_name="torch eager", bytes_moved=nbytes,
            ))
    return out
