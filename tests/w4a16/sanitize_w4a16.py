"""Run every W4A16 kernel once on small shapes, for compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python tests/w4a16/sanitize_w4a16.py
    compute-sanitizer --tool racecheck python tests/w4a16/sanitize_w4a16.py

The shapes have N and K tails (N = 4 * 37, and N = 149 in Format B; K = 64 * 21 or 128 * 11) and M
tails, one long-K shape so that the split-K paths (fp32 partials and their reduction) run too, and a
wide one at M = 1 (the GEMV's grid of more than 2 CTAs per SM); on sm_90a one wide shape (N = 28672)
gives wgmma_ws whole waves of tiles before its stream-K rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import awq_inference_engine as aie  # noqa: E402
from awq_kernels import ops  # noqa: E402
from tests.utils import sm90a_runs  # noqa: E402
from tests.w4a16.test_w4a16_gpu import make_weight  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    # The Hopper kernels where they can run (sm_90a build, compute capability 9.0): wgmma's tiles
    # 128 x 16 .. 128; wgmma_ws's 192 x 64 (M <= 64) and 128 x 128 / 256 with fewer tiles than SMs
    # (its stream-K part alone: cut tiles and their fixup).
    wgmma = ("wgmma", "wgmma_ws") if sm90a_runs() else ()
    for layout in ("v2", "v1"):
        for dtype in (torch.float16, torch.bfloat16):
            for g in (32, 64, 128):
                k_tail = 64 * 21 if g != 128 else 128 * 11
                # Format B allows any N: N = 149 has a partial group of four rows (the fixup's unit).
                shapes = ((4 * 37, k_tail), (64, 8192)) + (((149, k_tail),) if layout == "v1" else ())
                for n, k in shapes:
                    packed = make_weight(n, k, g, dtype, layout)[:3]  # qweight, scales, zeros
                    for m in (1, 3, 12, 17, 70, 300, 600):
                        x = torch.randn(m, k, dtype=dtype, device="cuda")
                        for kernel in ("gemv", "gemv_shared_x", "mma", "portable") + wgmma:
                            ops.w4a16_gemm(x, *packed, group_size=g, layout=layout, kernel=kernel)
                        if layout == "v1":
                            aie.gemm_forward_cuda(x, *packed, g, 3)
                            aie.gemv_forward_cuda(x, *packed, g)
                        elif g == 128:
                            aie.gemm_forward_cuda_new(x, *packed)
                            aie.gemv_forward_cuda_new(x, *packed, m, n, k, g)
                # M = 1 on a grid of more than 2 CTAs per SM: the GEMV's CTAs of 4 warps
                packed = make_weight(4 * 2501, 128 * 3, g, dtype, layout)[:3]
                x = torch.randn(1, 128 * 3, dtype=dtype, device="cuda")
                ops.w4a16_gemm(x, *packed, group_size=g, layout=layout, kernel="gemv")
            if wgmma:  # whole waves, then the stream-K rest: 150 tiles of 192 x 64 (M = 64), 224 of 128 x 128
                packed = make_weight(28672, 640, 128, dtype, layout)[:3]
                for m in (64, 100):
                    x = torch.randn(m, 640, dtype=dtype, device="cuda")
                    ops.w4a16_gemm(x, *packed, group_size=128, layout=layout, kernel="wgmma_ws")
    torch.cuda.synchronize()
    print(f"sanitize_w4a16: all kernels ran (wgmma: {'yes' if wgmma else 'no, not an sm_90a build on sm_90'})")


if __name__ == "__main__":
    main()
