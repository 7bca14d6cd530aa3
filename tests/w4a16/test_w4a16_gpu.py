"""W4A16 kernels (both layouts, every kernel choice) against a float64 reference of the dequantized weight."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import awq_inference_engine as aie
from awq_kernels import ops
from tests.utils import golden_bound, relerr, sm90a_built, sm90a_runs

quantization = pytest.importorskip("awq_kernels.quantization", reason="packers come from the w4a16-py branch")

pytestmark = pytest.mark.gpu

KERNELS = ("auto", "gemv", "gemv_shared_x", "mma", "wgmma", "wgmma_ws", "portable")
WGMMA_KERNELS = ("wgmma", "wgmma_ws")
DTYPES = (torch.float16, torch.bfloat16)
# Tolerances vs the float64 reference: the tensor-core path rounds each weight to T once (as the
# original), the CUDA-core path does not; both round the output to T.
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "llm-awq-h100.pt"


def require(kernel: str) -> None:
    """Kernels "wgmma" and "wgmma_ws" need an sm_90a build and a compute capability 9.0 GPU."""
    if kernel in WGMMA_KERNELS and not sm90a_runs():
        pytest.skip(f"kernel {kernel}: no sm_90a code in this build" if not sm90a_built()
                    else f"kernel {kernel} needs compute capability 9.0, not {torch.cuda.get_device_capability()}")


class Packed(NamedTuple):
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor  # v2: scaled zeros; v1: qzeros
    weight: torch.Tensor  # float64 [N, K], what the kernels multiply by


def make_weight(n: int, k: int, g: int, dtype: torch.dtype, layout: str) -> Packed:
    """Fresh random codes, zeros and scales (never zero), packed by awq_kernels.quantization."""
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    zeros = torch.randint(0, 16, (n, k // g), dtype=torch.uint8)
    scales = torch.rand(n, k // g) * 0.02 + 0.002
    if layout == "v2":
        c = quantization.pack_format_c(q, zeros, scales, g, dtype)
        weight = quantization.dequantize_format_c(c.qweight, c.scales, c.scaled_zeros, g)
        return Packed(c.qweight.cuda(), c.scales.cuda(), c.scaled_zeros.cuda(), weight.cuda())
    b = quantization.pack_format_b(q, zeros, scales, g, dtype)
    weight = quantization.dequantize(q, zeros, b.scales[:, : k // g], g, torch.float64)
    return Packed(b.qweight.cuda(), b.scales.cuda(), b.qzeros.cuda(), weight.cuda())


def reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.double() @ weight.t()


def leading_shape(m: int, rank: int) -> tuple[int, ...]:
    if rank == 1:
        return ()
    if rank == 3 and m % 2 == 0:
        return (2, m // 2)
    return (m,)


def check(out: torch.Tensor, x: torch.Tensor, w: Packed, dtype: torch.dtype, what: str) -> None:
    assert out.dtype == dtype and out.shape == (*x.shape[:-1], w.weight.shape[0]), what
    assert torch.isfinite(out).all(), f"{what}: unwritten (NaN) or non-finite outputs"
    err = relerr(out, reference(x, w.weight))
    assert err <= TOL[dtype], f"{what}: relerr {err:.2e} > {TOL[dtype]:.0e}"


def check_rows(w: Packed, ms: Iterable[int], g: int, layout: str, kernel: str, dtype: torch.dtype,
               what: str = "") -> None:
    """For each M: fresh activations [M, K], the op's output checked against the reference."""
    k = w.weight.shape[1]
    for m in ms:
        x = torch.randn(m, k, dtype=dtype, device="cuda")
        check(run_new_op(x, w, g, layout, kernel), x, w, dtype, f"M={m} {what}".rstrip())


def run_new_op(x: torch.Tensor, w: Packed, g: int, layout: str, kernel: str) -> torch.Tensor:
    # A poisoned buffer of the output's size is allocated and freed first, so a kernel that skips
    # outputs would most likely read back NaN from the caching allocator.
    torch.full((*x.shape[:-1], w.weight.shape[0]), float("nan"), dtype=x.dtype, device="cuda")
    return ops.w4a16_gemm(x, w.qweight, w.scales, w.zeros, group_size=g, layout=layout, kernel=kernel)


SMALL_M = [1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 33, 64, 127, 255, 1000]


@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g", [32, 64, 128])
@pytest.mark.parametrize("kernel", KERNELS)
def test_small_shapes_all_m(layout: str, dtype: torch.dtype, g: int, kernel: str) -> None:
    require(kernel)
    # N = 4 * 37 (not a multiple of 8 or of any tile), K = 64 * 21 (odd number of 64-blocks, not a
    # multiple of 256 or 1024: masked K tails in every kernel).
    n, k = 4 * 37, 64 * 21 if g != 128 else 128 * 11
    w = make_weight(n, k, g, dtype, layout)
    for m in SMALL_M:
        for rank in (1, 2, 3) if m <= 2 or m % 2 == 0 else (2,):
            if rank == 1 and m != 1:
                continue
            x = torch.randn(*leading_shape(m, rank), k, dtype=dtype, device="cuda")
            check(run_new_op(x, w, g, layout, kernel), x, w, dtype, f"M={m} rank={rank}")


LARGE_SHAPES = [
    (256, 28672, (1, 4, 16, 64)),     # long K: fp32 accumulation (relerr <= 2e-3 in fp16)
    (28672, 256, (1, 7, 33)),         # many CTAs along N
    (1004, 3200, (1, 3, 17, 255)),    # odd tiles: N = 4 * 251, K = 64 * 50
    (512, 1024, (4096,)),             # large M
]
# The CUDA-core kernels at M = 4096 are slow by design: covered once, in fp16.
LARGE_CASES = [(dtype, kernel, *shape) for dtype in DTYPES for kernel in KERNELS for shape in LARGE_SHAPES
               if not (kernel in ("gemv", "portable") and max(shape[2]) > 256 and dtype == torch.bfloat16)]


@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize(("dtype", "kernel", "n", "k", "ms"), LARGE_CASES, ids=str)
def test_large_shapes(layout: str, dtype: torch.dtype, kernel: str, n: int, k: int, ms: tuple[int, ...]) -> None:
    require(kernel)
    check_rows(make_weight(n, k, 128, dtype, layout), ms, 128, layout, kernel, dtype)


@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g", [32, 64, 128])
@pytest.mark.parametrize("n", [4 * 37, 4 * 2501])
def test_gemv_one_row_grids(layout: str, dtype: torch.dtype, g: int, n: int) -> None:
    """M = 1 runs CTAs of 8 warps on grids of one wave and of 4 warps on larger ones (N = 4 * 2501:
    more than 2 CTAs per SM on GPUs of up to 312 SMs), with N and K tails and a K (23 steps of 128)
    that the warps of a CTA share unevenly."""
    k = 64 * 45 if g != 128 else 128 * 23
    check_rows(make_weight(n, k, g, dtype, layout), (1,), g, layout, "gemv", dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compat_v2(dtype: torch.dtype) -> None:
    w = make_weight(4 * 37, 128 * 7, 128, dtype, "v2")
    for m in (1, 5, 7, 8, 31, 33, 200):
        x = torch.randn(1, m, 128 * 7, dtype=dtype, device="cuda")
        check(aie.gemm_forward_cuda_new(x, w.qweight, w.scales, w.zeros), x, w, dtype, f"gemm_new M={m}")
    for g in (32, 64, 128):
        w = make_weight(4 * 37, 128 * 7, g, dtype, "v2")
        for m in (1, 3, 7, 12):
            x = torch.randn(m, 128 * 7, dtype=dtype, device="cuda")
            out = aie.gemv_forward_cuda_new(x, w.qweight, w.scales, w.zeros, m, 4 * 37, 128 * 7, g)
            check(out, x, w, dtype, f"gemv_new G={g} M={m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g", [32, 64, 128])
def test_compat_v1(dtype: torch.dtype, g: int) -> None:
    n, k = 136, 1024 + 384  # (K/32) % split != 0 for most splits: the original's bug
    w = make_weight(n, k, g, dtype, "v1")
    for m in (1, 5, 9, 40, 130):
        x = torch.randn(m, k, dtype=dtype, device="cuda")
        for split in (1, 2, 3, 8, 16, 1000):
            out = aie.gemm_forward_cuda(x, w.qweight, w.scales, w.zeros, g, split)
            check(out, x, w, dtype, f"gemm M={m} split={split}")
        check(aie.gemv_forward_cuda(x, w.qweight, w.scales, w.zeros, g), x, w, dtype, f"gemv M={m}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_deterministic_and_misaligned_input(kernel: str) -> None:
    require(kernel)
    w = make_weight(8192, 4096, 128, torch.float16, "v2")
    for m in (1, 16, 64):
        flat = torch.randn(m * 4096 + 1, dtype=torch.float16, device="cuda")
        x = flat[1:].view(m, 4096)  # contiguous but 2 bytes off a 16-byte boundary
        first = run_new_op(x, w, 128, "v2", kernel)
        second = run_new_op(x, w, 128, "v2", kernel)
        assert torch.equal(first, second), f"M={m}: results differ between runs (split-K order?)"
        check(first, x, w, torch.float16, f"misaligned M={m}")


# The wgmma kernel's CTA tiles (weight rows x tokens) are 128 x 16, 128 x 64, 128 x 128 and 256 x 128:
# M and N on both sides of each boundary, with partial tiles. wgmma_ws (192 x 64 up to M = 64, beyond
# 128 x {128, 256} by a cost model) has fewer tiles than SMs here, so every tile goes through its
# stream-K part (cut along K into pieces that stream_k_fixup_kernel adds up, or whole on one CTA).
WGMMA_M = [1, 9, 16, 17, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300, 383, 384, 511, 513]


@pytest.mark.parametrize("kernel", WGMMA_KERNELS)
@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g", [32, 64, 128])
@pytest.mark.parametrize("n", [4 * 37, 4 * 75, 512])
def test_wgmma_tiles(kernel: str, layout: str, dtype: torch.dtype, g: int, n: int) -> None:
    require(kernel)
    k = 64 * 21 if g != 128 else 128 * 11
    check_rows(make_weight(n, k, g, dtype, layout), WGMMA_M, g, layout, kernel, dtype, f"N={n} K={k}")


@pytest.mark.parametrize("kernel", WGMMA_KERNELS)
@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wgmma_odd_k_tiles(kernel: str, layout: str, dtype: torch.dtype) -> None:
    # G = 32 and K = 32 * 41 (v1 only: v2 needs K % 64 == 0): the last k tile is half outside K
    # (zero-filled activations and weights); 21 k tiles also wrap every ring depth (6, 10, 16 stages).
    require(kernel)
    k = 32 * 41 if layout == "v1" else 64 * 21
    check_rows(make_weight(4 * 37, k, 32, dtype, layout), (17, 64, 65, 200, 300), 32, layout, kernel, dtype, f"K={k}")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [149, 150, 151])
def test_v1_any_out_features(kernel: str, dtype: torch.dtype, n: int) -> None:
    # Format B packs along K, so N need not be a multiple of 4: every kernel masks the rows past N, also
    # where wgmma_ws cuts a tile along K (K = 128 * 11: 22 k tiles in two pieces on 132 SMs) and
    # stream_k_fixup_kernel adds the pieces up four rows at a time.
    require(kernel)
    ms = (1, 5, 16, 17, 33, 64, 65, 300) if kernel not in ("gemv", "portable") else (1, 5, 16, 17, 33)
    check_rows(make_weight(n, 128 * 11, 128, dtype, "v1"), ms, 128, "v1", kernel, dtype, f"N={n}")


# Beyond M = 64 the wgmma CTA tile depends on the grid (w4a16.cu, wgmma_tile): on a 132-SM H100 / H200
# these (N, M) pairs give 128 x 64 (few CTAs: M = 300), 128 x 128 (M = 8000, 1000, 100) and 256 x 128
# (M = 15000, 2000, 200), all with partial last tiles. wgmma_ws (plan_wgmma_ws_tile) on 132 SMs: whole
# waves of tiles and a stream-K rest (make_stream_k_schedule) with 192 x 64 (N = 28672, M = 33, 64:
# 150 tiles), 128 x 128 (M = 100, 224 tiles) and 128 x 128 or 128 x 256 by the cost model (M >= 200).
WGMMA_GRID_CASES = [(4 * 37, 300), (4 * 37, 8000), (4 * 37, 15000), (2052, 1000), (2052, 2000), (28672, 33),
                    (28672, 64), (28672, 100), (28672, 200)]


@pytest.mark.parametrize("kernel", WGMMA_KERNELS)
@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("g", [32, 128])
def test_wgmma_token_tiles(kernel: str, layout: str, dtype: torch.dtype, g: int) -> None:
    require(kernel)
    k = 640
    for n, m in WGMMA_GRID_CASES:
        check_rows(make_weight(n, k, g, dtype, layout), (m,), g, layout, kernel, dtype, f"N={n}")


@pytest.mark.parametrize("kernel", WGMMA_KERNELS)
@pytest.mark.parametrize("layout", ["v2", "v1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wgmma_long_k(kernel: str, layout: str, dtype: torch.dtype) -> None:
    # K = 28672 (448 k tiles, split K at these sizes): fp32 accumulation over the whole length.
    require(kernel)
    check_rows(make_weight(256, 28672, 128, dtype, layout), (16, 64, 300), 128, layout, kernel, dtype)


@pytest.mark.skipif(sm90a_runs(), reason="the wgmma kernels run here")
@pytest.mark.parametrize("kernel", WGMMA_KERNELS)
def test_wgmma_unavailable_error(kernel: str) -> None:
    w = make_weight(4 * 37, 128 * 7, 128, torch.float16, "v2")
    x = torch.randn(20, 128 * 7, dtype=torch.float16, device="cuda")
    with pytest.raises(RuntimeError, match=f'kernel "{kernel}" needs an sm_90a build and a compute capability 9.0'):
        run_new_op(x, w, 128, "v2", kernel)


def _golden_cases(prefix: str) -> list[str]:
    if not GOLDEN.exists():
        return []
    return sorted(n for n in torch.load(GOLDEN, weights_only=True)["cases"] if n.startswith(prefix))


@pytest.mark.parametrize("name", [n for p in ("gemv_forward_cuda_new/", "gemm_forward_cuda_new/",
                                              "gemm_forward_cuda/", "gemv_forward_cuda/") for n in _golden_cases(p)])
def test_golden(name: str) -> None:
    case = torch.load(GOLDEN, weights_only=True)["cases"][name]
    inp = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in case["inputs"].items()}
    op = name.split("/")[0]
    if op == "gemv_forward_cuda_new":
        out = aie.gemv_forward_cuda_new(inp["x"], inp["qweight"], inp["scales"], inp["scaled_zeros"],
                                        *(inp["x"].shape[0], 4 * inp["qweight"].shape[0], inp["x"].shape[-1]), 128)
    elif op == "gemm_forward_cuda_new":
        out = aie.gemm_forward_cuda_new(inp["x"], inp["qweight"], inp["scales"], inp["scaled_zeros"])
    elif op == "gemm_forward_cuda":
        out = aie.gemm_forward_cuda(inp["x"], inp["qweight"], inp["scales"], inp["qzeros"], inp["group_size"],
                                    inp["split_k_iters"])
    else:
        out = aie.gemv_forward_cuda(inp["x"], inp["qweight"], inp["scales"], inp["qzeros"], inp["group_size"])
    ref = case["reference"]
    ours = relerr(out, ref)
    assert ours <= golden_bound(case, out.dtype), f"ours {ours:.2e} vs original {case['relerr_vs_reference']:.2e}"
    assert relerr(out, case["outputs"]["out"]) <= 2 * case["relerr_vs_reference"] + 1e-3
