"""single_query_attention (spec §3.7) on the GPU against a float32 reference, in both modules."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch

from tests.attention.reference import cache_x, pack_k_cache, reference, unpack_k_cache
from tests.utils import poison, relerr

pytestmark = pytest.mark.gpu

HEAD_SIZES = [32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
OUT_TOL = {torch.float32: 2e-5, torch.float16: 1.5e-3, torch.bfloat16: 1e-2}
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "llm-awq-h100.pt"


def _module(name: str):  # noqa: ANN202
    if name == "ft_attention":
        import ft_attention

        return ft_attention
    import awq_inference_engine

    return awq_inference_engine


def make_inputs(batch: int, heads: int, kv_heads: int, dh: int, length: int, dtype: torch.dtype,
                packed: bool = True) -> tuple[torch.Tensor, ...]:
    """q, k, v (views of one packed qkv when `packed`, else separate tensors) and random caches."""
    if packed:
        qkv = torch.randn(batch, heads + 2 * kv_heads, dh, dtype=dtype, device="cuda")
        q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=1)
    else:  # separate allocations with different batch strides (padded rows)
        q = torch.randn(batch, heads + 1, dh, dtype=dtype, device="cuda")[:, :heads]
        k = torch.randn(batch, kv_heads + 3, dh, dtype=dtype, device="cuda")[:, 2 : 2 + kv_heads]
        v = torch.randn(batch, kv_heads, dh, dtype=dtype, device="cuda")
    x = cache_x(dtype)
    k_cache = torch.randn(batch, kv_heads, dh // x, length, x, dtype=dtype, device="cuda")
    v_cache = torch.randn(batch, kv_heads, length, dh, dtype=dtype, device="cuda")
    return q, k, v, k_cache, v_cache


def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
          lengths: Optional[torch.Tensor], alibi: Optional[torch.Tensor], timestep: int, rot: int = 0,
          base: float = 10000.0, scale: float = 1.0, neox: bool = True, module: str = "awq_inference_engine") -> None:
    expected, k_after, v_after = reference(q, k, v, k_cache, v_cache, lengths, alibi, timestep, rot, base, scale,
                                           neox)
    # The op allocates its output: leave a freed NaN block of that size for the caching allocator to hand
    # back, so an unwritten element shows up as NaN.
    del_me = poison(torch.empty(q.shape, dtype=q.dtype, device="cuda"))
    del del_me
    torch.cuda.synchronize()
    out = _module(module).single_query_attention(q, k, v, k_cache, v_cache, lengths, alibi, timestep, rot, base,
                                                 scale, neox)
    torch.cuda.synchronize()
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    err = relerr(out, expected)
    assert err < OUT_TOL[q.dtype], f"output relerr {err:.2e}"
    # Caches: the new slot of each sequence within rounding of the reference, every other slot untouched.
    length = v_cache.shape[2]
    slots = [(int(lengths[b]) if lengths is not None else timestep) % length for b in range(q.shape[0])]
    k_ours, k_ref = unpack_k_cache(k_cache), unpack_k_cache(k_after)
    for b, slot in enumerate(slots):
        mask = torch.ones(length, dtype=torch.bool, device="cuda")
        mask[slot] = False
        assert torch.equal(k_ours[b][:, mask], k_ref[b][:, mask]), f"K cache of sequence {b} changed off slot {slot}"
        assert torch.equal(v_cache[b][:, mask], v_after[b][:, mask]), f"V cache of sequence {b} changed off slot {slot}"
        assert torch.equal(v_cache[b][:, slot], v_after[b][:, slot]), "new V must be stored as given"
        k_err = relerr(k_ours[b][:, slot], k_ref[b][:, slot])
        assert k_err < OUT_TOL[q.dtype], f"new K (rotated) relerr {k_err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dh", HEAD_SIZES)
@pytest.mark.parametrize("rotary", ["none", "neox", "gptj_partial"])
def test_head_sizes_dtypes_rotary(dtype: torch.dtype, dh: int, rotary: str) -> None:
    q, k, v, kc, vc = make_inputs(2, 8, 2, dh, 80, dtype)
    rot = {"none": 0, "neox": dh, "gptj_partial": dh // 2}[rotary]
    check(q, k, v, kc, vc, None, None, 50, rot, 10000.0, 1.0, rotary == "neox")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("group", [1, 4, 8, 32])
@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("length,timestep", [(300, 120), (1500, 1499), (700, 2000)])
def test_gqa_alibi_split(dtype: torch.dtype, group: int, kv_heads: int, alibi: bool, length: int,
                         timestep: int) -> None:
    heads = group * kv_heads
    q, k, v, kc, vc = make_inputs(3, heads, kv_heads, 128, length, dtype)
    slopes = torch.rand(heads, device="cuda") * 0.1 if alibi else None
    check(q, k, v, kc, vc, None, slopes, timestep, 64, 10000.0, 1.0, True)


# Every position case for the short caches; for the long cache, the last slot and the circular case.
LENGTH_CASES = [(length, where) for length in (1, 2, 7, 255, 256, 257, 1000, 4097)
                for where in ("start", "inside", "last", "full", "circular")]
LENGTH_CASES += [(65536, "last"), (65536, "circular")]


@pytest.mark.parametrize(("length", "where"), LENGTH_CASES)
def test_lengths_and_circular_buffer(length: int, where: str) -> None:
    t = {"start": 0, "inside": length // 2, "last": length - 1, "full": length, "circular": 3 * length + 5}[where]
    q, k, v, kc, vc = make_inputs(1, 8, 2, 128, length, torch.float16)
    check(q, k, v, kc, vc, None, None, t, 128, 10000.0, 1.0, True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("group", [1, 4, 8])
def test_whole_window_per_cta(dtype: torch.dtype, group: int) -> None:
    """As many (sequence, KV head) rows as resident CTA slots (2 per SM): each window is one split and
    one chunk of the largest size the score buffer holds (8192 / heads per CTA positions), output
    written directly."""
    kv_heads = 4
    batch = -(-2 * torch.cuda.get_device_properties(0).multi_processor_count // kv_heads)
    length = 8192 // group
    q, k, v, kc, vc = make_inputs(batch, group * kv_heads, kv_heads, 64, length, dtype)
    check(q, k, v, kc, vc, None, torch.rand(group * kv_heads, device="cuda") * 0.01, 2 * length - 1, 64)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("group", [3, 4, 8])
@pytest.mark.parametrize("length,timestep", [(5000, 4999), (4500, 2 * 4500 + 1234)])
def test_long_split_in_chunks(dtype: torch.dtype, group: int, length: int, timestep: int) -> None:
    """As many (sequence, KV head) rows as resident CTA slots, so the host gives each row one split: on
    compute capability 9.0 the ring kernel (fp16/bf16) takes the whole window (4500-5000 positions) in
    chunks of 8192 / G_MAX positions (2048 for 3-4 heads, 1024 for 8) with an online softmax (rising
    ALiBi scores move the running maximum at each chunk; a circular window wraps inside a chunk, which
    cuts a V tile in two); the register kernel (fp32, other GPUs), whose split is one chunk, splits
    the window instead."""
    kv_heads = 8
    batch = -(-2 * torch.cuda.get_device_properties(0).multi_processor_count // kv_heads)
    q, k, v, kc, vc = make_inputs(batch, group * kv_heads, kv_heads, 64, length, dtype)
    check(q, k, v, kc, vc, None, torch.rand(group * kv_heads, device="cuda") * 0.01, timestep, 64)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dh", [48, 64, 128, 256])
@pytest.mark.parametrize("group", [1, 3, 4, 8])
def test_ring_tiles_wrap_and_short_splits(dtype: torch.dtype, dh: int, group: int) -> None:
    """The bulk-copy ring kernel (compute capability 9.0, fp16/bf16; the register kernel elsewhere):
    tiles of 32-128 positions by head size (Dh 48 leaves part of each K tile's slab runs and of each V
    box unused; short tiles leave mma row blocks unused), one sequence per window length. With
    L = 1024 and 30 one-head rows, the host picks 256-position splits (4 per window), so the lengths
    cover every tile remainder in steps of 32, splits that hold only the new token (t a multiple of
    256), and circular windows whose wrap falls inside a tile (t >= L; the V tile is cut there)."""
    lengths = list(range(256, 1024, 32)) + [257, 1023, 1024, 1100, 2048 + 37, 5 * 1024 + 255]
    q, k, v, kc, vc = make_inputs(len(lengths), group, 1, dh, 1024, dtype)
    slopes = torch.rand(group, device="cuda") * 0.01
    check(q, k, v, kc, vc, torch.tensor(lengths, dtype=torch.int32, device="cuda"), slopes, 0, dh, 10000.0, 1.0,
          True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length", [64, 3000])
def test_length_per_sample(dtype: torch.dtype, length: int) -> None:
    """Lengths beyond `timestep` (ignored when lengths are given), up to and past L (circular)."""
    q, k, v, kc, vc = make_inputs(4, 8, 2, 64, length, dtype)
    lengths = torch.tensor([0, 5, length - 1, 2 * length + 3], dtype=torch.int32, device="cuda")
    check(q, k, v, kc, vc, lengths, None, 0, 64, 10000.0, 1.0, False)


@pytest.mark.parametrize("batch", [1, 3])
def test_separate_tensors_own_strides(batch: int) -> None:
    q, k, v, kc, vc = make_inputs(batch, 12, 4, 96, 500, torch.float16, packed=False)
    assert q.stride(0) != k.stride(0) != v.stride(0)
    check(q, k, v, kc, vc, None, None, 333, 96, 10000.0, 1.0, True)


@pytest.mark.parametrize("rot,scale,t", [(128, 0.25, 1000), (32, 1.0, 100000), (128, 1.0, 131071)])
def test_rotary_scale_partial_and_far_positions(rot: int, scale: float, t: int) -> None:
    q, k, v, kc, vc = make_inputs(2, 4, 4, 128, 64, torch.float32)
    check(q, k, v, kc, vc, None, None, t, rot, 500000.0, scale, True)


@pytest.mark.parametrize("module", ["awq_inference_engine", "ft_attention"])
def test_module(module: str) -> None:
    q, k, v, kc, vc = make_inputs(2, 32, 8, 128, 2048, torch.bfloat16)
    check(q, k, v, kc, vc, None, torch.rand(32, device="cuda"), 1800, 128, 10000.0, 1.0, True, module=module)


def test_modules_give_identical_results() -> None:
    q, k, v, kc, vc = make_inputs(2, 32, 8, 128, 5000, torch.float16)
    kc2, vc2 = kc.clone(), vc.clone()
    a = _module("awq_inference_engine").single_query_attention(q, k, v, kc, vc, None, None, 4321, 128)
    b = _module("ft_attention").single_query_attention(q, k, v, kc2, vc2, None, None, 4321, 128)
    assert not a.isnan().any()
    assert torch.equal(a, b) and torch.equal(kc, kc2) and torch.equal(vc, vc2)


def test_keywords_and_defaults() -> None:
    q, k, v, kc, vc = make_inputs(1, 4, 4, 64, 16, torch.float16)
    expected, _, _ = reference(q, k, v, kc, vc, None, None, 3)
    out = _module("ft_attention").single_query_attention(
        q=q, k=k, v=v, k_cache=kc, v_cache=vc, length_per_sample_=None, alibi_slopes_=None, timestep=3)
    assert relerr(out, expected) < OUT_TOL[torch.float16]


def test_negative_length_gives_nan_and_leaves_cache() -> None:
    q, k, v, kc, vc = make_inputs(2, 4, 2, 64, 600, torch.float16)
    kc0, vc0 = kc.clone(), vc.clone()
    lengths = torch.tensor([-1, 7], dtype=torch.int32, device="cuda")
    out = _module("awq_inference_engine").single_query_attention(q, k, v, kc, vc, lengths, None, 0)
    assert out[0].isnan().all() and not out[1].isnan().any()
    assert torch.equal(kc[0], kc0[0]) and torch.equal(vc[0], vc0[0])


def _golden_cases() -> list[str]:
    if not GOLDEN.exists():
        return []
    cases = torch.load(GOLDEN, weights_only=True)["cases"]
    return sorted(name for name in cases if name.startswith("single_query_attention/"))


@pytest.mark.parametrize("name", _golden_cases())
@pytest.mark.parametrize("module", ["awq_inference_engine", "ft_attention"])
def test_golden(name: str, module: str) -> None:
    case = torch.load(GOLDEN, weights_only=True)["cases"][name]
    inp = case["inputs"]
    qkv = inp["qkv"].cuda()
    q, k, v = qkv.split([inp["Hq"], inp["Hkv"], inp["Hkv"]], dim=1)
    kc, vc = inp["k_cache"].cuda().clone(), inp["v_cache"].cuda().clone()
    lengths = inp["length_per_sample"].cuda() if inp["length_per_sample"] is not None else None
    alibi = inp["alibi_slopes"].cuda() if inp["alibi_slopes"] is not None else None
    out = _module(module).single_query_attention(
        q, k, v, kc, vc, lengths, alibi, inp["timestep"], inp["rotary_embedding_dim"], inp["rotary_base"],
        inp["rotary_scale"], inp["neox_rotary_style"])
    ref = case["reference"]
    ours = relerr(out, ref)
    original = case["relerr_vs_reference"]
    assert ours <= max(original * 1.05, 2e-6), f"ours {ours:.2e} vs original {original:.2e}"
    # The caches: bit-exact where the original wrote raw values, within rounding for rotated keys.
    tol = 1e-6 if q.dtype == torch.float32 else (1e-3 if q.dtype == torch.float16 else 4e-3)
    assert relerr(kc, case["outputs"]["k_cache_after"]) < tol
    assert torch.equal(vc.cpu(), case["outputs"]["v_cache_after"])


def test_pack_unpack_roundtrip() -> None:
    kc = torch.randn(2, 3, 16, 5, 8, dtype=torch.float16, device="cuda")
    assert torch.equal(pack_k_cache(unpack_k_cache(kc)), kc)
