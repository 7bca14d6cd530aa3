"""layernorm_forward_cuda (RMSNorm, spec §3.1): GPU correctness and CPU-side argument errors."""

from __future__ import annotations

import pytest
import torch

import awq_inference_engine
from tests.utils import golden_bound, golden_cases, poison, relerr

OP = torch.ops.awq_inference_engine.layernorm_forward_cuda
DTYPES = [torch.float16, torch.bfloat16]
# fp32 math, one rounding to the output dtype: within an ulp-level error of the fp32 reference
TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


def reference(x: torch.Tensor, gamma: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * gamma.float()


def run(x: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    out = poison(torch.empty_like(x))
    awq_inference_engine.layernorm_forward_cuda(x, gamma, out, eps)
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [1, 8, 17, 31, 32, 33, 64, 100, 1000, 4096, 5120, 8192, 11008, 16384, 40000])
@pytest.mark.parametrize("tokens", [1, 3, 129])
def test_matches_reference(dtype: torch.dtype, hidden: int, tokens: int) -> None:
    x = torch.randn(tokens, hidden, dtype=dtype, device="cuda")
    gamma = torch.randn(hidden, dtype=dtype, device="cuda")
    out = run(x, gamma)
    assert relerr(out, reference(x, gamma, 1e-6)) < TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4096,), (2, 3, 4096), (2, 3, 5, 1000), (1, 1, 1, 7, 64)])
def test_any_rank(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=dtype, device="cuda") * 3 + 0.5
    gamma = torch.rand(shape[-1], dtype=dtype, device="cuda") + 0.5
    assert relerr(run(x, gamma, 1e-5), reference(x, gamma, 1e-5)) < TOLERANCE[dtype]


@pytest.mark.gpu
def test_many_rows_and_empty_input() -> None:
    x = torch.randn(100_003, 96, dtype=torch.float16, device="cuda")
    gamma = torch.randn(96, dtype=torch.float16, device="cuda")
    assert relerr(run(x, gamma), reference(x, gamma, 1e-6)) < 1e-3
    empty = torch.empty(0, 64, dtype=torch.float16, device="cuda")
    awq_inference_engine.layernorm_forward_cuda(empty, gamma[:64].contiguous(), torch.empty_like(empty), 1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_and_unaligned(dtype: torch.dtype) -> None:
    hidden = 4096
    # storage offset of one element: not 16-byte aligned, takes the scalar path
    buffer = torch.randn(3 * hidden + 1, dtype=dtype, device="cuda")
    x = buffer[1:].view(3, hidden)
    gamma = torch.randn(hidden, dtype=dtype, device="cuda")
    expected = reference(x, gamma, 1e-6)
    assert relerr(run(x, gamma), expected) < TOLERANCE[dtype]
    awq_inference_engine.layernorm_forward_cuda(x, gamma, x, 1e-6)  # out is input
    assert relerr(x, expected) < TOLERANCE[dtype]


@pytest.mark.gpu
def test_fp16_output_is_clamped_and_nan_propagates() -> None:
    x = torch.ones(2, 64, dtype=torch.float16, device="cuda")
    x[1, 3] = float("nan")
    gamma = torch.full((64,), 65000.0, dtype=torch.float16, device="cuda")  # y = gamma for a constant row
    gamma[1] = -65000.0
    out = run(x, gamma)
    # like the original: clamped to +-64504 before rounding (to the fp16 value 64512), never inf
    assert out[0, 0].item() == 64512.0 and out[0, 1].item() == -64512.0
    assert torch.isnan(out[1]).all()


@pytest.mark.gpu
@pytest.mark.parametrize("name_case", golden_cases("layernorm_forward_cuda/"), ids=lambda nc: nc[0])
def test_golden(name_case: tuple[str, dict]) -> None:
    _, case = name_case
    inputs = case["inputs"]
    x, gamma = inputs["x"].cuda(), inputs["gamma"].cuda()
    out = run(x, gamma, inputs["eps"])
    ours = relerr(out, case["reference"])
    assert ours <= golden_bound(case, x.dtype)
    assert relerr(out, case["outputs"]["out"]) < 2 * TOLERANCE[x.dtype]


@pytest.mark.gpu
def test_runs_on_current_stream_and_opcheck() -> None:
    x = torch.randn(64, 512, dtype=torch.float16, device="cuda")
    gamma = torch.randn(512, dtype=torch.float16, device="cuda")
    out = torch.empty_like(x)
    torch.library.opcheck(OP, (x, gamma, out, 1e-6))

    stream = torch.cuda.Stream()
    big = torch.randn(4096, 4096, device="cuda")
    with torch.cuda.stream(stream):
        x2 = x * 2  # queued on `stream` behind a long matmul; the op must wait for it
        torch.cuda._sleep(1_000_000)
        poison(out)
        awq_inference_engine.layernorm_forward_cuda(x2, gamma, out, 1e-6)
    _ = big @ big  # unrelated work on the default stream
    stream.synchronize()
    assert relerr(out, reference(x * 2, gamma, 1e-6)) < 1e-3


@pytest.mark.gpu
def test_torch_compile_traces_the_op() -> None:
    def norm(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        OP(x * 1.0, gamma, out, 1e-6)
        return out + 0

    compiled = torch.compile(norm, fullgraph=True)
    x = torch.randn(5, 256, dtype=torch.float16, device="cuda")
    gamma = torch.randn(256, dtype=torch.float16, device="cuda")
    assert relerr(compiled(x, gamma), reference(x, gamma, 1e-6)) < 1e-3


# ---- argument errors: run on the CPU (validation precedes the device check) -----------------------


def cpu_args(shape: tuple[int, ...] = (2, 3, 64), dtype: torch.dtype = torch.float16) -> list:
    x = torch.randn(shape).to(dtype)
    return [x, torch.randn(shape[-1]).to(dtype), torch.empty_like(x), 1e-6]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.__setitem__(0, a[0].float()), r"argument 'input' must have dtype one of \{Half, BFloat16\}, got Float"),
        (lambda a: a.__setitem__(1, a[1].bfloat16()), r"argument 'gamma' must have the dtype of 'input' \(Half\), got BFloat16"),
        (lambda a: a.__setitem__(2, a[2].float()), r"argument 'out' must have the dtype of 'input'"),
        (lambda a: a.__setitem__(1, torch.randn(63).half()), r"argument 'gamma' must have shape \[input.size\(-1\)\] = \[64\], got \[63\]"),
        (lambda a: a.__setitem__(2, torch.empty(2, 3, 65).half()), r"argument 'out' must have the shape of 'input' \[2, 3, 64\], got \[2, 3, 65\]"),
        (lambda a: a.__setitem__(0, torch.randn(2, 64, 3).half().transpose(1, 2)), r"argument 'input' must be contiguous"),
        (lambda a: a.__setitem__(2, torch.empty(2, 64, 3).half().transpose(1, 2)), r"argument 'out' must be contiguous"),
        (lambda a: a.__setitem__(0, torch.randn(2, 3, 0).half()), r"argument 'input' must have a last dimension in \[1, 2\^30\]"),
        (lambda a: a.__setitem__(0, torch.zeros(1).half().expand(1, 2**30 + 1)),
         r"argument 'input' must have a last dimension in \[1, 2\^30\], got shape \[1, 1073741825\]"),
        (lambda a: a.__setitem__(0, torch.tensor(1.0).half()), r"argument 'input' must have at least 1 dimension"),
        (lambda a: a.__setitem__(3, float("nan")), r"argument 'eps' must be a finite float >= 0, got nan"),
        (lambda a: a.__setitem__(3, -1.0), r"argument 'eps' must be a finite float >= 0"),
        (lambda a: None, r"argument 'input' must be a CUDA tensor, got a tensor on cpu"),
    ],
)
def test_argument_errors(mutate, message: str) -> None:
    args = cpu_args()
    mutate(args)
    with pytest.raises(RuntimeError, match=r"^layernorm_forward_cuda: " + message):
        OP(*args)


def test_partial_overlap_of_out_and_input_is_rejected() -> None:
    buffer = torch.randn(2 * 64 + 1).half()
    x = buffer[:128].view(2, 64)
    out = buffer[1:129].view(2, 64)
    with pytest.raises(RuntimeError, match="^layernorm_forward_cuda: arguments 'out' and 'input' partially overlap"):
        OP(x, torch.randn(64).half(), out, 1e-6)


def test_compat_signature_is_positional_only() -> None:
    args = cpu_args()
    with pytest.raises(TypeError, match="positional-only"):
        awq_inference_engine.layernorm_forward_cuda(*args[:3], eps=1e-6)
