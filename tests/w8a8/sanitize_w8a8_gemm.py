"""One small run of each W8A8 GEMM kernel (every mma.sync tile config and, on an sm_90a build on a
compute capability 9.0 GPU, the wgmma kernel; plain and bias, M/N/K tails, split K), for
compute-sanitizer:

    compute-sanitizer --tool memcheck python tests/w8a8/sanitize_w8a8_gemm.py
    compute-sanitizer --tool racecheck python tests/w8a8/sanitize_w8a8_gemm.py
    compute-sanitizer --tool initcheck python tests/w8a8/sanitize_w8a8_gemm.py
    compute-sanitizer --tool synccheck python tests/w8a8/sanitize_w8a8_gemm.py

Exits non-zero if a result is wrong, so a run that the sanitizer passes is also a correct one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import awq_inference_engine  # noqa: E402
from tests.utils import sm90a_runs  # noqa: E402
from tests.w8a8.test_w8a8_gemm import nonzero_int8, random_scales, reference, ulp_distance  # noqa: E402

# Each tile config with M, N and K tails: small (M <= 16), medium, large (M > 128 with at least one
# large tile per SM: 3 x 44 = 132 tiles here); small and medium also with split-K (few tiles, long
# K: two splits, the last ending in a K tail) and its reduce kernel.
SHAPES = [(5, 200, 96), (3, 72, 2064), (100, 136, 208), (40, 136, 2064), (300, 11224, 96)]
# The wgmma kernel, forced: M, N and K tails of its 128 x 256 x 128 tile, and K split in 2 (16400).
WGMMA_SHAPES = [(5, 200, 96), (300, 11224, 96), (257, 1000, 4112), (40, 136, 16400)]


def gemm(a: torch.Tensor, w: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor, out: torch.Tensor,
         bias: Optional[torch.Tensor], kernel: str) -> None:
    if kernel == "auto" and bias is None:
        awq_inference_engine.w8a8_gemm_forward_cuda(a, w, wscales, ascales, out)
    elif kernel == "auto":
        awq_inference_engine.w8a8_gemm_fuse_bias_forward_cuda(a, w, wscales, ascales, out, bias)
    else:
        torch.ops.awq_inference_engine.awq_w8a8_gemm(a, w, wscales, ascales, out, bias, kernel)


def main() -> int:
    failures = 0
    # mma.sync forced (auto takes wgmma for the large shape on an H100), the compat ops (auto) once.
    runs = [(shape, "mma") for shape in SHAPES] + [(SHAPES[-1], "auto")]
    if sm90a_runs():
        runs += [(shape, "wgmma") for shape in WGMMA_SHAPES]
    for (m, n, k), kernel in runs:
        a, w = nonzero_int8(m, k), nonzero_int8(n, k)
        wscales, ascales = random_scales(n), random_scales(m)
        bias = torch.randn(n, device="cuda").half()
        for with_bias in (False, True):
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            gemm(a, w, wscales, ascales, out, bias if with_bias else None, kernel)
            expected = reference(a, w, wscales, ascales, bias if with_bias else None).half()
            worst = ulp_distance(out, expected).max().item() if torch.isfinite(out).all() else float("inf")
            ok = worst <= 1
            failures += not ok
            print(f"{kernel} M={m} N={n} K={k} bias={with_bias}: max {worst} ulp {'ok' if ok else 'WRONG'}")
    torch.cuda.synchronize()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
