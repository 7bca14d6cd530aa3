"""Plot W4A16 throughput against M from a bench.py JSON file, as a dependency-free SVG.

    python benchmarks/plot.py bench.json --out w4a16.svg

One panel per (K, N) shape; x = M (log scale), y = TFLOP/s; one line per (layout, kernel) of ours
and one for the baseline (cuBLAS fp16 on the dequantized weight), all from the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

CASE_RE = re.compile(r"^(?P<layout>v\d) K(?P<k>\d+) N(?P<n>\d+) M(?P<m>\d+) (?P<kernel>\w+)$")
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
PANEL_W, PANEL_H, MARGIN = 360, 260, 48

Series = dict[str, dict[int, float]]  # label -> {M: TFLOP/s}


def collect(rows: list[dict], family: str) -> dict[tuple[int, int], Series]:
    """{(K, N): {label: {M: TFLOP/s}}}; the baseline is taken once per (shape, M)."""
    panels: dict[tuple[int, int], Series] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        match = CASE_RE.match(row["case"]) if row["family"] == family else None
        if not match or not row.get("tflops"):
            continue
        k, n, m = int(match["k"]), int(match["n"]), int(match["m"])
        panels[(k, n)][f"{match['layout']} {match['kernel']}"][m] = row["tflops"]
        if row.get("baseline_ms"):
            panels[(k, n)][row["baseline"]][m] = 2 * m * n * k / (row["baseline_ms"] * 1e-3) / 1e12
    return panels


def panel_svg(shape: tuple[int, int], series: Series, x0: float, y0: float, labels: list[str]) -> list[str]:
    ms = sorted({m for points in series.values() for m in points})
    top = max(v for points in series.values() for v in points.values()) * 1.1
    lo, hi = math.log2(ms[0]), math.log2(ms[-1]) if ms[-1] > ms[0] else math.log2(ms[0]) + 1
    w, h = PANEL_W - 2 * MARGIN, PANEL_H - 2 * MARGIN

    def xy(m: int, v: float) -> tuple[float, float]:
        return x0 + MARGIN + w * (math.log2(m) - lo) / (hi - lo), y0 + MARGIN + h * (1 - v / top)

    out = [f'<rect x="{x0 + MARGIN}" y="{y0 + MARGIN}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
           f'<text x="{x0 + PANEL_W / 2}" y="{y0 + MARGIN - 12}" text-anchor="middle">K={shape[0]} N={shape[1]}</text>']
    for m in ms:
        x, y = xy(m, 0)
        out.append(f'<text x="{x}" y="{y + 14}" text-anchor="middle" font-size="10">{m}</text>')
    for i in range(5):
        v = top * i / 4
        x, y = xy(ms[0], v)
        out.append(f'<text x="{x - 4}" y="{y + 3}" text-anchor="end" font-size="10">{v:.0f}</text>')
    for label, points in series.items():
        color = COLORS[labels.index(label) % len(COLORS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}"
                        for j, (x, y) in enumerate(xy(m, points[m]) for m in sorted(points)))
        dash = ' stroke-dasharray="5,3"' if not label.startswith("v") else ""
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    return out


def render(panels: dict[tuple[int, int], Series], title: str) -> str:
    labels = sorted({label for series in panels.values() for label in series})
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    width, height = cols * PANEL_W, rows * PANEL_H + 40 + 18 * len(labels)
    body = [f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for i, shape in enumerate(sorted(panels)):
        body += panel_svg(shape, panels[shape], (i % cols) * PANEL_W, 24 + (i // cols) * PANEL_H, labels)
    for j, label in enumerate(labels):
        y = rows * PANEL_H + 40 + 18 * j
        color = COLORS[j % len(COLORS)]
        body.append(f'<line x1="20" y1="{y - 4}" x2="44" y2="{y - 4}" stroke="{color}" stroke-width="2"/>'
                    f'<text x="50" y="{y}">{label}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="output of benchmarks/bench.py --json")
    parser.add_argument("--family", default="w4a16")
    parser.add_argument("--out", type=Path, default=Path("w4a16_tflops_vs_m.svg"))
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    panels = collect(data["rows"], args.family)
    if not panels:
        print(f"no {args.family} rows with TFLOP/s in {args.json}", file=sys.stderr)
        return 1
    title = f"{args.family}: TFLOP/s vs M on {data['device']} (x: M, log scale)"
    args.out.write_text(render(panels, title))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
