"""Float32 torch reference of single_query_attention (spec §3.7) over the unpacked cache."""

from __future__ import annotations

import math
from typing import Optional

import torch


def cache_x(dtype: torch.dtype) -> int:
    """Elements per 16-byte piece of the FasterTransformer K cache."""
    return 16 // torch.empty((), dtype=dtype).element_size()


def unpack_k_cache(k_cache: torch.Tensor) -> torch.Tensor:
    """[B, Hkv, Dh/x, L, x] -> [B, Hkv, L, Dh]."""
    b, hkv, pieces, length, x = k_cache.shape
    return k_cache.permute(0, 1, 3, 2, 4).reshape(b, hkv, length, pieces * x)


def pack_k_cache(k: torch.Tensor) -> torch.Tensor:
    """[B, Hkv, L, Dh] -> [B, Hkv, Dh/x, L, x] (contiguous)."""
    b, hkv, length, dh = k.shape
    x = cache_x(k.dtype)
    return k.reshape(b, hkv, length, dh // x, x).permute(0, 1, 3, 2, 4).contiguous()


def rope(vec: torch.Tensor, position: int, rot: int, base: float, scale: float, neox: bool) -> torch.Tensor:
    """Rotates [heads, Dh] float32 vectors at `position` (angles in float64), rounded like the kernel."""
    i = torch.arange(rot // 2, dtype=torch.float64, device=vec.device)
    angle = position * scale * base ** (-2 * i / rot)
    cos, sin = angle.cos().float(), angle.sin().float()
    out = vec.clone()
    if neox:
        a, b = vec[:, : rot // 2], vec[:, rot // 2 : rot]
        out[:, : rot // 2] = a * cos - b * sin
        out[:, rot // 2 : rot] = b * cos + a * sin
    else:
        a, b = vec[:, 0:rot:2], vec[:, 1:rot:2]
        out[:, 0:rot:2] = a * cos - b * sin
        out[:, 1:rot:2] = b * cos + a * sin
    return out


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: Optional[torch.Tensor],
    alibi: Optional[torch.Tensor],
    timestep: int,
    rot: int = 0,
    base: float = 10000.0,
    scale: float = 1.0,
    neox: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out float32 [B, H, Dh], k_cache after, v_cache after) without touching the inputs."""
    dtype = q.dtype
    batch, heads, dh = q.shape
    hkv, length = v_cache.shape[1], v_cache.shape[2]
    rep = heads // hkv
    k_all = unpack_k_cache(k_cache).clone()
    v_all = v_cache.clone()
    out = torch.empty(batch, heads, dh, dtype=torch.float32, device=q.device)
    for b in range(batch):
        t = int(lengths[b]) if lengths is not None else timestep
        qf, kf, vf = q[b].float(), k[b].float(), v[b].float()
        if rot > 0:
            qf = rope(qf, t, rot, base, scale, neox).to(dtype).float()
            kf = rope(kf, t, rot, base, scale, neox).to(dtype).float()
        k_all[b, :, t % length] = kf.to(dtype)
        v_all[b, :, t % length] = vf.to(dtype)
        first = max(0, t + 1 - length)
        positions = torch.arange(first, t + 1, device=q.device)
        keys = k_all[b][:, positions % length].float().repeat_interleave(rep, 0)  # [H, n, Dh]
        values = v_all[b][:, positions % length].float().repeat_interleave(rep, 0)
        s = torch.einsum("hd,hnd->hn", qf, keys) / math.sqrt(dh)
        if alibi is not None:
            s = s + alibi.float()[:, None] * (positions - t).float()[None, :]
        e = torch.exp(s - s.max(dim=1, keepdim=True).values)
        p = e / (e.sum(dim=1, keepdim=True) + 1e-6)
        out[b] = torch.einsum("hn,hnd->hd", p, values)
    return out, pack_k_cache(k_all), v_all
