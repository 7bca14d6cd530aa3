"""RMSNorm (`layernorm_forward_cuda`) against torch eager (HF LlamaRMSNorm's formula)."""

from __future__ import annotations

import torch

import awq_inference_engine
from benchmarks.harness import Case


def _torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


def cases(quick: bool) -> list[Case]:
    shapes = [(4096, 4096), (16384, 8192)] if quick else [(4096, 4096), (16384, 8192), (4096, 11008), (1, 4096),
                                                           (16384, 1000)]
    out = []
    for dtype in (torch.float16, torch.bfloat16):
        for tokens, hidden in shapes:
            x = torch.randn(tokens, hidden, dtype=dtype, device="cuda")
            w = torch.randn(hidden, dtype=dtype, device="cuda")
            y = torch.empty_like(x)
            nbytes = 2 * x.numel() * x.element_size() + w.numel() * w.element_size()
            out.append(Case(
                family="rms_norm", name=f"{str(dtype)[6:]} {tokens}x{hidden}",
                ours=lambda x=x, w=w, y=y: awq_inference_engine.layernorm_forward_cuda(x, w, y, 1e-6),
                baseline=lambda x=x, w=w: _torch_rms_norm(x, w, 1e-6), baseline_name="torch eager",
                bytes_moved=nbytes,
            ))
    return out
