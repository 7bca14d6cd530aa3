"""The wgmma W4A16 kernels of an sm_90a build really use Hopper's warpgroup MMA (HGMMA in the SASS).

CPU only: it disassembles the built extension, so it also checks a cross-compiled build in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import awq_kernels
from awq_kernels import _extension

KERNEL = "w4a16_wgmma_kernel"


def find_cuobjdump() -> Path | None:
    """cuobjdump from PATH, CUDA_HOME, the pip CUDA toolkit or Triton's bundled copy."""
    if found := shutil.which("cuobjdump"):
        return Path(found)
    candidates = [Path(os.environ[v]) / "bin" / "cuobjdump" for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ]
    for site in map(Path, sys.path):
        candidates += [site / "nvidia" / "cu13" / "bin" / "cuobjdump", site / "nvidia" / "cuda_cuobjdump" / "bin" / "cuobjdump",
                       site / "triton" / "backends" / "nvidia" / "bin" / "cuobjdump"]
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def kernel_sass(text: str) -> dict[str, str]:
    """SASS of each function whose mangled name contains KERNEL."""
    parts = re.split(r"^\s*Function : (\S+)\s*$", text, flags=re.MULTILINE)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True) if KERNEL in name}


def test_wgmma_kernels_use_hgmma() -> None:
    if _extension.build_info("awq_inference_engine").get("sm90a") != "1":
        pytest.skip("this build has no sm_90a code (TORCH_CUDA_ARCH_LIST without 9.0, or CUDA < 12.0)")
    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (PATH, CUDA_HOME, pip CUDA toolkit, Triton)")
    library = next(Path(awq_kernels.__file__).parent.glob("_awq_inference_engine*.so"))
    result = subprocess.run([str(tool), "-sass", str(library)], capture_output=True, text=True, check=True)
    kernels = kernel_sass(result.stdout)
    # 2 dtypes x 2 layouts x 4 CTA tiles.
    assert len(kernels) == 16, f"expected 16 {KERNEL} instances in the sm_90a SASS, found {sorted(kernels)}"
    for name, body in kernels.items():
        assert re.search(r"\bHGMMA\.64x\d+x16\.F32\b", body), f"{name}: no HGMMA in its SASS"
        assert "LDL" not in body and "STL" not in body, f"{name}: local memory (register spills) in its SASS"
