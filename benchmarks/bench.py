"""Benchmark every kernel family against its issue's baseline, in one run, on one GPU.

    python benchmarks/bench.py [--family rms_norm ...] [--quick] [--json results.json]

Prints a table (our time, the baseline's, the ratio, achieved bandwidth as a fraction of the
copy bandwidth measured in the same run, TFLOP/s) and writes the same numbers as JSON. Times are
medians over CUDA-event-timed calls, each after an L2 flush.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cases as cases_pkg  # noqa: E402
from benchmarks.harness import L2Flusher, copy_bandwidth_gbs, peak_matmul_tflops, time_ms  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    families = [m.name for m in pkgutil.iter_modules(cases_pkg.__path__)]
    parser.add_argument("--family", action="append", choices=families, help="repeatable; default: all")
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--json", type=Path, default=Path("bench_results.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks need a CUDA GPU", file=sys.stderr)
        return 2

    flush = L2Flusher()
    device = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs(flush)
    matmul_tflops = peak_matmul_tflops()
    print(f"device: {device}; copy bandwidth {copy_gbs:.0f} GB/s; fp16 matmul {matmul_tflops:.0f} TFLOP/s")

    rows = []
    header = f"{'family':<12} {'case':<42} {'ours ms':>9} {'baseline':<14} {'base ms':>9} {'speedup':>8} " \
             f"{'GB/s':>7} {'%copy':>6} {'TFLOP/s':>8}"
    print(header)
    print("-" * len(header))
    for family in args.family or families:
        module = importlib.import_module(f"benchmarks.cases.{family}")
        for case in module.cases(args.quick):
            ours = time_ms(case.ours, flush)
            base = time_ms(case.baseline, flush) if case.baseline is not None else None
            gbs = case.bytes_moved / (ours * 1e-3) / 1e9
            tflops = case.flops / (ours * 1e-3) / 1e12 if case.flops else None
            row = {
                "family": case.family, "case": case.name, "ours_ms": ours, "baseline": case.baseline_name,
                "baseline_ms": base, "speedup_vs_baseline": (base / ours) if base else None,
                "gbs": gbs, "fraction_of_copy_bw": gbs / copy_gbs, "tflops": tflops, **case.extra,
            }
            rows.append(row)
            print(f"{case.family:<12} {case.name:<42} {ours:9.4f} {case.baseline_name:<14} "
                  f"{base if base is not None else float('nan'):9.4f} "
                  f"{row['speedup_vs_baseline'] or float('nan'):7.2f}x {gbs:7.0f} {100 * gbs / copy_gbs:5.1f}% "
                  f"{tflops if tflops is not None else float('nan'):8.1f}", flush=True)
            torch.cuda.empty_cache()
    args.json.write_text(json.dumps(
        {"device": device, "copy_gbs": copy_gbs, "matmul_fp16_tflops": matmul_tflops, "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
