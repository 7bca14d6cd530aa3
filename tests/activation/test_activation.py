"""silu_and_mul against a float64 reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import awq_inference_engine
from awq_kernels import ops
from tests.utils import relerr

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "llm-awq-h100.pt"
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}  # one rounding to the dtype


def silu_and_mul_reference(x: torch.Tensor) -> torch.Tensor:
    d = x.size(-1) // 2
    gate, up = x.double()[..., :d], x.double()[..., d:]
    return gate * torch.sigmoid(gate) * up


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 1024), (3, 7, 2 * 4096), (1, 2), (9, 2 * 13), (2, 2 * 11008), (70000, 16)])
def test_silu_and_mul(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=dtype, device="cuda") * 4
    out = awq_inference_engine.silu_and_mul(x)
    assert out.shape == (*shape[:-1], shape[-1] // 2) and out.dtype == dtype and out.is_contiguous()
    assert relerr(out, silu_and_mul_reference(x)) <= TOL[dtype]


@pytest.mark.gpu
def test_silu_and_mul_unaligned_input() -> None:
    """A view starting one element into its storage takes the scalar path."""
    x = torch.randn(4 * 64 + 1, dtype=torch.float16, device="cuda")[1:].view(4, 64)
    assert relerr(ops.silu_and_mul(x), silu_and_mul_reference(x)) <= TOL[torch.float16]


@pytest.mark.gpu
def test_silu_and_mul_extremes() -> None:
    x = torch.tensor([[-1e4, 0.0, 1e4, -30.0, 1.0, 2.0, 3.0, 4.0]], device="cuda")
    out = awq_inference_engine.silu_and_mul(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, silu_and_mul_reference(x).float(), rtol=1e-6, atol=1e-30)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["silu_and_mul/torch.float16/5x1024", "silu_and_mul/torch.bfloat16/5x1024"])
def test_silu_and_mul_golden(case: str) -> None:
    c = torch.load(GOLDEN, weights_only=True)["cases"][case]
    out = awq_inference_engine.silu_and_mul(c["inputs"]["x"].cuda())
    ours = relerr(out, c["reference"])
    assert ours <= c["relerr_vs_reference"], f"ours {ours:.2e} vs original {c['relerr_vs_reference']:.2e}"


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(4, 8).double(), r"silu_and_mul: argument 'input' must have dtype one of"),
        (torch.randn(4, 7), r"argument 'input' must have an even, non-zero last dimension"),
        (torch.randn(4, 0), r"argument 'input' must have an even, non-zero last dimension"),
        (torch.randn(()), r"argument 'input' must have at least 1 dimension"),
        (torch.randn(8, 4).t(), r"argument 'input' must be contiguous"),
        (torch.randn(4, 8), r"argument 'input' must be a CUDA tensor"),
    ],
)
def test_silu_and_mul_errors(x: torch.Tensor, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        awq_inference_engine.silu_and_mul(x)
