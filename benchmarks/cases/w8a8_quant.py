"""Per-token int8 row kernels (invoke_quant, rms_norm_general = LayerNorm + quant, gelu_and_quant)
against the same math in torch eager."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import awq_inference_engine
from benchmarks.harness import Case


def _torch_quant(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = y.float().abs().amax(-1, keepdim=True)
    codes = (y.float() * (127.0 / amax)).round().clamp(-128, 127).to(torch.int8)
    return codes, (amax / 127.0).half()


def _torch_layernorm_quant(x, weight, bias, eps) -> tuple[torch.Tensor, torch.Tensor]:
    return _torch_quant(F.layer_norm(x.float(), (x.size(-1),), weight.float(), bias.float(), eps))


def _torch_gelu_quant(x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = F.gelu(x.float(), approximate="tanh")
    return (*_torch_quant(g), g.half())


def cases(quick: bool) -> list[Case]:
    shapes = [(16384, 4096)] if quick else [(16384, 4096), (16384, 8192), (16, 4096), (4096, 1152)]
    out = []
    for tokens, hidden in shapes:
        for dtype in (torch.float16,) if quick else (torch.float16, torch.bfloat16):
            x = torch.randn(tokens, hidden, dtype=dtype, device="cuda")
            codes = torch.empty(tokens, hidden, dtype=torch.int8, device="cuda")
            scale = torch.empty(tokens, dtype=torch.float16, device="cuda")
            n, elt = x.numel(), x.element_size()
            out.append(Case(
                family="w8a8_quant", name=f"invoke_quant {str(dtype)[6:]} {tokens}x{hidden}",
                ours=lambda x=x, q=codes, s=scale: awq_inference_engine.invoke_quant(q, x, s),
                baseline=lambda x=x: _torch_quant(x), baseline_name="torch eager",
                bytes_moved=n * elt + n + tokens * 2,
            ))
            weight = torch.rand(hidden, dtype=dtype, device="cuda") + 0.5
            bias = torch.randn(hidden, dtype=dtype, device="cuda")
            out.append(Case(
                family="w8a8_quant", name=f"rms_norm_general(LN+q) {str(dtype)[6:]} {tokens}x{hidden}",
                ours=lambda x=x, q=codes, s=scale, w=weight, b=bias:
                    awq_inference_engine.rms_norm_general(q, x, w, b, s, 1e-6, True),
                baseline=lambda x=x, w=weight, b=bias: _torch_layernorm_quant(x, w, b, 1e-6),
                baseline_name="torch eager", bytes_moved=n * elt + n + tokens * 2 + 2 * hidden * elt,
            ))
        x = torch.randn(tokens, hidden, dtype=torch.float16, device="cuda")
        codes = torch.empty(tokens, hidden, dtype=torch.int8, device="cuda")
        scale = torch.empty(tokens, dtype=torch.float16, device="cuda")
        tmp = torch.empty(tokens * hidden, dtype=torch.float16, device="cuda")
        n = x.numel()
        out.append(Case(
            family="w8a8_quant", name=f"gelu_and_quant float16 {tokens}x{hidden}",
            ours=lambda x=x, q=codes, s=scale, t=tmp: awq_inference_engine.gelu_and_quant(q, x, s, t),
            baseline=lambda x=x: _torch_gelu_quant(x), baseline_name="torch eager",
            bytes_moved=2 * n + 2 * n + n + tokens * 2,
        ))
    return out
