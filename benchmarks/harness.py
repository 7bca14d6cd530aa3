"""Timing primitives shared by the benchmark cases."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class Case:
    """One benchmarked shape: our op, the issue's baseline, and the work it must do."""

    family: str
    name: str
    ours: Callable[[], object]
    baseline: Optional[Callable[[], object]]
    baseline_name: str
    bytes_moved: int  # the fewest DRAM bytes: every input read once, every output written once
    flops: int = 0
    extra: dict = field(default_factory=dict)


class L2Flusher:
    """Reads a buffer twice the L2 size so each timed call starts with a cold cache.

    Reading, not writing: a write-flush leaves the L2 full of dirty lines whose write-back then
    lands inside the next timed call (tens of MB: a third of a 4096x4096 RMSNorm's traffic).
    """

    def __init__(self) -> None:
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.buffer = torch.ones(2 * l2 // 4, dtype=torch.int32, device="cuda")

    def __call__(self) -> None:
        torch.amax(self.buffer)


def time_ms(fn: Callable[[], object], flush: Optional[L2Flusher], reps: int = 50, warmup: int = 5) -> float:
    """Median device time of `fn` in milliseconds (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        if flush is not None:
            flush()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def copy_bandwidth_gbs(flush: L2Flusher, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), flush, reps=20)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def peak_matmul_tflops(dtype: torch.dtype = torch.float16, n: int = 8192) -> float:
    a = torch.randn(n, n, dtype=dtype, device="cuda")
    b = torch.randn(n, n, dtype=dtype, device="cuda")
    ms = time_ms(lambda: a @ b, None, reps=10)
    return 2 * n**3 / (ms * 1e-3) / 1e12
