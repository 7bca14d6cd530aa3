"""The wgmma W4A16 kernels of an sm_90a build really use Hopper's warpgroup MMA (HGMMA in the SASS).

CPU only: it disassembles the built extension, so it also checks a cross-compiled build in CI.
"""

from __future__ import annotations

import re

import pytest

from tests.utils import sass_functions, sm90a_built


def test_wgmma_kernels_use_hgmma() -> None:
    if not sm90a_built():
        pytest.skip("built without compute capability 9.0 (no sm_90a kernels)")
    kernels = sass_functions("_awq_inference_engine*.so", "_ZN3awq5w4a1618w4a16_wgmma_kernel")
    # 2 dtypes x 2 layouts x 4 CTA tiles.
    assert len(kernels) == 16, f"expected 16 w4a16_wgmma_kernel instances in the SASS, found {len(kernels)}"
    ws_kernels = sass_functions("_awq_inference_engine*.so", "_ZN3awq5w4a1621w4a16_wgmma_ws_kernel")
    # 2 dtypes x 2 layouts x 3 token tiles.
    assert len(ws_kernels) == 12, f"expected 12 w4a16_wgmma_ws_kernel instances in the SASS, found {len(ws_kernels)}"
    for body in kernels + ws_kernels:
        name = body.split()[0]
        assert re.search(r"\bHGMMA\.64x(16|64|128|256)x16\.F32\b", body), f"{name}: no HGMMA in its SASS"
        assert "LDL" not in body and "STL" not in body, f"{name}: local memory (register spills) in its SASS"
    for body in ws_kernels:  # fed by TMA, registers moved to the consumers
        name = body.split()[0]
        assert "UTMALDG.2D" in body, f"{name}: no TMA load in its SASS"
        assert "USETMAXREG" in body, f"{name}: no setmaxnreg in its SASS"
