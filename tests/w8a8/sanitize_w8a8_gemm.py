"""One small run of each W8A8 GEMM kernel (every tile config, plain and bias, M/N/K tails), for
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import awq_inference_engine  # noqa: E402
from tests.w8a8.test_w8a8_gemm import nonzero_int8, random_scales, reference, ulp_distance  # noqa: E402

# Each tile config with M, N and K tails: small (M <= 16), medium, large (M > 128 with at least one
# large tile per SM: 3 x 44 = 132 tiles here); small and medium also with split-K (few tiles, long
# K: two splits, the last ending in a K tail) and its reduce kernel.
SHAPES = [(5, 200, 96), (3, 72, 2064), (100, 136, 208), (40, 136, 2064), (300, 11224, 96)]


def main() -> int:
    failures = 0
    for m, n, k in SHAPES:
        a, w = nonzero_int8(m, k), nonzero_int8(n, k)
        wscales, ascales = random_scales(n), random_scales(m)
        bias = torch.randn(n, device="cuda").half()
        for with_bias in (False, True):
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            if with_bias:
                awq_inference_engine.w8a8_gemm_fuse_bias_forward_cuda(a, w, wscales, ascales, out, bias)
            else:
                awq_inference_engine.w8a8_gemm_forward_cuda(a, w, wscales, ascales, out)
            expected = reference(a, w, wscales, ascales, bias if with_bias else None).half()
            worst = ulp_distance(out, expected).max().item() if torch.isfinite(out).all() else float("inf")
            ok = worst <= 1
            failures += not ok
            print(f"M={m} N={n} K={k} bias={with_bias}: max {worst} ulp {'ok' if ok else 'WRONG'}")
    torch.cuda.synchronize()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
