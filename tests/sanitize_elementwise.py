"""Run each rotary / activation / int8 row kernel once on small shapes (vectorized and scalar paths).

For compute-sanitizer, e.g.:
    compute-sanitizer --tool memcheck  python tests/sanitize_elementwise.py
    compute-sanitizer --tool racecheck python tests/sanitize_elementwise.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import awq_inference_engine as aie  # noqa: E402


def main() -> None:
    dev = "cuda"
    for dtype, head_size, rot in [(torch.float16, 64, 64), (torch.float32, 10, 6), (torch.float64, 32, 16)]:
        positions = torch.randint(0, 16, (2, 3), device=dev)
        qkv = torch.randn(2, 3, 6 + 2 * 2, head_size, dtype=dtype, device=dev)  # GQA views of a fused qkv
        cache = torch.randn(16, rot, dtype=dtype, device=dev)
        aie.rotary_embedding_neox(positions, qkv[:, :, :6], qkv[:, :, 6:8], head_size, cache)
    for dtype, head_size, d2 in [(torch.bfloat16, 64, 32), (torch.float32, 10, 6)]:
        x = torch.randn(2, 3, 12, head_size, dtype=dtype, device=dev)[:, :, 4:8]
        aie.fused_rope_with_pos_forward_func(x, torch.randn(6, d2, device=dev), True)
        aie.fused_rope_with_pos_forward_func(x.transpose(2, 3).contiguous().transpose(2, 3), torch.randn(6, d2, device=dev), False)
    for dtype, two_d in [(torch.float16, 2 * 40), (torch.bfloat16, 2 * 13), (torch.float32, 2 * 300)]:
        aie.silu_and_mul(torch.randn(3, two_d, dtype=dtype, device=dev))
    for dtype, hidden in [(torch.float16, 4096), (torch.bfloat16, 33), (torch.float32, 5001), (torch.float16, 24)]:
        x = torch.randn(5, hidden, dtype=dtype, device=dev)
        out = torch.empty(5, hidden, dtype=torch.int8, device=dev)
        scale = torch.empty(5, dtype=torch.float16, device=dev)
        aie.invoke_quant(out, x, scale)
        w = torch.rand(hidden, dtype=dtype, device=dev)
        b = torch.randn(hidden, dtype=dtype, device=dev)
        aie.rms_norm_general(out, x, w, b, scale, 1e-6, True)
        aie.rms_norm_general(out, x, w, b, torch.ones(1, dtype=torch.float16, device=dev), 1e-6, False)
        if dtype == torch.float16:
            aie.gelu_and_quant(out, x, scale, torch.empty(5 * hidden, dtype=torch.float16, device=dev))
    x = torch.randn(5, 7, dtype=torch.float16, device=dev)
    aie.gelu_and_quant(torch.empty(5, 7, dtype=torch.int8, device=dev), x, torch.empty(5, dtype=torch.float16, device=dev),
                       torch.empty(35, dtype=torch.float16, device=dev))
    torch.cuda.synchronize()
    print("sanitize_elementwise: all kernels ran")


if __name__ == "__main__":
    main()
