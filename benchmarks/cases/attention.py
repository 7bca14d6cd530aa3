"""Decode attention (`single_query_attention`) against torch SDPA's flash backend (issue 6).

Each shape is a full cache: timestep = L - 1, so the window is the whole cache of L positions
(our op also applies NeoX rotary to q and the new key and writes the new K/V slot; SDPA does
neither). SDPA gets the same K/V as contiguous [B, Hkv, L, Dh] fp16 tensors, q as [B, Hq, 1, Dh],
and `enable_gqa=True`. bytes_moved counts the KV cache read plus q and the output.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

import awq_inference_engine
from benchmarks.harness import Case

SHAPES = [  # (B, L, Hq, Hkv), Dh = 128
    (1, 4096, 32, 32),
    (8, 4096, 32, 8),
    (32, 2048, 32, 8),
    (8, 32768, 32, 8),
    (1, 131072, 32, 8),
    (8, 32768, 64, 8),  # beyond the shapes: 8 query heads per KV head (Llama-2/3-70B)
]
DH = 128


def _case(batch: int, length: int, heads: int, kv_heads: int) -> Case:
    dtype = torch.float16
    x = 8
    q = torch.randn(batch, heads, DH, dtype=dtype, device="cuda")
    k = torch.randn(batch, kv_heads, DH, dtype=dtype, device="cuda")
    v = torch.randn(batch, kv_heads, DH, dtype=dtype, device="cuda")
    k_cache = torch.randn(batch, kv_heads, DH // x, length, x, dtype=dtype, device="cuda")
    v_cache = torch.randn(batch, kv_heads, length, DH, dtype=dtype, device="cuda")
    keys = k_cache.permute(0, 1, 3, 2, 4).reshape(batch, kv_heads, length, DH).contiguous()
    values = v_cache.clone()
    q4 = q.unsqueeze(2)

    def ours() -> torch.Tensor:
        return awq_inference_engine.single_query_attention(q, k, v, k_cache, v_cache, None, None, length - 1, DH,
                                                           10000.0, 1.0, True)

    def baseline() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return scaled_dot_product_attention(q4, keys, values, enable_gqa=True)

    element = torch.empty((), dtype=dtype).element_size()
    kv_bytes = 2 * batch * kv_heads * length * DH * element
    return Case(
        family="attention",
        name=f"fp16 B{batch} L{length} H{heads}/{kv_heads} D{DH}",
        ours=ours,
        baseline=baseline,
        baseline_name="sdpa flash",
        bytes_moved=kv_bytes + 2 * batch * heads * DH * element,
        flops=4 * batch * heads * length * DH,
        extra={"kv_bytes": kv_bytes},
    )


def cases(quick: bool) -> list[Case]:
    shapes = [SHAPES[0], SHAPES[3]] if quick else SHAPES
    return [_case(*shape) for shape in shapes]
