"""Timing primitives shared by the benchmark cases."""

from __future__ import annotations

import statistics
import time
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


# GPU cycles of the busy-wait queued before each timed call (~100 us on an H100): the host enqueues
# the start event and the call while the GPU still spins, so host-side dispatch time never lands
# between the two events (without it, a call whose Python/dispatcher work outlasts the flush was
# timed with that gap: ~5 us on a 60 us W4A16 GEMV, device run S3-8 against the standalone lab).
GPU_BUSY_CYCLES = 200_000


# Warm-up of each case: at least this long, so that a memory-bound case timed right after large
# GEMMs does not run at their power-limited clocks (device run S3-9: the same W4A16 GEMV as two
# consecutive cases measured 0.0670 and 0.0620 ms, the first right after the M = 4096 GEMMs). 50 ms
# was not always enough (device runs S6-15 / S6-16: Format B M = 1 on 8192 x 28672, the first case
# after the M = 4096 GEMMs, 0.0673 ms at 50 ms and 0.0590 at 250 ms; timed alone 0.0578).
WARMUP_SECONDS = 0.25


def time_ms(fn: Callable[[], object], flush: Optional[L2Flusher], reps: int = 50, warmup: int = 5) -> float:
    """Median device time of `fn` in milliseconds (CUDA events around each call)."""
    deadline = time.perf_counter() + WARMUP_SECONDS
    done = 0
    while done < warmup or time.perf_counter() < deadline:
        fn()
        done += 1
        if done % 8 == 0:
            torch.cuda.synchronize()  # so the deadline counts device time, not queued calls
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        if flush is not None:
            flush()
        torch.cuda._sleep(GPU_BUSY_CYCLES)
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
