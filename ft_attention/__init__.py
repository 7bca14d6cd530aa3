"""Drop-in replacement for llm-awq's standalone `ft_attention` module (importable, unlike upstream).

`single_query_attention` is the same implementation as
`awq_inference_engine.single_query_attention`, with the same keyword names and defaults.
"""

from __future__ import annotations

from typing import Optional

import torch

from awq_kernels._extension import load

_ops = load("ft_attention")


def single_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    length_per_sample_: Optional[torch.Tensor],
    alibi_slopes_: Optional[torch.Tensor],
    timestep: int,
    rotary_embedding_dim: int = 0,
    rotary_base: float = 10000.0,
    rotary_scale: float = 1.0,
    neox_rotary_style: bool = True,
) -> torch.Tensor:
    """Decode attention of one new token over a FasterTransformer KV cache (updated in place)."""
    return _ops.single_query_attention(
        q, k, v, k_cache, v_cache, length_per_sample_, alibi_slopes_, timestep,
        rotary_embedding_dim, rotary_base, rotary_scale, neox_rotary_style,
    )
