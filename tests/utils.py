"""Helpers for kernel tests: error norms, output poisoning, golden cases, sm_90a builds and SASS."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import torch

from awq_kernels._extension import sm90a_built, sm90a_runs  # noqa: F401  (re-exported for the tests)


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


def find_cuobjdump() -> Optional[str]:
    """cuobjdump from $CUOBJDUMP, PATH, the toolkit that builds the package (build_env; CI installs
    PyPI's cuobjdump and nvdisasm into it), or $CUDA_HOME / torch's CUDA_HOME."""
    from torch.utils.cpp_extension import CUDA_HOME

    from awq_kernels import build_env

    homes = [os.environ.get("CUDA_HOME"), CUDA_HOME]
    try:
        homes.insert(0, str(build_env.find_cuda_toolkit().home))
    except build_env.BuildEnvError:
        pass
    candidates = [os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump")]
    candidates += [str(Path(home) / "bin" / "cuobjdump") for home in homes if home]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def sass_functions(library_glob: str, mangled_prefix: str, arch: str = "sm_90a") -> list[str]:
    """SASS for `arch` of each kernel whose mangled name starts with `mangled_prefix`, in the built
    extension matching `library_glob` (e.g. "_awq_inference_engine*.so"); skips when cuobjdump is
    missing. Other archs' cubins hold empty stubs of the sm_90a-only kernels: they are left out."""
    import awq_kernels

    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        pytest.skip("cuobjdump not found (set CUOBJDUMP or CUDA_HOME)")
    library = next(Path(awq_kernels.__file__).parent.glob(library_glob))
    # cuobjdump runs nvdisasm from PATH: its own directory first.
    env = dict(os.environ, PATH=f"{Path(cuobjdump).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([cuobjdump, "-sass", "-arch", arch, str(library)], capture_output=True, text=True, env=env)
    if result.returncode != 0 and "nvdisasm" in result.stderr:
        pytest.skip("cuobjdump found no nvdisasm (put it on PATH)")
    assert result.returncode == 0, result.stderr
    return [body for body in result.stdout.split("Function : ")[1:] if body.startswith(mangled_prefix)]
