"""Every op of both modules: opcheck, and it runs on its tensors' device and that device's current stream.

The original launched several ops on cuda:0's legacy default stream whatever the tensors' device.
For each op:
* two GPUs (skipped with fewer): with cuda:0 current, the op runs on tensors on cuda:1 while a
  non-default stream is cuda:1's current stream. Its result equals the same op on cuda:0, no kernel
  ran on cuda:0 (profiler) and no cuda:0 memory was allocated, and it is ordered after work queued
  earlier on that stream (a long sleep, then an in-place negation of one input);
* one GPU: the same ordering and equality check with a second stream on the same device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.autograd import DeviceType

import awq_inference_engine  # noqa: F401  (loads both extensions: registers the ops)
from awq_kernels.quantization import pack_format_b, pack_format_c
from tests.utils import sm90a_runs

AIE = torch.ops.awq_inference_engine


@dataclass
class Call:
    """One op call: the op, its arguments, and the input that the ordering check negates first."""

    op: torch._ops.OpOverloadPacket
    args: tuple
    negated: torch.Tensor

    def run(self) -> list[torch.Tensor]:
        """Calls the op; returns every tensor it writes (its outputs and its `(a!)` arguments)."""
        result = self.op(*self.args)
        schema = self.op.default._schema
        written = [arg for arg, info in zip(self.args, schema.arguments) if info.alias_info and info.alias_info.is_write]
        return ([result] if isinstance(result, torch.Tensor) else []) + written


# A builder makes an op's inputs on `device`, the same values on every device.
Builder = Callable[[torch.device], Call]


def _rand(*shape: int, dtype: torch.dtype = torch.float16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(dtype)


def _codes(*shape: int, high: int = 16, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=gen, dtype=torch.uint8)


def _w4(n: int, k: int, group_size: int, layout: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    q, zeros = _codes(n, k), _codes(n, k // group_size, seed=2)
    scales = _rand(n, k // group_size, dtype=torch.float32, seed=3).abs() * 0.01 + 0.001
    pack = pack_format_c if layout == "v2" else pack_format_b
    return tuple(t.to(device) for t in pack(q, zeros, scales, group_size, torch.float16))


def layernorm(device: torch.device) -> Call:
    x, gamma = _rand(4, 33, 1024).to(device), _rand(1024, seed=1).to(device)
    return Call(AIE.layernorm_forward_cuda, (x, gamma, torch.empty_like(x), 1e-6), x)


def gemm_v1(device: torch.device) -> Call:
    qweight, qzeros, scales = _w4(128, 1024, 128, "v1", device)
    x = _rand(40, 1024).to(device)
    return Call(AIE.gemm_forward_cuda, (x, qweight, scales, qzeros, 128, 4), x)


def gemv_v1(device: torch.device) -> Call:
    qweight, qzeros, scales = _w4(128, 1024, 64, "v1", device)
    x = _rand(3, 1024).to(device)
    return Call(AIE.gemv_forward_cuda, (x, qweight, scales, qzeros, 64), x)


def gemm_v2(device: torch.device) -> Call:
    qweight, scales, zeros = _w4(256, 1024, 128, "v2", device)
    x = _rand(2, 20, 1024).to(device)
    return Call(AIE.gemm_forward_cuda_new, (x, qweight, scales, zeros), x)


def gemv_v2(device: torch.device) -> Call:
    qweight, scales, zeros = _w4(256, 1024, 128, "v2", device)
    x = _rand(3, 1024).to(device)
    return Call(AIE.gemv_forward_cuda_new, (x, qweight, scales, zeros, 3, 256, 1024, 128), x)


def w4a16_portable(device: torch.device) -> Call:
    qweight, scales, zeros = _w4(256, 1024, 64, "v2", device)
    x = _rand(5, 1024).to(device)
    return Call(AIE.awq_w4a16_gemm, (x, qweight, scales, zeros, "v2", 64, "portable"), x)


def rotary(device: torch.device) -> Call:
    positions = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(4)).to(device)
    query, key = _rand(2, 7, 8, 128).to(device), _rand(2, 7, 2, 128, seed=5).to(device)
    cache = _rand(64, 128, seed=6).to(device)
    return Call(AIE.rotary_embedding_neox, (positions, query, key, 128, cache), query)


def _attention(namespace: Any) -> Builder:
    def build(device: torch.device) -> Call:
        q, k, v = _rand(2, 8, 128).to(device), _rand(2, 2, 128, seed=1).to(device), _rand(2, 2, 128, seed=2).to(device)
        k_cache = _rand(2, 2, 16, 64, 8, seed=3).to(device)
        v_cache = _rand(2, 2, 64, 128, seed=4).to(device)
        args = (q, k, v, k_cache, v_cache, None, None, 40, 128, 10000.0, 1.0, True)
        return Call(namespace.single_query_attention, args, q)

    return build


def fused_rope(device: torch.device) -> Call:
    x = _rand(1, 16, 4, 128).to(device)
    freqs = _rand(16, 1, 1, 128, dtype=torch.float32, seed=1).to(device)
    return Call(AIE.fused_rope_with_pos_forward_func, (x, freqs, True), x)


def _w8a8(bias: bool) -> Builder:
    def build(device: torch.device) -> Call:
        gen = torch.Generator().manual_seed(7)
        a = torch.randint(-127, 128, (33, 256), generator=gen, dtype=torch.int8).to(device)
        w = torch.randint(-127, 128, (200, 256), generator=gen, dtype=torch.int8).to(device)
        wscales, ascales = (_rand(200, seed=1).abs() * 0.01).to(device), (_rand(33, seed=2).abs() * 0.01).to(device)
        out = torch.empty(33, 200, dtype=torch.float16, device=device)
        if bias:
            return Call(AIE.w8a8_gemm_fuse_bias_forward_cuda, (a, w, wscales, ascales, out, _rand(200, seed=3).to(device)), a)
        return Call(AIE.w8a8_gemm_forward_cuda, (a, w, wscales, ascales, out), a)

    return build


def w8a8_kernel_choice(device: torch.device) -> Call:
    """The op with a kernel choice: wgmma where it runs (here with a K split and its reduce kernel)."""
    wgmma = sm90a_runs(device)
    gen = torch.Generator().manual_seed(7)
    a = torch.randint(-127, 128, (200, 16400), generator=gen, dtype=torch.int8).to(device)
    w = torch.randint(-127, 128, (264, 16400), generator=gen, dtype=torch.int8).to(device)
    wscales, ascales = (_rand(264, seed=1).abs() * 1e-4).to(device), (_rand(200, seed=2).abs() * 1e-3).to(device)
    out = torch.empty(200, 264, dtype=torch.float16, device=device)
    bias = _rand(264, seed=3).to(device)
    return Call(AIE.awq_w8a8_gemm, (a, w, wscales, ascales, out, bias, "wgmma" if wgmma else "mma"), a)


def invoke_quant(device: torch.device) -> Call:
    x = _rand(9, 1000).to(device)
    out, scale = torch.empty(9, 1000, dtype=torch.int8, device=device), torch.empty(9, dtype=torch.float16, device=device)
    return Call(AIE.invoke_quant, (out, x, scale), x)


def rms_norm_general(device: torch.device) -> Call:
    x, weight, bias = _rand(9, 1024).to(device), _rand(1024, seed=1).to(device), _rand(1024, seed=2).to(device)
    out, scaling = torch.empty(9, 1024, dtype=torch.int8, device=device), torch.empty(9, dtype=torch.float16, device=device)
    return Call(AIE.rms_norm_general, (out, x, weight, bias, scaling, 1e-6, True), x)


def silu_and_mul(device: torch.device) -> Call:
    x = _rand(9, 2 * 1000).to(device)
    return Call(AIE.silu_and_mul, (x,), x)


def gelu_and_quant(device: torch.device) -> Call:
    x = _rand(9, 512).to(device)
    out, scale = torch.empty(9, 512, dtype=torch.int8, device=device), torch.empty(9, dtype=torch.float16, device=device)
    tmp = torch.empty(9 * 512, dtype=torch.float16, device=device)
    return Call(AIE.gelu_and_quant, (out, x, scale, tmp), x)


BUILDERS: dict[str, Builder] = {
    "layernorm_forward_cuda": layernorm,
    "gemm_forward_cuda": gemm_v1,
    "gemv_forward_cuda": gemv_v1,
    "gemm_forward_cuda_new": gemm_v2,
    "gemv_forward_cuda_new": gemv_v2,
    "awq_w4a16_gemm(portable)": w4a16_portable,
    "rotary_embedding_neox": rotary,
    "awq_inference_engine.single_query_attention": _attention(AIE),
    "ft_attention.single_query_attention": _attention(torch.ops.ft_attention),
    "fused_rope_with_pos_forward_func": fused_rope,
    "w8a8_gemm_forward_cuda": _w8a8(bias=False),
    "w8a8_gemm_fuse_bias_forward_cuda": _w8a8(bias=True),
    "awq_w8a8_gemm(wgmma where it runs)": w8a8_kernel_choice,
    "invoke_quant": invoke_quant,
    "rms_norm_general": rms_norm_general,
    "silu_and_mul": silu_and_mul,
    "gelu_and_quant": gelu_and_quant,
}

SLEEP_CYCLES = 50_000_000  # ~25 ms: long enough that an op not waiting for it reads the old input


def reference(build: Builder, device: torch.device) -> list[torch.Tensor]:
    """The op's results on `device`'s default stream, after the same negation."""
    call = build(device)
    call.negated.neg_()
    results = [t.clone() for t in call.run()]
    torch.cuda.synchronize(device)
    return results


def assert_same(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        assert a.device.type == "cuda" and torch.equal(a.cpu(), e.cpu())


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(BUILDERS))
def test_op_waits_for_its_stream(name: str) -> None:
    device = torch.device("cuda", 0)
    expected = reference(BUILDERS[name], device)
    call = BUILDERS[name](device)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        call.negated.neg_()
        results = call.run()
    side.synchronize()
    assert_same(results, expected)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (runs on the nvidia-h200-x2 kind)")
@pytest.mark.parametrize("name", list(BUILDERS))
def test_op_runs_on_its_tensors_device_and_stream(name: str) -> None:
    expected = reference(BUILDERS[name], torch.device("cuda", 0))
    target = torch.device("cuda", 1)
    call = BUILDERS[name](target)
    torch.cuda.synchronize(target)
    with torch.cuda.device(target):
        side = torch.cuda.Stream()
        previous = torch.cuda.current_stream()
        torch.cuda.set_stream(side)  # cuda:1's current stream is now `side`
    try:
        torch.cuda.set_device(0)
        allocated_on_0 = torch.cuda.memory_allocated(0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            with torch.cuda.device(target):  # queued on cuda:1's current stream, `side`
                torch.cuda._sleep(SLEEP_CYCLES)
                call.negated.neg_()
            assert torch.cuda.current_device() == 0
            results = call.run()
            side.synchronize()
        assert_same(results, expected)
        assert torch.cuda.memory_allocated(0) == allocated_on_0
        kernel_devices = {e.device_index for e in prof.events() if e.device_type == DeviceType.CUDA}
        assert kernel_devices == {1}, f"kernels ran on devices {kernel_devices}"
    finally:
        with torch.cuda.device(target):
            torch.cuda.set_stream(previous)
        torch.cuda.set_device(0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(BUILDERS))
def test_opcheck(name: str) -> None:
    """Schema, fake (shape) implementation, autograd registration and AOT dispatch agree with the op."""
    call = BUILDERS[name](torch.device("cuda", 0))
    torch.library.opcheck(call.op.default, call.args)
