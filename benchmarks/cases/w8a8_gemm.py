"""W8A8 GEMMs against torch._int_mm (cuBLASLt int8) followed by the same per-channel/per-token scaling
(and bias) in torch, which costs extra passes over the int32 result.

Cases without a kernel suffix are the compat ops (kernel "auto"); at M >= 256 (full runs) each kernel
is also forced: "mma" (mma.sync) and, on an sm_90a build on a compute capability 9.0 GPU, "wgmma"."""

from __future__ import annotations

import itertools
from typing import Optional

import torch

import awq_inference_engine
from awq_kernels._extension import sm90a_runs
from benchmarks.harness import Case

KERNEL_MIN_M = 256  # where the kernel choice matters (M <= 128 always runs mma.sync)


M_VALUES = (16, 256, 4096)
KN_SHAPES = ((8192, 28672), (28672, 8192), (4096, 4096))  # 70B MLP up/gate and down, plus a square one
INT_MM_MIN_M = 17  # torch._int_mm on CUDA requires more than 16 rows


def _torch_path(a: torch.Tensor, wt: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor,
                bias: Optional[torch.Tensor], m: int) -> torch.Tensor:
    acc = torch._int_mm(a, wt)[:m]
    y = acc.float().mul_(wscales.float()).mul_(ascales.float()[:, None])
    if bias is not None:
        y.add_(bias.float())
    return y.half()


def _nonzero_int8(*shape: int) -> torch.Tensor:
    x = torch.randint(-127, 127, shape, dtype=torch.int16, device="cuda")
    return torch.where(x >= 0, x + 1, x).to(torch.int8)


def cases(quick: bool) -> list[Case]:
    out = []
    for k, n in KN_SHAPES:
        w = _nonzero_int8(n, k)
        wt = w.t()  # [K, N] column-major view, the layout cuBLASLt's int8 path wants
        wscales = (torch.rand(n, device="cuda") * 0.01 + 1e-3).half()
        bias = torch.randn(n, device="cuda").half()
        for m in M_VALUES:
            a = _nonzero_int8(m, k)
            # Padding for torch._int_mm's M > 16 rule is done once here, outside the timed call.
            a_int_mm = torch.cat([a, a[: INT_MM_MIN_M - m]]) if m < INT_MM_MIN_M else a
            ascales = (torch.rand(m, device="cuda") * 0.01 + 1e-3).half()
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")
            kernels = ["auto"]
            if not quick and m >= KERNEL_MIN_M:
                kernels += ["mma"] + (["wgmma"] if sm90a_runs() else [])
            for with_bias, kernel in itertools.product((False, True) if not quick else (False,), kernels):
                nbytes = m * k + n * k + 2 * (n + m) + 2 * m * n + (2 * n if with_bias else 0)
                b = bias if with_bias else None
                if kernel != "auto":
                    def ours(a=a, w=w, wscales=wscales, ascales=ascales, y=y, b=b, kernel=kernel) -> None:
                        torch.ops.awq_inference_engine.awq_w8a8_gemm(a, w, wscales, ascales, y, b, kernel)
                elif with_bias:
                    def ours(a=a, w=w, wscales=wscales, ascales=ascales, y=y, bias=bias) -> None:
                        awq_inference_engine.w8a8_gemm_fuse_bias_forward_cuda(a, w, wscales, ascales, y, bias)
                else:
                    def ours(a=a, w=w, wscales=wscales, ascales=ascales, y=y) -> None:
                        awq_inference_engine.w8a8_gemm_forward_cuda(a, w, wscales, ascales, y)
                suffix = "" if kernel == "auto" else f" {kernel}"
                out.append(Case(
                    family="w8a8_gemm", name=f"{'bias ' if with_bias else ''}M{m} K{k} N{n}{suffix}",
                    ours=ours,
                    baseline=lambda a=a_int_mm, wt=wt, ws=wscales, s=ascales, b=b, m=m:
                        _torch_path(a, wt, ws, s, b, m),
                    baseline_name="_int_mm+scale",
                    bytes_moved=nbytes, flops=2 * m * n * k,
                    extra={"kernel": kernel},
                ))
    return out
