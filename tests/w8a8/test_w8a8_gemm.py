"""W8A8 GEMMs (spec §3.9, §3.10): exact int32 sums, the spec's epilogues, tails, golden vectors, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch

import awq_inference_engine
from awq_kernels.ops import w8a8_linear
from tests.utils import poison, sass_functions, sm90a_built, sm90a_runs

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "llm-awq-h100.pt"
M_SWEEP = [1, 7, 16, 17, 100, 128, 129, 256, 257, 1000, 4096]  # crosses every tile config's boundaries
# N, K: tiny, N and K tails, split-K (few tiles, long K; 4112 also gives a K tail in the last split)
# (8200, 96) gives M >= 1000 enough tiles for the large config (with N and K tails).
NK_SWEEP = [(8, 64), (200, 96), (264, 4096), (136, 8192), (72, 4112), (8200, 96), (1000, 112)]


def nonzero_int8(*shape: int, device: str = "cuda") -> torch.Tensor:
    """Uniform over [-128, 127] without 0, so every element contributes."""
    x = torch.randint(-128, 127, shape, dtype=torch.int16, device=device)
    return torch.where(x >= 0, x + 1, x).to(torch.int8)


def random_signs(*shape: int, device: str = "cuda") -> torch.Tensor:
    return (torch.randint(0, 2, shape, device=device, dtype=torch.int8) * 2 - 1).to(torch.int8)


def random_scales(n: int, device: str = "cuda") -> torch.Tensor:
    """Positive fp16 scales of the magnitude amax/127 produces (never zero)."""
    return (torch.rand(n, device=device) * 0.01 + 1e-3).half()


def exact_acc(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_k a[m,k] * w[n,k] in float64: every partial sum is an integer < 2^53, so this is exact."""
    return a.double() @ w.double().T


def reference(a: torch.Tensor, w: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor,
              bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The spec's fp32 epilogue on the exact sums, one IEEE rounding per operation (torch elementwise)."""
    acc = exact_acc(a, w).float()
    ws = wscales.float()[None, :]
    as_ = ascales.float().reshape(-1)[:, None]
    if bias is None:
        return acc * (ws * as_)
    return (acc * ws) * as_ + bias.float()[None, :]


def ulp_distance(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Distance in fp16 ulps between two fp16 tensors (counting representable values between them)."""
    def ordered(t: torch.Tensor) -> torch.Tensor:
        bits = t.contiguous().view(torch.int16).int()
        return torch.where(bits >= 0, bits, -(bits & 0x7FFF))
    return (ordered(actual) - ordered(expected)).abs()


def run(a: torch.Tensor, w: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor,
        bias: Optional[torch.Tensor]) -> torch.Tensor:
    out = poison(torch.empty(a.shape[0], w.shape[0], dtype=torch.float16, device=a.device))
    if bias is None:
        awq_inference_engine.w8a8_gemm_forward_cuda(a, w, wscales, ascales, out)
    else:
        awq_inference_engine.w8a8_gemm_fuse_bias_forward_cuda(a, w, wscales, ascales, out, bias)
    return out


def assert_within_one_ulp(out: torch.Tensor, expected32: torch.Tensor) -> None:
    assert torch.isfinite(out).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    expected = expected32.half()
    assert torch.isfinite(expected).all(), "test inputs overflow fp16: pick smaller scales"
    dist = ulp_distance(out, expected)
    assert dist.max().item() <= 1, f"{(dist > 1).sum().item()} outputs more than 1 fp16 ulp off, max {dist.max()}"


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "bias"])
@pytest.mark.parametrize("n,k", NK_SWEEP)
@pytest.mark.parametrize("m", M_SWEEP)
def test_epilogue_within_one_ulp(m: int, n: int, k: int, fused: bool) -> None:
    a, w = nonzero_int8(m, k), nonzero_int8(n, k)
    wscales, ascales = random_scales(n), random_scales(m)
    bias = torch.randn(n, device="cuda").half() if fused else None
    out = run(a, w, wscales, ascales, bias)
    assert_within_one_ulp(out, reference(a, w, wscales, ascales, bias))


@pytest.mark.gpu
# (256, 8192, 28672) and (257, 1000, 16400) take the large tile with split-K (the latter with a K
# tail in its last split).
@pytest.mark.parametrize("m,n,k", [(1, 28672, 8192), (16, 8192, 28672), (256, 4096, 4096), (256, 28672, 8192),
                                   (256, 8192, 28672), (257, 1000, 16400),
                                   (4096, 8200, 8192), (1000, 4096, 4096), (300, 11224, 4112)])
def test_model_shapes(m: int, n: int, k: int) -> None:
    a, w = nonzero_int8(m, k), nonzero_int8(n, k)
    wscales, ascales = random_scales(n), random_scales(m)
    bias = torch.randn(n, device="cuda").half()
    assert_within_one_ulp(run(a, w, wscales, ascales, None), reference(a, w, wscales, ascales, None))
    assert_within_one_ulp(run(a, w, wscales, ascales, bias), reference(a, w, wscales, ascales, bias))


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 16, 100, 129, 1000])
@pytest.mark.parametrize("n,k", [(8, 64), (200, 96), (264, 4096), (136, 8192)])
def test_int32_sums_bit_exact(m: int, n: int, k: int) -> None:
    """With +-1 entries and unit scales every sum (|acc| <= 2048 here) is exact in fp16: out == acc."""
    a, w = random_signs(m, k), random_signs(n, k)
    acc = exact_acc(a, w)
    assert acc.abs().max().item() <= 2048, "sums must be exactly representable in fp16 for this test"
    ones_n = torch.ones(n, dtype=torch.float16, device="cuda")
    ones_m = torch.ones(m, dtype=torch.float16, device="cuda")
    out = run(a, w, ones_n, ones_m, None)
    assert torch.equal(out.double(), acc)


@pytest.mark.gpu
def test_extreme_values_bit_exact() -> None:
    """All -128 (the one int8 value without a positive twin): acc = K * 16384 per output, exact in fp16."""
    m, n, k = 33, 72, 128
    a = torch.full((m, k), -128, dtype=torch.int8, device="cuda")
    w = torch.full((n, k), -128, dtype=torch.int8, device="cuda")
    w[1::2] = 127
    scale = torch.full((n,), 2.0**-12, dtype=torch.float16, device="cuda")
    out = run(a, w, scale, torch.full((m,), 2.0**-9, dtype=torch.float16, device="cuda"), None)
    assert torch.equal(out.double(), exact_acc(a, w) * 2.0**-21)


@pytest.mark.gpu
def test_ascales_as_column_and_k_zero() -> None:
    m, n, k = 5, 24, 64
    a, w = nonzero_int8(m, k), nonzero_int8(n, k)
    wscales, ascales = random_scales(n), random_scales(m)
    out = run(a, w, wscales, ascales.reshape(m, 1), None)
    assert_within_one_ulp(out, reference(a, w, wscales, ascales, None))
    bias = torch.randn(n, device="cuda").half()
    empty_k = run(a[:, :0].contiguous(), w[:, :0].contiguous(), wscales, ascales, bias)
    assert torch.equal(empty_k, bias.expand(m, n))


@pytest.mark.gpu
def test_empty_m_and_n() -> None:
    w = nonzero_int8(16, 64)
    empty_a = torch.empty(0, 64, dtype=torch.int8, device="cuda")
    out = torch.empty(0, 16, dtype=torch.float16, device="cuda")
    awq_inference_engine.w8a8_gemm_forward_cuda(empty_a, w, random_scales(16), random_scales(0), out)
    a = nonzero_int8(3, 64)
    awq_inference_engine.w8a8_gemm_forward_cuda(
        a, w[:0], random_scales(0), random_scales(3), torch.empty(3, 0, dtype=torch.float16, device="cuda"))


@pytest.mark.gpu
def test_current_stream_and_odd_output_alignment() -> None:
    """Runs on the caller's stream (not the default one); an out_feats that starts 2 bytes past a
    4-byte boundary takes the scalar stores."""
    m, n, k = 40, 130, 256
    a, w = nonzero_int8(m, k), nonzero_int8(n, k)
    wscales, ascales = random_scales(n), random_scales(m)
    storage = poison(torch.empty(m * n + 1, dtype=torch.float16, device="cuda"))
    out = storage[1:].view(m, n)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s: the GEMM queued behind it cannot have run yet
        awq_inference_engine.w8a8_gemm_forward_cuda(a, w, wscales, ascales, out)
    before = out.clone()  # on the idle default stream: sees `out` before the side stream writes it
    stream.synchronize()
    assert torch.isnan(before).all(), "the GEMM ran on another stream than the current one"
    assert_within_one_ulp(out, reference(a, w, wscales, ascales, None))


@pytest.mark.gpu
def test_w8a8_linear_wrapper() -> None:
    x, w = nonzero_int8(2, 3, 128), nonzero_int8(48, 128)
    wscales, ascales = random_scales(48), random_scales(6).reshape(2, 3, 1)
    bias = torch.randn(48, device="cuda").half()
    out = w8a8_linear(x, w, wscales, ascales, bias)
    assert out.shape == (2, 3, 48)
    assert_within_one_ulp(out.reshape(6, 48), reference(x.reshape(6, 128), w, wscales, ascales, bias))


# --- the kernel choice: mma.sync (sm_80+) and the Hopper wgmma kernel, each forced ---

KERNELS = [
    "mma",
    pytest.param("wgmma", marks=pytest.mark.skipif(not sm90a_runs(),
                                                   reason="needs an sm_90a build and a compute capability 9.0 GPU")),
]
# M tails of the 128-row tile (1, 100, 129, 257), N tails of the 256-column tile (8, 200, 264, 1000,
# 8200), K tails of the 128-byte slice (64, 96, 112, 4112) and forced K splits with a tail in the
# last split (16400 with one or few tiles: 2 splits of 65 and 64 slices).
KERNEL_SHAPES = [(1, 8, 64), (7, 200, 96), (100, 264, 4096), (129, 136, 8192), (257, 1000, 112), (300, 8200, 96),
                 (40, 136, 16400), (257, 1000, 16400), (1000, 264, 4112), (4096, 512, 1024)]


def run_kernel(a: torch.Tensor, w: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor,
               bias: Optional[torch.Tensor], kernel: str) -> torch.Tensor:
    out = poison(torch.empty(a.shape[0], w.shape[0], dtype=torch.float16, device=a.device))
    torch.ops.awq_inference_engine.awq_w8a8_gemm(a, w, wscales, ascales, out, bias, kernel)
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "bias"])
@pytest.mark.parametrize("m,n,k", KERNEL_SHAPES)
def test_kernel_within_one_ulp_and_equal_to_auto(m: int, n: int, k: int, fused: bool, kernel: str) -> None:
    """Each kernel within 1 ulp of the spec, and bit-identical to the compat op (whichever kernel that
    picks: both sum exactly in int32 and round through the same epilogue)."""
    a, w = nonzero_int8(m, k), nonzero_int8(n, k)
    wscales, ascales = random_scales(n), random_scales(m)
    bias = torch.randn(n, device="cuda").half() if fused else None
    out = run_kernel(a, w, wscales, ascales, bias, kernel)
    assert_within_one_ulp(out, reference(a, w, wscales, ascales, bias))
    assert torch.equal(out, run(a, w, wscales, ascales, bias))


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m,n,k", [(1, 8, 64), (129, 264, 2064), (300, 8200, 96), (40, 136, 16400)])
def test_kernel_int32_sums_bit_exact(m: int, n: int, k: int, kernel: str) -> None:
    """+-1 entries and unit scales: every sum is exact in fp16, so out == acc exactly (all M/N/K tails)."""
    a, w = random_signs(m, k), random_signs(n, k)
    acc = exact_acc(a, w)
    assert acc.abs().max().item() <= 2048, "sums must be exactly representable in fp16 for this test"
    ones_n = torch.ones(n, dtype=torch.float16, device="cuda")
    ones_m = torch.ones(m, dtype=torch.float16, device="cuda")
    assert torch.equal(run_kernel(a, w, ones_n, ones_m, None, kernel).double(), acc)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_extreme_values_and_k_zero(kernel: str) -> None:
    """All -128 / 127 operands (|acc| = K * 16384, exact in fp16 after the power-of-two scales), and
    K = 0 (the epilogue of zero sums: out = bias)."""
    m, n, k = 200, 264, 1024
    a = torch.full((m, k), -128, dtype=torch.int8, device="cuda")
    w = torch.full((n, k), -128, dtype=torch.int8, device="cuda")
    w[1::2] = 127
    scale = torch.full((n,), 2.0**-12, dtype=torch.float16, device="cuda")
    out = run_kernel(a, w, scale, torch.full((m,), 2.0**-12, dtype=torch.float16, device="cuda"), None, kernel)
    assert torch.equal(out.double(), exact_acc(a, w) * 2.0**-24)
    bias = torch.randn(n, device="cuda").half()
    empty_k = run_kernel(a[:, :0].contiguous(), w[:, :0].contiguous(), scale, random_scales(m), bias, kernel)
    assert torch.equal(empty_k, bias.expand(m, n))


@pytest.mark.gpu
@pytest.mark.skipif(sm90a_runs(), reason="the wgmma kernel runs here")
def test_wgmma_refused_where_it_cannot_run() -> None:
    a, w = nonzero_int8(4, 64), nonzero_int8(8, 64)
    with pytest.raises(RuntimeError, match=r"kernel \"wgmma\" needs a build for compute capability 9.0"):
        run_kernel(a, w, random_scales(8), random_scales(4), None, "wgmma")


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
def test_w8a8_linear_kernel_choice(kernel: str) -> None:
    x, w = nonzero_int8(2, 150, 256), nonzero_int8(264, 256)
    wscales, ascales = random_scales(264), random_scales(300).reshape(2, 150, 1)
    bias = torch.randn(264, device="cuda").half()
    out = w8a8_linear(x, w, wscales, ascales, bias, kernel=kernel)
    assert out.shape == (2, 150, 264)
    assert_within_one_ulp(out.reshape(300, 264), reference(x.reshape(300, 256), w, wscales, ascales, bias))


def test_wgmma_kernel_is_igmma_in_sass() -> None:
    """The sm_90a build's W8A8 wgmma kernel is Hopper IGMMA in SASS (not an emulation or mma.sync)."""
    if not sm90a_built():
        pytest.skip("built without compute capability 9.0 (no sm_90a kernels)")
    wgmma = sass_functions("_awq_inference_engine*.so", "_ZN3awq4w8a817w8a8_wgmma_kernel")
    assert len(wgmma) == 3, "one wgmma kernel per epilogue (scale, scale + bias, partial sums)"
    for body in wgmma:
        assert "IGMMA.64x256x32.S8.S8" in body
        assert "UTMALDG.2D" in body
        assert "LDL" not in body and "STL" not in body, "no local-memory spills"


def golden_w8a8_cases() -> list[str]:
    cases = torch.load(GOLDEN, weights_only=True)["cases"]
    return [name for name in cases if name.startswith("w8a8_gemm_")]


@pytest.mark.gpu
@pytest.mark.parametrize("name", golden_w8a8_cases())
def test_golden(name: str) -> None:
    """Within 1 fp16 ulp of both the float64 spec reference and the original kernel's output."""
    case = torch.load(GOLDEN, weights_only=True)["cases"][name]
    inputs = {key: t.cuda() for key, t in case["inputs"].items() if isinstance(t, torch.Tensor)}
    out = run(inputs["a"], inputs["w"], inputs["wscales"], inputs["ascales"], inputs.get("bias"))
    assert torch.isfinite(out).all()
    assert ulp_distance(out.cpu(), case["reference"].half()).max().item() <= 1
    assert ulp_distance(out.cpu(), case["outputs"]["out"]).max().item() <= 1


# --- argument errors (CPU tensors: every check runs before the device check) ---

def cpu_args(m: int = 4, n: int = 32, k: int = 64) -> dict[str, torch.Tensor]:
    return {
        "in_feats": torch.ones(m, k, dtype=torch.int8),
        "kernel": torch.ones(n, k, dtype=torch.int8),
        "wscales": torch.ones(n, dtype=torch.float16),
        "ascales": torch.ones(m, dtype=torch.float16),
        "out_feats": torch.empty(m, n, dtype=torch.float16),
        "bias": torch.ones(n, dtype=torch.float16),
    }


def call(args: dict[str, torch.Tensor], fused: bool) -> None:
    order = ["in_feats", "kernel", "wscales", "ascales", "out_feats"]
    if fused:
        awq_inference_engine.w8a8_gemm_fuse_bias_forward_cuda(*(args[key] for key in order), args["bias"])
    else:
        awq_inference_engine.w8a8_gemm_forward_cuda(*(args[key] for key in order))


def misaligned_int8(rows: int, cols: int) -> torch.Tensor:
    return torch.ones(rows * cols + 1, dtype=torch.int8)[1:].view(rows, cols)


BAD_ARGS = {
    "in_feats dtype": ("in_feats", torch.ones(4, 64, dtype=torch.float16), r"'in_feats' must have dtype Char"),
    "in_feats rank": ("in_feats", torch.ones(1, 4, 64, dtype=torch.int8), r"'in_feats' must be 2-D"),
    "kernel dtype": ("kernel", torch.ones(32, 64, dtype=torch.uint8), r"'kernel' must have dtype Char"),
    "kernel rank": ("kernel", torch.ones(32 * 64, dtype=torch.int8), r"'kernel' must be 2-D"),
    "kernel K": ("kernel", torch.ones(32, 128, dtype=torch.int8), r"'kernel' must have shape \[N, K\] with K"),
    "wscales dtype": ("wscales", torch.ones(32, dtype=torch.float32), r"'wscales' must have dtype Half"),
    "wscales bf16": ("wscales", torch.ones(32, dtype=torch.bfloat16), r"'wscales' must have dtype Half"),
    "wscales shape": ("wscales", torch.ones(31, dtype=torch.float16), r"'wscales' must have shape \[N\]"),
    "ascales dtype": ("ascales", torch.ones(4, dtype=torch.float32), r"'ascales' must have dtype Half"),
    "ascales shape": ("ascales", torch.ones(5, dtype=torch.float16), r"'ascales' must have shape \[M\] or \[M, 1\]"),
    "ascales 2-D": ("ascales", torch.ones(2, 2, dtype=torch.float16), r"'ascales' must have shape \[M\] or \[M, 1\]"),
    "out dtype": ("out_feats", torch.empty(4, 32, dtype=torch.float32), r"'out_feats' must have dtype Half"),
    "out shape": ("out_feats", torch.empty(4, 33, dtype=torch.float16), r"'out_feats' must have shape \[M, N\]"),
    "out transposed": ("out_feats", torch.empty(32, 4, dtype=torch.float16).t(), r"'out_feats' must be contiguous"),
    "in_feats strided": ("in_feats", torch.ones(4, 128, dtype=torch.int8)[:, ::2], r"'in_feats' must be contiguous"),
    "kernel transposed": ("kernel", torch.ones(64, 32, dtype=torch.int8).t(), r"'kernel' must be contiguous"),
    "wscales strided": ("wscales", torch.ones(64, dtype=torch.float16)[::2], r"'wscales' must be contiguous"),
    "ascales strided": ("ascales", torch.ones(8, dtype=torch.float16)[::2], r"'ascales' must be contiguous"),
    "in_feats misaligned": ("in_feats", misaligned_int8(4, 64), r"'in_feats' must start at a 16-byte aligned"),
    "kernel misaligned": ("kernel", misaligned_int8(32, 64), r"'kernel' must start at a 16-byte aligned"),
}


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "bias"])
@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_argument(case: str, fused: bool) -> None:
    name, value, message = BAD_ARGS[case]
    args = cpu_args()
    args[name] = value
    op = "w8a8_gemm_fuse_bias_forward_cuda" if fused else "w8a8_gemm_forward_cuda"
    with pytest.raises(RuntimeError, match=rf"^{op}: .*{message}"):
        call(args, fused)


@pytest.mark.parametrize(
    "value,message",
    [
        (torch.ones(32, dtype=torch.float32), r"'bias' must have dtype Half"),
        (torch.ones(33, dtype=torch.float16), r"'bias' must have shape \[N\]"),
        (torch.ones(64, dtype=torch.float16)[::2], r"'bias' must be contiguous"),
    ],
)
def test_bad_bias(value: torch.Tensor, message: str) -> None:
    args = cpu_args()
    args["bias"] = value
    with pytest.raises(RuntimeError, match=rf"^w8a8_gemm_fuse_bias_forward_cuda: .*{message}"):
        call(args, fused=True)


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "bias"])
def test_k_not_multiple_of_16(fused: bool) -> None:
    args = cpu_args(k=72)
    with pytest.raises(RuntimeError, match=r"K = in_feats.size\(1\) must be a multiple of 16 .* got K = 72"):
        call(args, fused)


def test_k_too_large_for_int32() -> None:
    k = 131072
    args = cpu_args(m=1, n=1, k=k)
    with pytest.raises(RuntimeError, match=r"must be <= 131071 so that the int32 accumulators cannot overflow"):
        call(args, fused=False)


def test_bad_kernel_choice() -> None:
    args = cpu_args()
    with pytest.raises(RuntimeError, match=r'^awq_w8a8_gemm: .*\'kernel\' must be "auto", "mma" or "wgmma", got "tma"'):
        torch.ops.awq_inference_engine.awq_w8a8_gemm(args["in_feats"], args["kernel"], args["wscales"],
                                                     args["ascales"], args["out_feats"], None, "tma")


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "bias"])
def test_cpu_tensors_rejected(fused: bool) -> None:
    with pytest.raises(RuntimeError, match=r"'in_feats' must be a CUDA tensor"):
        call(cpu_args(), fused)


@pytest.mark.gpu
def test_output_overlapping_input_rejected() -> None:
    storage = torch.ones(4 * 64, dtype=torch.int8, device="cuda")
    in_feats = storage.view(4, 64)
    out = storage.view(torch.float16).view(4, 32)  # the same bytes as in_feats
    w = torch.ones(32, 64, dtype=torch.int8, device="cuda")
    scales = torch.ones(32, dtype=torch.float16, device="cuda")
    with pytest.raises(RuntimeError, match=r"refer to a single memory location"):
        awq_inference_engine.w8a8_gemm_forward_cuda(in_feats, w, scales, scales[:4], out)
