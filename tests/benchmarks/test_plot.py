"""The W4A16 plot is made from bench.py's JSON (CPU only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks import plot


def _row(case: str, tflops: float, baseline_ms: float) -> dict:
    return {"family": "w4a16", "case": case, "tflops": tflops, "baseline": "cuBLAS fp16", "baseline_ms": baseline_ms}


def test_plot_has_a_panel_per_shape_and_a_line_per_kernel(tmp_path: Path) -> None:
    rows = [_row(f"v2 K4096 N4096 M{m} auto", 10.0 * m, 1.0) for m in (1, 16, 256)]
    rows += [_row(f"v1 K8192 N28672 M{m} auto", 5.0 * m, 2.0) for m in (1, 16)]
    rows.append({"family": "rms_norm", "case": "fp16 4096x4096", "tflops": None})
    src = tmp_path / "bench.json"
    src.write_text(json.dumps({"device": "H100", "rows": rows}))
    out = tmp_path / "plot.svg"
    assert plot.main([str(src), "--out", str(out)]) == 0
    svg = out.read_text()
    assert "K=4096 N=4096" in svg and "K=8192 N=28672" in svg
    assert len(re.findall(r"<path d=", svg)) == 4  # ours + cuBLAS in each of the two panels
    panels = plot.collect(rows, "w4a16")
    assert panels[(4096, 4096)]["cuBLAS fp16"][256] == 2 * 256 * 4096 * 4096 / 1e-3 / 1e12


def test_plot_refuses_a_file_without_rows(tmp_path: Path) -> None:
    src = tmp_path / "bench.json"
    src.write_text(json.dumps({"device": "H100", "rows": []}))
    assert plot.main([str(src), "--out", str(tmp_path / "x.svg")]) == 1
