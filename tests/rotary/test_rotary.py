"""rotary_embedding_neox and fused_rope_with_pos_forward_func against float64 references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import awq_inference_engine
from tests.utils import relerr

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "llm-awq-h100.pt"
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# relative error of one rounding to the dtype, with headroom for the rounded cos/sin
TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1.5e-3, torch.bfloat16: 1e-2}


def rope_cache_reference(positions: torch.Tensor, x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """NeoX RoPE of x [..., H, D] (tokens = leading dims) from a [P, rot] cos|sin cache, in float64."""
    rot = cache.size(1)
    half = rot // 2
    heads, head_size = x.shape[-2:]
    xf = x.double().reshape(-1, heads, head_size)
    rows = cache.double()[positions.reshape(-1)[: xf.size(0)]].unsqueeze(1)
    cos, sin = rows[..., :half], rows[..., half:]
    out = xf.clone()
    out[..., :half] = xf[..., :half] * cos - xf[..., half:rot] * sin
    out[..., half:rot] = xf[..., half:rot] * cos + xf[..., :half] * sin
    return out.reshape(x.shape)


def make_cache(max_position: int, rot: int, dtype: torch.dtype, device: str = "cuda") -> torch.Tensor:
    inv_freq = 10000.0 ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    angles = torch.arange(max_position, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(device=device, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "batch,seq,q_heads,k_heads,head_size,rot",
    [
        (1, 7, 4, 4, 128, 128),  # MHA, full rotary
        (2, 5, 8, 2, 128, 64),  # GQA, partial rotary
        (3, 3, 6, 1, 64, 64),  # MQA
        (1, 33, 3, 3, 80, 80),  # head size not a power of two
        (2, 4, 5, 5, 10, 6),  # rot/2 odd: scalar path
        (1, 1, 1, 1, 2, 2),
    ],
)
@pytest.mark.parametrize("fused_qkv", [False, True], ids=["separate", "qkv_views"])
def test_rotary_embedding_neox(dtype, batch, seq, q_heads, k_heads, head_size, rot, fused_qkv) -> None:
    max_position = 300
    cache = make_cache(max_position, rot, dtype)
    positions = torch.randint(0, max_position, (batch, seq), device="cuda")
    if fused_qkv:  # query and key are strided views into one [B, S, Hq + 2 Hk, D] buffer
        qkv = torch.randn(batch, seq, q_heads + 2 * k_heads, head_size, dtype=dtype, device="cuda")
        query, key = qkv[:, :, :q_heads], qkv[:, :, q_heads : q_heads + k_heads]
        value_before = qkv[:, :, q_heads + k_heads :].clone()
    else:
        query = torch.randn(batch, seq, q_heads, head_size, dtype=dtype, device="cuda")
        key = torch.randn(batch, seq, k_heads, head_size, dtype=dtype, device="cuda")
    q_ref = rope_cache_reference(positions, query, cache)
    k_ref = rope_cache_reference(positions, key, cache)
    q_tail, k_tail = query[..., rot:].clone(), key[..., rot:].clone()

    awq_inference_engine.rotary_embedding_neox(positions, query, key, head_size, cache)

    assert relerr(query, q_ref) <= TOL[dtype]
    assert relerr(key, k_ref) <= TOL[dtype]
    assert torch.equal(query[..., rot:], q_tail) and torch.equal(key[..., rot:], k_tail)  # partial rotary
    if fused_qkv:
        assert torch.equal(qkv[:, :, q_heads + k_heads :], value_before)


@pytest.mark.gpu
def test_rotary_embedding_neox_large() -> None:
    """Many tokens, Llama-2-70B-like heads; positions beyond the first block of the cache."""
    cache = make_cache(4096, 128, torch.float16)
    positions = torch.randint(0, 4096, (1, 2049), device="cuda")
    query = torch.randn(1, 2049, 64, 128, dtype=torch.float16, device="cuda")
    key = torch.randn(1, 2049, 8, 128, dtype=torch.float16, device="cuda")
    q_ref, k_ref = rope_cache_reference(positions, query, cache), rope_cache_reference(positions, key, cache)
    awq_inference_engine.rotary_embedding_neox(positions, query, key, 128, cache)
    assert relerr(query, q_ref) <= TOL[torch.float16] and relerr(key, k_ref) <= TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["rotary_embedding_neox/fp16/T6_H4_D128_rot128", "rotary_embedding_neox/fp16/T6_H4_D128_rot64"])
def test_rotary_embedding_neox_golden(case: str) -> None:
    c = torch.load(GOLDEN, weights_only=True)["cases"][case]
    inp = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in c["inputs"].items()}
    query, key = inp["query"].clone(), inp["key"].clone()
    awq_inference_engine.rotary_embedding_neox(inp["positions"], query, key, inp["head_size"], inp["cos_sin_cache"])
    reference = c["reference"]
    ours = relerr(query, reference)
    assert ours <= c["relerr_vs_reference"] + 1e-6, f"ours {ours:.2e} vs original {c['relerr_vs_reference']:.2e}"
    k_ref = rope_cache_reference(inp["positions"], inp["key"], inp["cos_sin_cache"])
    assert relerr(key, k_ref) <= relerr(c["outputs"]["key_out"], k_ref) + 1e-6


def fused_rope_reference(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """out(i0, i1, h, j) from the angle freqs_flat[(i1*A0 + i0)*d2 + j], in float64."""
    a0, a1 = x.shape[:2]
    d2 = freqs.size(-1)
    half = d2 // 2
    theta = freqs.reshape(-1)[: a0 * a1 * d2].double().view(a1, a0, d2).transpose(0, 1).unsqueeze(2)
    cos, sin = theta.cos(), theta.sin()
    xf = x.double()
    out = xf.clone()
    out[..., :half] = xf[..., :half] * cos[..., :half] - xf[..., half:d2] * sin[..., :half]
    out[..., half:d2] = xf[..., half:d2] * cos[..., half:] + xf[..., :half] * sin[..., half:]
    return out


FUSED_TOL = {torch.float32: 2e-6, torch.float16: 1.5e-3, torch.bfloat16: 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "a0,a1,heads,head_size,d2",
    [(1, 16, 4, 128, 128), (3, 5, 2, 64, 32), (2, 7, 3, 24, 24), (1, 9, 5, 10, 6), (4, 1, 1, 2, 2)],
)
@pytest.mark.parametrize("layout", ["contiguous", "qkv_view", "transposed_view"])
@pytest.mark.parametrize("transpose_output_memory", [False, True])
def test_fused_rope(dtype, a0, a1, heads, head_size, d2, layout, transpose_output_memory) -> None:
    if layout == "contiguous":
        x = torch.randn(a0, a1, heads, head_size, dtype=dtype, device="cuda")
    elif layout == "qkv_view":  # tinychat: xq = qkv[:, :, :H] of a [B, S, 3H, D] buffer
        x = torch.randn(a0, a1, 3 * heads, head_size, dtype=dtype, device="cuda")[:, :, heads : 2 * heads]
    else:  # arbitrary strides, including a non-unit innermost stride
        x = torch.randn(a1, a0, head_size, heads, dtype=dtype, device="cuda").permute(1, 0, 3, 2)
    freqs = torch.rand(a1 * a0, d2, device="cuda") * 100.0
    x_before = x.clone()
    out = awq_inference_engine.fused_rope_with_pos_forward_func(x, freqs, transpose_output_memory)
    assert out.shape == x.shape and out.dtype == dtype
    if transpose_output_memory:
        assert out.stride() == (heads * head_size, a0 * heads * head_size, head_size, 1)
    else:
        assert out.is_contiguous()
    assert relerr(out, fused_rope_reference(x, freqs)) <= FUSED_TOL[dtype]
    assert torch.equal(out[..., d2:], x[..., d2:])
    assert torch.equal(x, x_before)


@pytest.mark.gpu
def test_fused_rope_tinychat_call() -> None:
    """tinychat: freqs [S, 1, 1, D] = cat(t f, t f), input a qkv view, transposed output memory."""
    seq, heads, head_size = 300, 32, 128
    f = 10000.0 ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.arange(seq, dtype=torch.float32)[:, None] * f
    freqs = torch.cat([angles, angles], dim=-1).view(seq, 1, 1, head_size).cuda()
    qkv = torch.randn(1, seq, 3 * heads, head_size, dtype=torch.float16, device="cuda")
    xq = qkv[:, :, :heads]
    out = awq_inference_engine.fused_rope_with_pos_forward_func(xq, freqs, True)
    assert out.is_contiguous()
    assert relerr(out, fused_rope_reference(xq, freqs)) <= FUSED_TOL[torch.float16]


@pytest.mark.gpu
def test_fused_rope_golden() -> None:
    c = torch.load(GOLDEN, weights_only=True)["cases"]["fused_rope_with_pos_forward_func/fp16/S16_H4_D128"]
    qkv, heads = c["inputs"]["qkv"].cuda(), c["inputs"]["H"]
    out = awq_inference_engine.fused_rope_with_pos_forward_func(qkv[:, :, :heads], c["inputs"]["freqs"].cuda(), True)
    assert list(out.stride()) == c["outputs"]["out_strides"]
    ours = relerr(out, c["reference"])
    assert ours <= c["relerr_vs_reference"] + 1e-6, f"ours {ours:.2e} vs original {c['relerr_vs_reference']:.2e}"


# ---- argument errors (CPU: validation runs before the device check) ----


def _rope_args(**over: object) -> list:
    args = {
        "positions": torch.zeros(2, 3, dtype=torch.long),
        "query": torch.randn(2, 3, 4, 16),
        "key": torch.randn(2, 3, 2, 16),
        "head_size": 16,
        "cache": torch.randn(10, 8),
    }
    args.update(over)
    return [args["positions"], args["query"], args["key"], args["head_size"], args["cache"]]


@pytest.mark.parametrize(
    "over,match",
    [
        ({"query": torch.randn(2, 3, 4, 16).int()}, r"argument 'query' must have dtype one of"),
        ({"key": torch.randn(2, 3, 2, 16).half()}, r"argument 'key' must have the dtype of 'query'"),
        ({"cache": torch.randn(10, 8).double()}, r"argument 'cos_sin_cache' must have the dtype of 'query'"),
        ({"positions": torch.zeros(2, 3, dtype=torch.int32)}, r"argument 'positions' must have dtype Long"),
        ({"head_size": 0}, r"argument 'head_size' must be positive"),
        ({"head_size": 8}, r"argument 'query' must have a last dimension equal to head_size"),
        ({"query": torch.randn(6, 16)}, r"argument 'query' must be \[..., heads, head_size\]"),
        ({"key": torch.randn(2, 3, 16, 2).transpose(-1, -2)},
         r"argument 'key' must have a contiguous last dimension"),
        ({"query": torch.randn(3, 2, 4, 16).transpose(0, 1)}, r"argument 'query' must have a contiguous last dimension "
         r"and leading \(token\) dimensions that flatten"),
        ({"key": torch.randn(2, 4, 2, 16)}, r"argument 'key' must have the leading \(token\) dimensions of 'query'"),
        ({"cache": torch.randn(10, 8, 1)}, r"argument 'cos_sin_cache' must be 2-D"),
        ({"cache": torch.randn(8, 10).t()}, r"argument 'cos_sin_cache' must be contiguous"),
        ({"cache": torch.randn(10, 7)}, r"rot_dim even"),
        ({"cache": torch.randn(10, 18)}, r"rot_dim even and in \[2, head_size=16\]"),
        ({"positions": torch.zeros(5, dtype=torch.long)}, r"argument 'positions' must have at least one entry per token"),
        ({"positions": torch.zeros(12, dtype=torch.long)[::2]}, r"argument 'positions' must be contiguous"),
        ({}, r"argument 'query' must be a CUDA tensor"),
    ],
)
def test_rotary_embedding_neox_errors(over: dict, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        awq_inference_engine.rotary_embedding_neox(*_rope_args(**over))


def test_rotary_embedding_neox_overlapping_query_key() -> None:
    qkv = torch.randn(2, 3, 4, 16)
    with pytest.raises(RuntimeError, match=r"arguments 'query' and 'key' must not share memory"):
        awq_inference_engine.rotary_embedding_neox(torch.zeros(6, dtype=torch.long), qkv, qkv, 16, torch.randn(10, 8))


@pytest.mark.parametrize(
    "x,freqs,match",
    [
        (torch.randn(2, 3, 4, 16).int(), torch.randn(6, 16), r"argument 'input' must have dtype one of"),
        (torch.randn(6, 4, 16), torch.randn(6, 16), r"argument 'input' must be 4-D"),
        (torch.randn(2, 3, 4, 16), torch.randn(6, 16).half(), r"argument 'freqs' must have dtype Float"),
        (torch.randn(2, 3, 4, 16), torch.randn(16, 6).t(), r"argument 'freqs' must be contiguous"),
        (torch.randn(2, 3, 4, 16), torch.randn(6, 7), r"argument 'freqs' must have an even last dimension in \[2, 16\]"),
        (torch.randn(2, 3, 4, 16), torch.randn(6, 18), r"argument 'freqs' must have an even last dimension"),
        (torch.randn(2, 3, 4, 16), torch.randn(5, 16), r"argument 'freqs' must hold an angle vector per"),
        (torch.randn(2, 3, 4, 16), torch.randn(6, 16), r"argument 'input' must be a CUDA tensor"),
    ],
)
def test_fused_rope_errors(x: torch.Tensor, freqs: torch.Tensor, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        awq_inference_engine.fused_rope_with_pos_forward_func(x, freqs, True)


@pytest.mark.gpu
def test_rotary_embedding_neox_position_out_of_range() -> None:
    """A position outside the cache is a device-side assert (checked in a subprocess: it poisons the context)."""
    import subprocess
    import sys

    script = (
        "import torch, awq_inference_engine as a\n"
        "q = torch.randn(1, 4, 2, 64, device='cuda', dtype=torch.float16); k = q.clone()\n"
        "a.rotary_embedding_neox(torch.tensor([0, 1, 16, 2], device='cuda'), q, k, 64,"
        " torch.randn(16, 64, device='cuda', dtype=torch.float16))\n"
        "torch.cuda.synchronize()\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)
    assert result.returncode != 0
    assert "device-side assert" in result.stderr or "position is outside" in result.stderr, result.stderr[-2000:]
