"""single_query_attention rejects every bad argument with a message naming it (CPU tensors, no GPU needed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

B, H, HKV, DH, L = 2, 8, 2, 64, 16


def _module(name: str):  # noqa: ANN202
    if name == "ft_attention":
        import ft_attention

        return ft_attention
    import awq_inference_engine

    return awq_inference_engine


def valid_args(dtype: torch.dtype = torch.float16) -> dict:
    x = 16 // torch.empty((), dtype=dtype).element_size()
    return {
        "q": torch.randn(B, H, DH).to(dtype),
        "k": torch.randn(B, HKV, DH).to(dtype),
        "v": torch.randn(B, HKV, DH).to(dtype),
        "k_cache": torch.randn(B, HKV, DH // x, L, x).to(dtype),
        "v_cache": torch.randn(B, HKV, L, DH).to(dtype),
        "length_per_sample_": None,
        "alibi_slopes_": None,
        "timestep": 5,
        "rotary_embedding_dim": 0,
        "rotary_base": 10000.0,
        "rotary_scale": 1.0,
        "neox_rotary_style": True,
    }


def _misaligned_k_cache(a: dict) -> None:
    x = a["k_cache"].shape[-1]
    buffer = torch.zeros(a["k_cache"].numel() + 1, dtype=a["k_cache"].dtype)
    a["k_cache"] = buffer[1:].view(B, HKV, DH // x, L, x)


BREAKAGES: list[tuple[str, Callable[[dict], None], str]] = [
    ("q_int", lambda a: a.update(q=a["q"].to(torch.int32)), r"argument 'q' must have dtype one of"),
    ("q_double", lambda a: a.update(q=a["q"].double()), r"argument 'q' must have dtype one of"),
    ("k_dtype", lambda a: a.update(k=a["k"].float()), r"argument 'k' must have the dtype of 'q'"),
    ("v_dtype", lambda a: a.update(v=a["v"].bfloat16()), r"argument 'v' must have the dtype of 'q'"),
    ("k_cache_dtype", lambda a: a.update(k_cache=a["k_cache"].bfloat16()), r"argument 'k_cache' must have the dtype"),
    ("v_cache_dtype", lambda a: a.update(v_cache=a["v_cache"].float()), r"argument 'v_cache' must have the dtype"),
    ("v_cache_3d", lambda a: a.update(v_cache=a["v_cache"][0]), r"argument 'v_cache' must be 4-D"),
    ("head_size_40", lambda a: a.update(v_cache=torch.randn(B, HKV, L, 40).half()), r"unsupported head size 40"),
    ("head_size_512", lambda a: a.update(v_cache=torch.randn(B, HKV, L, 512).half()), r"unsupported head size 512"),
    ("empty_cache", lambda a: a.update(v_cache=torch.randn(B, HKV, 0, DH).half()), r"at least one KV head and one slot"),
    ("q_2d", lambda a: a.update(q=a["q"][0]), r"argument 'q' must be 3-D"),
    ("q_batch", lambda a: a.update(q=a["q"][:1]), r"argument 'q' must have shape"),
    ("q_head_dim", lambda a: a.update(q=torch.randn(B, H, 32).half()), r"argument 'q' must have shape"),
    ("q_strides", lambda a: a.update(q=torch.randn(B, DH, H).half().transpose(1, 2)), r"argument 'q' must have stride"),
    ("q_head_stride", lambda a: a.update(q=torch.randn(B, H, 2 * DH).half()[:, :, :DH]),
     r"argument 'q' must have stride"),
    ("heads_not_multiple", lambda a: a.update(q=torch.randn(B, 7, DH).half()), r"positive multiple of the number of KV"),
    ("k_shape", lambda a: a.update(k=torch.randn(B, H, DH).half()), r"argument 'k' must have shape"),
    ("v_shape", lambda a: a.update(v=torch.randn(B, HKV, 32).half()), r"argument 'v' must have shape"),
    ("v_strides", lambda a: a.update(v=torch.randn(B, DH, HKV).half().transpose(1, 2)),
     r"argument 'v' must have stride"),
    ("k_cache_wrong_x", lambda a: a.update(k_cache=torch.randn(B, HKV, DH // 4, L, 4).half()),
     r"argument 'k_cache' must have shape"),
    ("k_cache_wrong_len", lambda a: a.update(k_cache=torch.randn(B, HKV, DH // 8, L + 1, 8).half()),
     r"argument 'k_cache' must have shape"),
    ("k_cache_strided", lambda a: a.update(k_cache=a["k_cache"].transpose(0, 1).contiguous().transpose(0, 1)),
     r"argument 'k_cache' must be contiguous"),
    ("v_cache_strided", lambda a: a.update(v_cache=a["v_cache"].transpose(0, 1).contiguous().transpose(0, 1)),
     r"argument 'v_cache' must be contiguous"),
    ("k_cache_misaligned", _misaligned_k_cache, r"must be 16-byte aligned"),
    ("lengths_int64", lambda a: a.update(length_per_sample_=torch.zeros(B, dtype=torch.int64)),
     r"argument 'length_per_sample_' must have dtype Int"),
    ("lengths_shape", lambda a: a.update(length_per_sample_=torch.zeros(B + 1, dtype=torch.int32)),
     r"argument 'length_per_sample_' must have shape"),
    ("lengths_strided", lambda a: a.update(length_per_sample_=torch.zeros(2 * B, dtype=torch.int32)[::2]),
     r"argument 'length_per_sample_' must be contiguous"),
    ("alibi_half", lambda a: a.update(alibi_slopes_=torch.zeros(H).half()),
     r"argument 'alibi_slopes_' must have dtype Float"),
    ("alibi_shape", lambda a: a.update(alibi_slopes_=torch.zeros(HKV)), r"argument 'alibi_slopes_' must have shape"),
    ("alibi_strided", lambda a: a.update(alibi_slopes_=torch.zeros(2 * H)[::2]),
     r"argument 'alibi_slopes_' must be contiguous"),
    ("timestep_negative", lambda a: a.update(timestep=-1), r"argument 'timestep' must be in"),
    ("timestep_huge", lambda a: a.update(timestep=2**31), r"argument 'timestep' must be in"),
    ("timestep_near_int_max", lambda a: a.update(timestep=2**31 - 2),
     r"argument 'timestep' must be in \[0, 2147475454\]"),
    ("rotary_odd", lambda a: a.update(rotary_embedding_dim=31), r"argument 'rotary_embedding_dim' must be even"),
    ("rotary_too_big", lambda a: a.update(rotary_embedding_dim=DH + 2), r"argument 'rotary_embedding_dim' must be"),
    ("rotary_negative", lambda a: a.update(rotary_embedding_dim=-2), r"argument 'rotary_embedding_dim' must be"),
    ("rotary_base_zero", lambda a: a.update(rotary_embedding_dim=DH, rotary_base=0.0),
     r"argument 'rotary_base' must be finite and > 0"),
    ("rotary_scale_nan", lambda a: a.update(rotary_embedding_dim=DH, rotary_scale=float("nan")),
     r"argument 'rotary_scale' must be finite"),
    ("cpu_tensors", lambda a: None, r"argument 'q' must be a CUDA tensor"),
]


@pytest.mark.parametrize("module", ["awq_inference_engine", "ft_attention"])
@pytest.mark.parametrize("name,breakage,message", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_rejects(module: str, name: str, breakage: Callable[[dict], None], message: str) -> None:
    args = valid_args()
    breakage(args)
    with pytest.raises(RuntimeError, match=rf"single_query_attention: .*{message}"):
        _module(module).single_query_attention(**args)


def test_timestep_ignored_when_lengths_given() -> None:
    """A negative timestep is fine with length_per_sample_ (llm-awq ignores it then): the CPU check fires."""
    args = valid_args()
    args.update(length_per_sample_=torch.zeros(B, dtype=torch.int32), timestep=-5)
    with pytest.raises(RuntimeError, match=r"argument 'q' must be a CUDA tensor"):
        _module("awq_inference_engine").single_query_attention(**args)


@pytest.mark.gpu
def test_device_mismatch() -> None:
    args = valid_args()
    for key in ("q", "k", "v", "k_cache", "v_cache"):
        args[key] = args[key].cuda()
    args["length_per_sample_"] = torch.zeros(B, dtype=torch.int32)  # left on the CPU
    with pytest.raises(RuntimeError, match=r"argument 'length_per_sample_' must be a CUDA tensor"):
        _module("awq_inference_engine").single_query_attention(**args)
