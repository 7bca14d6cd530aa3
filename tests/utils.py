"""Helpers for kernel tests: error norms and output poisoning."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def relerr(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64; NaN anywhere gives inf."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - e).norm() / e.norm().clamp_min(1e-30)).item()


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill an output with NaN (floats) or a sentinel (ints) so unwritten elements are caught."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(torch.iinfo(t.dtype).min if t.dtype != torch.bool else True)


def poisoned_empty(*shape: int, dtype: torch.dtype, device: str = "cuda") -> torch.Tensor:
    return poison(torch.empty(*shape, dtype=dtype, device=device))


GOLDEN_PATH = Path(__file__).parent / "data" / "llm-awq-h100.pt"


@functools.cache
def _golden() -> dict:
    return torch.load(GOLDEN_PATH, weights_only=True)["cases"]


def golden_cases(prefix: str) -> list[tuple[str, dict]]:
    """The original llm-awq kernels' recorded calls whose name starts with `prefix` (see data/GOLDEN.md)."""
    return [(name, case) for name, case in _golden().items() if name.startswith(prefix)]


def golden_bound(case: dict, dtype: torch.dtype) -> float:
    """The error ours may have against a golden case's float64 `reference`: the original's, or, if
    larger, that of the exact result rounded once to the output dtype (no kernel can beat it), with
    5% for the rounding noise of a different summation order (bf16 results sit at that floor)."""
    reference = case["reference"]
    return 1.05 * max(case["relerr_vs_reference"], relerr(reference.to(dtype), reference))
