"""One small single_query_attention run per kernel variant, for compute-sanitizer.

    compute-sanitizer --tool memcheck  python tests/attention/sanitize_attention.py
    compute-sanitizer --tool racecheck python tests/attention/sanitize_attention.py
    compute-sanitizer --tool initcheck python tests/attention/sanitize_attention.py

Covers each dtype x head-size bucket (64/128/256) x query heads per KV head (1, 4, 8, 32: the
three kernel groupings, the last with several head groups), in the one-split (direct) and the
split (combine kernel) paths, with rotary, ALiBi, a wrapped circular cache and length_per_sample
(including sequences whose window leaves splits empty, and a negative length). On compute capability
9.0 (sm_90a builds) fp16 and bf16 run the bulk-copy ring kernel, fp32 the register kernel; the
ring's tiles wrap around the circular cache, one split holds only the new token, and one run gives
the ring kernel splits of two chunks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import awq_inference_engine  # noqa: E402
import ft_attention  # noqa: E402


def run(dtype: torch.dtype, dh: int, group: int, length: int, timestep: int, lengths: list[int] | None,
        kv_heads: int = 2, batch: int = 2) -> None:
    heads = group * kv_heads
    x = 16 // torch.empty((), dtype=dtype).element_size()
    qkv = torch.randn(batch, heads + 2 * kv_heads, dh, dtype=dtype, device="cuda")
    q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=1)
    k_cache = torch.randn(batch, kv_heads, dh // x, length, x, dtype=dtype, device="cuda")
    v_cache = torch.randn(batch, kv_heads, length, dh, dtype=dtype, device="cuda")
    slopes = torch.rand(heads, device="cuda")
    lens = torch.tensor(lengths, dtype=torch.int32, device="cuda") if lengths is not None else None
    out = awq_inference_engine.single_query_attention(q, k, v, k_cache, v_cache, lens, slopes, timestep, dh // 2,
                                                      10000.0, 1.0, group % 2 == 0)
    torch.cuda.synchronize()
    finite = out.isfinite().all(dim=-1)
    if lengths is None:
        assert finite.all(), "non-finite output"
    else:
        assert all(bool(finite[b].all()) == (lengths[b] >= 0) for b in range(batch)), "wrong NaN pattern"


def main() -> int:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for dh in (48, 128, 256):
            for group in (1, 4, 8, 32):
                run(dtype, dh, group, 100, 40, None)                # one split: direct output
                run(dtype, dh, group, 600, 1000, None)              # split, wrapped circular buffer
    run(torch.float16, 128, 4, 900, 0, [2000, 3])                   # empty splits
    run(torch.float16, 128, 4, 1024, 0, [256, 1100])                # split of only the new token; wrap in a tile
    run(torch.float16, 64, 8, 50, 0, [-1, 70])                      # negative length: NaN, cache untouched
    run(torch.float16, 64, 4, 1, 7, None)                           # L = 1
    # As many rows as resident CTA slots: one split per row, on CC 9.0 two ring-kernel chunks (2048 + 52).
    rows = 2 * torch.cuda.get_device_properties(0).multi_processor_count
    run(torch.float16, 32, 4, 2100, 2 * 2100 + 7, None, kv_heads=rows, batch=1)
    q = torch.randn(1, 8, 64, dtype=torch.float16, device="cuda")
    kv = torch.randn(1, 2, 64, dtype=torch.float16, device="cuda")
    out = ft_attention.single_query_attention(q, kv, kv, torch.randn(1, 2, 8, 300, 8, dtype=torch.float16,
                                                                     device="cuda"),
                                              torch.randn(1, 2, 300, 64, dtype=torch.float16, device="cuda"),
                                              None, None, 299)
    torch.cuda.synchronize()
    assert out.isfinite().all()
    print("sanitize_attention: all variants ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
