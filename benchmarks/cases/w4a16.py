"""W4A16 (4-bit weights, fp16 activations), both layouts, against cuBLAS fp16 on the dequantized weight.

The packed weights are random bit patterns made directly on the GPU (every nibble is a valid code;
the benchmark measures speed, the tests check values), so large shapes need no CPU packing.
"""

from __future__ import annotations

import torch

from awq_kernels import ops
from awq_kernels._extension import sm90a_runs
from benchmarks.harness import Case

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672), (28672, 8192)]  # (K, N)
MS = [1, 4, 16, 64, 128, 256, 1024, 4096]
# Explicit "wgmma" variants (the cp.async wgmma kernel, still selectable; M = 4 against "gemv"), and from
# M = 16 the warp-specialized TMA variant "wgmma_ws" that auto takes on H100 from M = 17 (against "mma" at 16).
WGMMA_MS = (4, 16, 64, 128, 256, 1024, 4096)
MMA_MS = (16, 64, 128, 256)  # explicit "mma" variants: the mma.sync GEMM that wgmma must beat
GROUP = 128
DTYPE = torch.float16


def _padded_groups(k: int) -> int:
    return 8 * ((k // GROUP + 7) // 8)  # Gp for G = 128


def _weights(k: int, n: int, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gp = _padded_groups(k)
    if layout == "v2":
        qweight = torch.randint(-(2**15), 2**15, (n // 4, k), dtype=torch.int16, device="cuda")
        scales = torch.rand(gp, n, dtype=DTYPE, device="cuda") * 0.02 + 0.001
        zeros = -scales * torch.randint(0, 16, (gp, n), device="cuda").to(DTYPE)
    else:
        qweight = torch.randint(-(2**31), 2**31 - 1, (n, k // 8), dtype=torch.int32, device="cuda")
        scales = torch.rand(n, gp, dtype=DTYPE, device="cuda") * 0.02 + 0.001
        zeros = torch.randint(-(2**31), 2**31 - 1, (n, gp // 8), dtype=torch.int32, device="cuda")
    return qweight, scales, zeros


def cases(quick: bool) -> list[Case]:
    wgmma_ms = WGMMA_MS if sm90a_runs() else ()
    shapes = [(4096, 4096), (28672, 8192)] if quick else SHAPES
    ms = [1, 16, 64, 1024] if quick else MS
    out: list[Case] = []
    for k, n in shapes:
        dense = torch.randn(n, k, dtype=DTYPE, device="cuda")  # stands in for the dequantized weight
        for layout in ("v2", "v1"):
            qweight, scales, zeros = _weights(k, n, layout)
            weight_bytes = sum(t.numel() * t.element_size() for t in (qweight, scales, zeros))
            for m in ms:
                x = torch.randn(m, k, dtype=DTYPE, device="cuda")
                kernels = ["auto"]
                if layout == "v2" and m <= 16:
                    kernels += ["gemv_shared_x"]  # against auto's per-warp GEMV where that is its choice
                if (layout == "v2" and m in MMA_MS) or m == 16:
                    kernels += ["mma"]  # v1 at M = 16: against auto's GEMV there
                if m in wgmma_ms:
                    kernels += ["wgmma", "wgmma_ws"] if m >= 16 else ["wgmma"]
                for kernel in kernels:
                    out.append(Case(
                        family="w4a16",
                        name=f"{layout} K{k} N{n} M{m} {kernel}",
                        ours=lambda x=x, q=qweight, s=scales, z=zeros, layout=layout, kernel=kernel: ops.w4a16_gemm(
                            x, q, s, z, group_size=GROUP, layout=layout, kernel=kernel),
                        baseline=lambda x=x, w=dense: x @ w.t(),
                        baseline_name="cuBLAS fp16",
                        bytes_moved=weight_bytes + 2 * m * k + 2 * m * n,
                        flops=2 * m * n * k,
                        extra={"M": m, "N": n, "K": k, "layout": layout, "kernel": kernel},
                    ))
    return out
