"""RoPE: rotary_embedding_neox (cos/sin cache, in place) and fused_rope_with_pos_forward_func (angles)
against torch eager rotate_half implementations."""

from __future__ import annotations

import torch

import awq_inference_engine
from benchmarks.harness import Case


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _torch_rope_cache(positions, query, key, cache) -> None:
    """vLLM/HF eager NeoX RoPE, in place like the op."""
    rot = cache.size(1)
    cos, sin = cache[positions].chunk(2, dim=-1)
    cos, sin = torch.cat([cos, cos], -1).unsqueeze(-2), torch.cat([sin, sin], -1).unsqueeze(-2)
    for x in (query, key):
        r = x[..., :rot]
        r.copy_(r * cos + _rotate_half(r) * sin)


def _torch_rope_angles(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """tinychat-style eager RoPE from angles [S, 1, 1, D] on a [1, S, H, D] input."""
    cos, sin = freqs.cos().transpose(0, 1), freqs.sin().transpose(0, 1)
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


def cases(quick: bool) -> list[Case]:
    out = []
    dtypes = (torch.float16,) if quick else (torch.float16, torch.bfloat16)
    shapes = [(16384, 32, 8, 128)] if quick else [(16384, 32, 32, 128), (16384, 32, 8, 128), (4096, 64, 8, 128),
                                                   (1, 32, 32, 128)]
    for dtype in dtypes:
        for tokens, q_heads, k_heads, head_size in shapes:
            max_position = max(tokens, 4096)
            positions = torch.randint(0, max_position, (1, tokens), device="cuda")
            query = torch.randn(1, tokens, q_heads, head_size, dtype=dtype, device="cuda")
            key = torch.randn(1, tokens, k_heads, head_size, dtype=dtype, device="cuda")
            angles = torch.rand(max_position, head_size // 2, device="cuda") * 6.28
            cache = torch.cat([angles.cos(), angles.sin()], -1).to(dtype)
            elt = query.element_size()
            nbytes = (2 * (query.numel() + key.numel()) * elt + positions.numel() * 8
                      + min(tokens, max_position) * head_size * elt)
            out.append(Case(
                family="rotary", name=f"neox_cache {str(dtype)[6:]} T{tokens} Hq{q_heads} Hk{k_heads} D{head_size}",
                ours=lambda p=positions, q=query, k=key, c=cache, d=head_size:
                    awq_inference_engine.rotary_embedding_neox(p, q, k, d, c),
                baseline=lambda p=positions, q=query, k=key, c=cache: _torch_rope_cache(p, q, k, c),
                baseline_name="torch eager", bytes_moved=nbytes,
            ))
    for dtype in dtypes:
        for seq, heads in [(16384, 32)] if quick else [(16384, 32), (2048, 32), (16384, 64)]:
            head_size = 128
            qkv = torch.randn(1, seq, 3 * heads, head_size, dtype=dtype, device="cuda")
            xq = qkv[:, :, :heads]
            f = torch.rand(seq, 1, 1, head_size // 2, device="cuda") * 6.28
            freqs = torch.cat([f, f], -1)
            nbytes = 2 * xq.numel() * qkv.element_size() + freqs.numel() * 4
            out.append(Case(
                family="rotary", name=f"fused_rope {str(dtype)[6:]} S{seq} H{heads} D{head_size}",
                ours=lambda x=xq, fr=freqs: awq_inference_engine.fused_rope_with_pos_forward_func(x, fr, True),
                baseline=lambda x=xq, fr=freqs: _torch_rope_angles(x, fr),
                baseline_name="torch eager", bytes_moved=nbytes,
            ))
    return out
