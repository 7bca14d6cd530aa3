"""Test phase of the awq-kernels conda package: `python test_kernels.py` (recipe/meta.yaml).

Needs only the installed package and torch. It checks, in this order:

1. On any machine (also a GPU-less builder): for each extension, that the CUDA runtime it was
   compiled with is pytorch's (torch.version.cuda, major.minor); that the archs it reports are the
   ones the recipe builds for that CUDA (awq_kernels.build_env.default_arch_list, the same rules
   recipe/build.sh used); that the device code embedded in the binary (the .nv_fatbin section)
   holds exactly those archs; that bfloat16 kernels were compiled in.
2. With a GPU visible: that the build has code the GPU can run, then every op the build implements
   on small shapes against a float64 torch reference (fresh random inputs; outputs poisoned before
   each call). An op without a CUDA kernel in this build fails (a release build has them all;
   --allow-missing-ops lists them instead, for a partial development build); an implemented op
   without a check here fails too, so none goes untested.

Exit status 0 when everything that could run passed. `--expect-archs` replaces the recipe's arch
list (for builds made with another TORCH_CUDA_ARCH_LIST).
"""

from __future__ import annotations

import argparse
import math
import re
import struct
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import awq_kernels
from awq_kernels import _extension
from awq_kernels.build_env import default_arch_list, parse_version
from awq_kernels.quantization import dequantize, dequantize_format_c, pack_format_b, pack_format_c

NAMESPACES = ("awq_inference_engine", "ft_attention")
FLOAT_TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
# Quantizer codes may differ by one where the scaled value lies within an ulp of a rounding boundary.
MAX_CODE_MISMATCH_FRACTION = 0.02


class CheckFailed(AssertionError):
    pass


# ------------------------------------------------------------------------------------------------
# Build facts (no GPU needed)
# ------------------------------------------------------------------------------------------------


def _elf_section(data: bytes, wanted: str) -> bytes | None:
    """The bytes of one section of a little-endian ELF64 file, or None if it has none."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise CheckFailed("not a little-endian ELF64 shared object")
    (section_table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, section_table + i * entry_size) for i in range(count)]
    names_offset = headers[names_index][4]
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name : end].decode() == wanted:
            return data[offset : offset + size]
    return None


FATBIN_MAGIC = 0xBA55ED50
FATBIN_KIND_PTX, FATBIN_KIND_SASS = 1, 2


def embedded_archs(library: Path) -> list[tuple[set[int], set[int]]]:
    """(SASS archs, PTX archs) of each fatbin (one per compiled .cu file) in a shared object.

    The .nv_fatbin section holds fatbins back to back (8-byte aligned). A fatbin is a 16-byte header
    (magic, version, header size, payload size) followed by entries, each with a header giving
    its kind (1 = PTX, 2 = SASS/cubin), header size, payload size and arch (e.g. 90 for sm_90).
    """
    section = _elf_section(library.read_bytes(), ".nv_fatbin")
    if section is None:
        return []
    fatbins = []
    pos = 0
    while pos + 16 <= len(section):
        magic, _version, header_size, payload_size = struct.unpack_from("<IHHQ", section, pos)
        if magic != FATBIN_MAGIC:
            pos += 8
            continue
        sass: set[int] = set()
        ptx: set[int] = set()
        entry, end = pos + header_size, pos + header_size + payload_size
        while entry + 32 <= end:
            kind, _, entry_header, entry_size, _, _, _, _, arch = struct.unpack_from("<HHIQIIHHI", section, entry)
            if entry_header == 0:
                break
            {FATBIN_KIND_SASS: sass, FATBIN_KIND_PTX: ptx}.get(kind, set()).add(arch)
            entry += entry_header + entry_size
        fatbins.append((sass, ptx))
        pos = end
    return fatbins


def _arch_number(entry: str) -> int:
    major, minor = re.match(r"(\d+)\.(\d+)", entry).groups()
    return int(major) * 10 + int(minor)


def check_build(namespace: str, expected_archs: list[str] | None) -> list[str]:
    """Build facts of one extension; returns the archs it was built for."""
    info = _extension.build_info(namespace)
    print(f"  build_info: {info}")
    torch_cuda = torch.version.cuda
    if not torch_cuda:
        raise CheckFailed(f"torch {torch.__version__} is a CPU-only build; this package needs pytorch's CUDA build")
    if parse_version(info["cuda_runtime"]) != parse_version(torch_cuda):
        raise CheckFailed(
            f"{namespace} was compiled with CUDA {info['cuda_runtime']} but torch {torch.__version__} "
            f"was built with CUDA {torch_cuda}"
        )
    print(f"  ok: compiled with CUDA {info['cuda_runtime']} = torch.version.cuda {torch_cuda}")
    if info.get("bf16") != "1":
        raise CheckFailed(f"{namespace} was compiled without bfloat16 kernels (bf16={info.get('bf16')})")
    archs = info["archs"].split("/")
    if expected_archs is None:
        expected_archs = default_arch_list(parse_version(info["cuda_runtime"]))
    if archs != expected_archs:
        raise CheckFailed(f"{namespace} was built for archs {archs}, expected {expected_archs}")
    print(f"  ok: built for {';'.join(archs)}")
    library = Path(awq_kernels.__file__).parent / f"_{namespace}.abi3.so"
    fatbins = embedded_archs(library)
    want_sass = {_arch_number(a) for a in archs}
    want_ptx = {_arch_number(a) for a in archs if a.endswith("+PTX")}
    if not fatbins:
        print(f"  note: {library.name} holds no device code yet (no .cu sources in its families)")
    for sass, ptx in fatbins:
        if sass != want_sass or ptx != want_ptx:
            raise CheckFailed(
                f"{library.name} embeds SASS {sorted(sass)} and PTX {sorted(ptx)}, "
                f"expected SASS {sorted(want_sass)} and PTX {sorted(want_ptx)}"
            )
    if fatbins:
        print(f"  ok: {len(fatbins)} fatbin(s) in {library.name}, each SASS {sorted(want_sass)} PTX {sorted(want_ptx)}")
    return archs


def check_device_covered(archs: list[str]) -> None:
    major, minor = torch.cuda.get_device_capability()
    capability = major * 10 + minor
    sass = {_arch_number(a) for a in archs}
    ptx = {_arch_number(a) for a in archs if a.endswith("+PTX")}
    # SASS runs on its own major at an equal or higher minor; PTX is JIT-compiled for any newer GPU.
    runs = any(s // 10 == major and s <= capability for s in sass) or any(p <= capability for p in ptx)
    if not runs:
        raise CheckFailed(f"{torch.cuda.get_device_name()} is sm_{capability}: none of {archs} runs on it")
    print(f"  ok: {torch.cuda.get_device_name()} (sm_{capability}) is covered by {';'.join(archs)}")


# ------------------------------------------------------------------------------------------------
# References (float64 evaluations of shared/spec/awq-interface.md) and weight packers
# ------------------------------------------------------------------------------------------------


def relerr(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    if not torch.isfinite(actual).all():
        return math.inf
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    if actual.shape != expected.shape:
        raise CheckFailed(f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    err = relerr(actual, expected)
    if not err <= FLOAT_TOLERANCE[dtype]:
        raise CheckFailed(f"{name}: relative error {err:.2e} > {FLOAT_TOLERANCE[dtype]:.0e}")


def assert_codes_close(name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    if actual.shape != expected.shape:
        raise CheckFailed(f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    diff = (actual.long() - expected.long()).abs()
    mismatched = float((diff != 0).double().mean())
    if diff.max() > 1 or mismatched > MAX_CODE_MISMATCH_FRACTION:
        raise CheckFailed(f"{name}: int8 codes differ by up to {int(diff.max())} on {mismatched:.1%} of elements")


def ref_rms_norm(x: torch.Tensor, gamma: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gamma.double()


def ref_w4a16(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ W.T in float64 for the dequantized weight W [N, K]."""
    return (x.double().reshape(-1, weight.shape[1]) @ weight.t()).reshape(*x.shape[:-1], weight.shape[0])


def ref_rotary_neox(positions: torch.Tensor, x: torch.Tensor, cos_sin_cache: torch.Tensor) -> torch.Tensor:
    """x [..., H, D] (tokens in row-major order), rotated in place by the cache rows of positions."""
    shape = x.shape
    x = x.double().reshape(-1, shape[-2], shape[-1]).clone()
    half = cos_sin_cache.shape[1] // 2
    cache = cos_sin_cache.double()[positions.reshape(-1)]
    cos, sin = cache[:, None, :half], cache[:, None, half:]
    a, b = x[..., :half].clone(), x[..., half : 2 * half].clone()
    x[..., :half], x[..., half : 2 * half] = a * cos - b * sin, b * cos + a * sin
    return x.reshape(shape)


def ref_fused_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [A0, A1, H, D]; angle of x[i0, i1, :, j] is freqs_flat[(i1*A0 + i0)*d2 + j]."""
    a0, a1, _, _ = x.shape
    d2 = freqs.shape[-1]
    half = d2 // 2
    theta = freqs.double().reshape(a1, a0, d2).transpose(0, 1)[:, :, None, :]
    x = x.double()
    rotated = torch.cat([-x[..., half:d2], x[..., :half]], dim=-1)
    out = x.clone()
    out[..., :d2] = x[..., :d2] * theta.cos() + rotated * theta.sin()
    return out


def ref_silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    x = x.double()
    return torch.nn.functional.silu(x[..., :d]) * x[..., d:]


def _rotate(v: torch.Tensor, position: torch.Tensor, dim: int, base: float, scale: float, neox: bool) -> torch.Tensor:
    """RoPE of v [B, heads, D] at a per-batch position [B], on its first dim elements."""
    v = v.clone()
    i = torch.arange(dim // 2, device=v.device, dtype=torch.float64)
    theta = (position.double() * scale)[:, None, None] / base ** (2 * i / dim)
    if neox:
        first, second = slice(0, dim // 2), slice(dim // 2, dim)
    else:
        first, second = slice(0, dim, 2), slice(1, dim, 2)
    a, b = v[..., first].clone(), v[..., second].clone()
    v[..., first], v[..., second] = a * theta.cos() - b * theta.sin(), b * theta.cos() + a * theta.sin()
    return v


def ref_single_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    length_per_sample: torch.Tensor | None,
    alibi_slopes: torch.Tensor | None,
    timestep: int,
    rotary_dim: int = 0,
    rotary_base: float = 10000.0,
    rotary_scale: float = 1.0,
    neox: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FasterTransformer decode attention (spec §3.7): (out, k_cache_after, v_cache_after)."""
    batch, heads, dim = q.shape
    kv_heads, capacity = v_cache.shape[1], v_cache.shape[2]
    chunk = k_cache.shape[-1]
    device = q.device
    steps = (
        length_per_sample.long()
        if length_per_sample is not None
        else torch.full((batch,), timestep, dtype=torch.long, device=device)
    )
    qd, kd, vd = q.double(), k.double(), v.double()
    if rotary_dim:
        qd = _rotate(qd, steps, rotary_dim, rotary_base, rotary_scale, neox)
        kd = _rotate(kd, steps, rotary_dim, rotary_base, rotary_scale, neox)
    # K cache element (b, hk, d, pos) lives at k_cache[b, hk, d // chunk, pos, d % chunk].
    keys = k_cache.double().permute(0, 1, 3, 2, 4).reshape(batch, kv_heads, capacity, dim)
    values = v_cache.double().clone()
    k_after, v_after = k_cache.clone(), v_cache.clone()
    out = torch.empty(batch, heads, dim, dtype=torch.float64, device=device)
    group = heads // kv_heads
    for b in range(batch):
        t = int(steps[b])
        slot = t % capacity
        k_after[b, :, :, slot, :] = kd[b].to(k_cache.dtype).reshape(kv_heads, dim // chunk, chunk)
        v_after[b, :, slot, :] = vd[b].to(v_cache.dtype)
        past = torch.arange(max(0, t + 1 - capacity), t, device=device)
        for h in range(heads):
            hk = h // group
            scores = torch.cat([keys[b, hk, past % capacity] @ qd[b, h], (kd[b, hk] @ qd[b, h])[None]])
            scores = scores / math.sqrt(dim)
            if alibi_slopes is not None:
                scores = scores + alibi_slopes[h].double() * (torch.cat([past, past.new_tensor([t])]) - t)
            p = torch.exp(scores - scores.max())
            p = p / (p.sum() + 1e-6)
            out[b, h] = p[:-1] @ values[b, hk, past % capacity] + p[-1] * vd[b, hk]
    return out, k_after, v_after


def ref_w8a8(
    a: torch.Tensor, w: torch.Tensor, wscales: torch.Tensor, ascales: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    out = (a.double() @ w.double().t()) * wscales.double()[None, :] * ascales.double()[:, None]
    return out if bias is None else out + bias.double()


def _quantize(values: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
    """int8 round-half-even with saturation; NaN (0/0 on all-zero rows) becomes 0."""
    return torch.nan_to_num(torch.round(values * multiplier), nan=0.0).clamp(-128, 127).to(torch.int8)


def ref_invoke_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scale): per-token symmetric int8, scale = amax / 127 in fp16."""
    x = x.double().reshape(-1, x.shape[-1])
    amax = x.abs().amax(-1, keepdim=True)
    return _quantize(x, 127 / amax), (amax / 127).squeeze(-1).half()


def ref_rms_norm_general(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scaling: torch.Tensor, eps: float, per_token: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm with bias fused with int8 quantization (spec §3.12): (codes, scaling)."""
    dtype = x.dtype
    x = x.double().reshape(-1, x.shape[-1])
    centred = x - x.mean(-1, keepdim=True)
    normed = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    if not per_token:
        return _quantize(normed.to(dtype).double(), scaling[0].double()), scaling.clone()  # an input here: unchanged
    y = normed + bias.double()
    amax = y.to(dtype).double().abs().amax(-1, keepdim=True).clamp_min(1e-6)
    return _quantize(y, 127 / amax), (amax / 127).squeeze(-1).half()


def ref_gelu_and_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tanh-GELU then per-token int8 (spec §3.14): (codes, scale, gelu values)."""
    x = x.double().reshape(-1, x.shape[-1])
    g = 0.5 * x * (1 + torch.tanh(x * 0.79788456 * (1 + 0.044715 * x * x)))
    amax = torch.where(g > 1e-4, g, -g).amax(-1, keepdim=True)
    multiplier = (127 / amax).half().double()
    return _quantize(g, multiplier), (amax / 127).squeeze(-1).half(), g


# ------------------------------------------------------------------------------------------------
# Per-op GPU checks: small shapes, every dtype the op takes
# ------------------------------------------------------------------------------------------------


def _random_quantized_weight(n: int, k: int, group_size: int, gen: torch.Generator, device: str):
    q = torch.randint(0, 16, (n, k), generator=gen, device=device, dtype=torch.uint8)
    zeros = torch.randint(0, 16, (n, k // group_size), generator=gen, device=device, dtype=torch.uint8)
    scales = torch.rand(n, k // group_size, generator=gen, device=device) * 0.02 + 0.002
    return q, zeros, scales


def _randn(
    shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, device: str, scale: float = 1.0
) -> torch.Tensor:
    return (torch.randn(shape, generator=gen, device=device) * scale).to(dtype)


def check_layernorm_forward_cuda(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float16, torch.bfloat16):
        for shape in ((2, 3, 512), (1, 5, 1000), (1, 1, 4096)):
            x, gamma = _randn(shape, dtype, gen, device), _randn(shape[-1:], dtype, gen, device)
            out = torch.full_like(x, float("nan"))
            ops.layernorm_forward_cuda(x, gamma, out, 1e-6)
            assert_close(f"{dtype} {shape}", out, ref_rms_norm(x, gamma, 1e-6), dtype)


def check_gemm_forward_cuda(ops: Any, gen: torch.Generator, device: str) -> None:
    for group_size, m, split_k in ((64, 5, 8), (128, 40, 4), (128, 1, 1)):
        n, k = 128, 1024
        q, zeros, scales = _random_quantized_weight(n, k, group_size, gen, device)
        qweight, qzeros, scales_b = pack_format_b(q, zeros, scales, group_size, torch.float16)
        x = _randn((m, k), torch.float16, gen, device)
        out = ops.gemm_forward_cuda(x, qweight, scales_b, qzeros, group_size, split_k)
        expected = ref_w4a16(x, dequantize(q, zeros, scales_b[:, : k // group_size], group_size))
        assert_close(f"G{group_size} M{m} split{split_k}", out, expected, torch.float16)


def check_gemv_forward_cuda(ops: Any, gen: torch.Generator, device: str) -> None:
    for group_size, m in ((64, 1), (128, 3)):
        n, k = 128, 1024
        q, zeros, scales = _random_quantized_weight(n, k, group_size, gen, device)
        qweight, qzeros, scales_b = pack_format_b(q, zeros, scales, group_size, torch.float16)
        x = _randn((m, k), torch.float16, gen, device)
        out = ops.gemv_forward_cuda(x, qweight, scales_b, qzeros, group_size)
        expected = ref_w4a16(x, dequantize(q, zeros, scales_b[:, : k // group_size], group_size))
        assert_close(f"G{group_size} M{m}", out, expected, torch.float16)


def _format_c_case(
    m: int, dtype: torch.dtype, gen: torch.Generator, device: str, n: int = 256, k: int = 1024
) -> tuple[torch.Tensor, ...]:
    q, zeros, scales = _random_quantized_weight(n, k, 128, gen, device)
    qweight, scales_c, scaled_zeros_c = pack_format_c(q, zeros, scales, 128, dtype)
    x = _randn((m, k), dtype, gen, device)
    return x, qweight, scales_c, scaled_zeros_c, ref_w4a16(x, dequantize_format_c(qweight, scales_c, scaled_zeros_c, 128))


def check_gemm_forward_cuda_new(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float16, torch.bfloat16):
        for m in (8, 40, 200):
            x, qweight, scales_c, scaled_zeros_c, expected = _format_c_case(m, dtype, gen, device)
            out = ops.gemm_forward_cuda_new(x, qweight, scales_c, scaled_zeros_c)
            assert_close(f"{dtype} M{m}", out, expected, dtype)


def check_gemv_forward_cuda_new(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float16, torch.bfloat16):
        for m in (1, 3, 7):
            x, qweight, scales_c, scaled_zeros_c, expected = _format_c_case(m, dtype, gen, device)
            out = ops.gemv_forward_cuda_new(x, qweight, scales_c, scaled_zeros_c, m, 256, 1024, 128)
            assert_close(f"{dtype} M{m}", out, expected, dtype)


def check_awq_w4a16_gemm(ops: Any, gen: torch.Generator, device: str) -> None:
    for kernel in ("auto", "gemv", "mma", "portable"):
        for m in (1, 5, 33):
            x, qweight, scales_c, scaled_zeros_c, expected = _format_c_case(m, torch.float16, gen, device)
            out = ops.awq_w4a16_gemm(x, qweight, scales_c, scaled_zeros_c, "v2", 128, kernel)
            assert_close(f"{kernel} M{m}", out, expected, torch.float16)


def check_rotary_embedding_neox(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for rot_dim in (128, 64):
            tokens, heads, head_size, max_position = 6, 4, 128, 64
            positions = torch.randint(0, max_position, (tokens,), generator=gen, device=device)
            query = _randn((1, tokens, heads, head_size), dtype, gen, device)
            key = _randn((1, tokens, heads, head_size), dtype, gen, device)
            inv_freq = 10000.0 ** (-torch.arange(0, rot_dim, 2, device=device).double() / rot_dim)
            angles = torch.arange(max_position, device=device).double()[:, None] * inv_freq
            cache = torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)
            expected_q = ref_rotary_neox(positions, query, cache)
            expected_k = ref_rotary_neox(positions, key, cache)
            ops.rotary_embedding_neox(positions, query, key, head_size, cache)
            assert_close(f"{dtype} rot{rot_dim} query", query, expected_q, dtype)
            assert_close(f"{dtype} rot{rot_dim} key", key, expected_k, dtype)


def check_fused_rope_with_pos_forward_func(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for transpose in (True, False):
            seq, heads, dim = 16, 4, 128
            qkv = _randn((1, seq, 3 * heads, dim), dtype, gen, device)
            x = qkv[:, :, :heads]  # tinychat passes a strided view of the fused qkv output
            f = 10000.0 ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
            t = torch.arange(seq, device=device, dtype=torch.float32)[:, None] * f
            freqs = torch.cat([t, t], dim=-1).reshape(seq, 1, 1, dim)
            out = ops.fused_rope_with_pos_forward_func(x, freqs, transpose)
            assert_close(f"{dtype} transpose={transpose}", out, ref_fused_rope(x, freqs), dtype)
            a0, a1 = x.shape[:2]
            strides = (heads * dim, a0 * heads * dim, dim, 1) if transpose else (a1 * heads * dim, heads * dim, dim, 1)
            if out.stride() != strides:
                raise CheckFailed(f"{dtype} transpose={transpose}: strides {out.stride()}, expected {strides}")


def check_silu_and_mul(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for shape in ((5, 1024), (2, 3, 96)):
            x = _randn(shape, dtype, gen, device)
            assert_close(f"{dtype} {shape}", ops.silu_and_mul(x), ref_silu_and_mul(x), dtype)


ATTENTION_CASES = (
    # dtype, batch, heads, kv_heads, head_dim, capacity, timestep, rotary_dim, neox, alibi, per-sample lengths
    (torch.float16, 2, 8, 2, 128, 64, 40, 0, True, False, False),
    (torch.float16, 2, 8, 2, 128, 64, 40, 128, True, False, True),
    (torch.float16, 2, 8, 2, 128, 64, 40, 64, False, False, False),
    (torch.float16, 2, 8, 8, 128, 64, 40, 0, True, True, False),
    (torch.float16, 1, 8, 2, 128, 64, 70, 128, True, False, False),
    (torch.bfloat16, 2, 8, 1, 64, 32, 20, 64, True, False, False),
    (torch.float32, 1, 4, 4, 128, 32, 10, 128, True, False, False),
)


def _check_single_query_attention(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype, batch, heads, kv_heads, dim, capacity, timestep, rot, neox, alibi, per_sample in ATTENTION_CASES:
        name = f"{dtype} B{batch} H{heads}/{kv_heads} D{dim} L{capacity} t{timestep} rot{rot}{'' if neox else ' gptj'}"
        chunk = 4 if dtype == torch.float32 else 8
        qkv = _randn((batch, heads + 2 * kv_heads, dim), dtype, gen, device)
        q, k, v = qkv[:, :heads], qkv[:, heads : heads + kv_heads], qkv[:, heads + kv_heads :]
        k_cache = _randn((batch, kv_heads, dim // chunk, capacity, chunk), dtype, gen, device)
        v_cache = _randn((batch, kv_heads, capacity, dim), dtype, gen, device)
        slopes = torch.rand(heads, generator=gen, device=device) * 0.5 if alibi else None
        lengths = (
            torch.randint(1, timestep + 1, (batch,), generator=gen, device=device, dtype=torch.int32)
            if per_sample
            else None
        )
        expected, k_after, v_after = ref_single_query_attention(
            q, k, v, k_cache, v_cache, lengths, slopes, timestep, rot, 10000.0, 1.0, neox
        )
        out = ops.single_query_attention(q, k, v, k_cache, v_cache, lengths, slopes, timestep, rot, 10000.0, 1.0, neox)
        assert_close(name, out, expected, dtype)
        assert_close(f"{name} k_cache", k_cache, k_after, dtype)
        assert_close(f"{name} v_cache", v_cache, v_after, dtype)


def check_w8a8_gemm_forward_cuda(ops: Any, gen: torch.Generator, device: str, fuse_bias: bool = False) -> None:
    for m in (5, 200):
        n, k = 256, 256
        a = torch.randint(-127, 128, (m, k), generator=gen, device=device, dtype=torch.int8)
        w = torch.randint(-127, 128, (n, k), generator=gen, device=device, dtype=torch.int8)
        wscales = (torch.rand(n, generator=gen, device=device) * 1e-3 + 1e-4).half()
        ascales = (torch.rand(m, generator=gen, device=device) * 1e-2 + 1e-3).half()
        out = torch.full((m, n), float("nan"), dtype=torch.float16, device=device)
        if fuse_bias:
            bias = _randn((n,), torch.float16, gen, device)
            ops.w8a8_gemm_fuse_bias_forward_cuda(a, w, wscales, ascales, out, bias)
        else:
            bias = None
            ops.w8a8_gemm_forward_cuda(a, w, wscales, ascales, out)
        assert_close(f"M{m}", out, ref_w8a8(a, w, wscales, ascales, bias), torch.float16)


def check_w8a8_gemm_fuse_bias_forward_cuda(ops: Any, gen: torch.Generator, device: str) -> None:
    check_w8a8_gemm_forward_cuda(ops, gen, device, fuse_bias=True)


def check_awq_w8a8_gemm(ops: Any, gen: torch.Generator, device: str) -> None:
    kernels = ["auto", "mma"]
    if "sm90a=1" in ops.build_info() and torch.cuda.get_device_capability(device) == (9, 0):
        kernels.append("wgmma")
    m, n, k = 200, 264, 320
    a = torch.randint(-127, 128, (m, k), generator=gen, device=device, dtype=torch.int8)
    w = torch.randint(-127, 128, (n, k), generator=gen, device=device, dtype=torch.int8)
    wscales = (torch.rand(n, generator=gen, device=device) * 1e-3 + 1e-4).half()
    ascales = (torch.rand(m, generator=gen, device=device) * 1e-2 + 1e-3).half()
    for kernel in kernels:
        for bias in (None, _randn((n,), torch.float16, gen, device)):
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device=device)
            ops.awq_w8a8_gemm(a, w, wscales, ascales, out, bias, kernel)
            assert_close(f"{kernel} bias={bias is not None}", out, ref_w8a8(a, w, wscales, ascales, bias),
                         torch.float16)


def check_invoke_quant(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = _randn((7, 512), dtype, gen, device, scale=3.0)
        x[3] = 0  # an all-zero row: scale 0, codes 0
        out = torch.full(x.shape, 77, dtype=torch.int8, device=device)
        scale = torch.full((7,), float("nan"), dtype=torch.float16, device=device)
        ops.invoke_quant(out, x, scale)
        codes, expected_scale = ref_invoke_quant(x)
        assert_codes_close(f"{dtype} codes", out, codes)
        assert_close(f"{dtype} scale", scale, expected_scale, torch.float16)


def check_rms_norm_general(ops: Any, gen: torch.Generator, device: str) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for per_token in (True, False):
            x = _randn((7, 1024), dtype, gen, device, scale=2.0) + 0.5
            weight, bias = _randn((1024,), dtype, gen, device), _randn((1024,), dtype, gen, device, scale=0.1)
            out = torch.full(x.shape, 77, dtype=torch.int8, device=device)
            if per_token:
                scaling = torch.full((7,), float("nan"), dtype=torch.float16, device=device)
            else:
                scaling = torch.tensor([20.0], dtype=torch.float16, device=device)
            codes, expected_scaling = ref_rms_norm_general(x, weight, bias, scaling, 1e-6, per_token)
            ops.rms_norm_general(out, x, weight, bias, scaling, 1e-6, per_token)
            assert_codes_close(f"{dtype} per_token={per_token} codes", out, codes)
            assert_close(f"{dtype} per_token={per_token} scaling", scaling, expected_scaling, torch.float16)


def check_gelu_and_quant(ops: Any, gen: torch.Generator, device: str) -> None:
    x = _randn((6, 512), torch.float16, gen, device, scale=2.0)
    out = torch.full(x.shape, 77, dtype=torch.int8, device=device)
    scale = torch.full((6,), float("nan"), dtype=torch.float16, device=device)
    tmp = torch.full((x.numel(),), float("nan"), dtype=torch.float16, device=device)
    ops.gelu_and_quant(out, x, scale, tmp)
    codes, expected_scale, gelu = ref_gelu_and_quant(x)
    assert_codes_close("codes", out, codes)
    assert_close("scale", scale, expected_scale, torch.float16)
    assert_close("tmp (gelu values)", tmp.view(x.shape), gelu, torch.float16)


CHECKS: dict[str, Callable] = {
    "awq_inference_engine::layernorm_forward_cuda": check_layernorm_forward_cuda,
    "awq_inference_engine::gemm_forward_cuda": check_gemm_forward_cuda,
    "awq_inference_engine::gemv_forward_cuda": check_gemv_forward_cuda,
    "awq_inference_engine::gemm_forward_cuda_new": check_gemm_forward_cuda_new,
    "awq_inference_engine::gemv_forward_cuda_new": check_gemv_forward_cuda_new,
    "awq_inference_engine::awq_w4a16_gemm": check_awq_w4a16_gemm,
    "awq_inference_engine::rotary_embedding_neox": check_rotary_embedding_neox,
    "awq_inference_engine::fused_rope_with_pos_forward_func": check_fused_rope_with_pos_forward_func,
    "awq_inference_engine::silu_and_mul": check_silu_and_mul,
    "awq_inference_engine::single_query_attention": _check_single_query_attention,
    "awq_inference_engine::w8a8_gemm_forward_cuda": check_w8a8_gemm_forward_cuda,
    "awq_inference_engine::w8a8_gemm_fuse_bias_forward_cuda": check_w8a8_gemm_fuse_bias_forward_cuda,
    "awq_inference_engine::awq_w8a8_gemm": check_awq_w8a8_gemm,
    "awq_inference_engine::invoke_quant": check_invoke_quant,
    "awq_inference_engine::rms_norm_general": check_rms_norm_general,
    "awq_inference_engine::gelu_and_quant": check_gelu_and_quant,
    "ft_attention::single_query_attention": _check_single_query_attention,
}


def ops_of(namespace: str) -> list[str]:
    """Qualified names of the kernel ops the extension defines (build_info is not a kernel)."""
    _extension.load(namespace)
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith(f"{namespace}::")]
    return sorted(n for n in names if n != f"{namespace}::build_info")


def implemented(op: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")


def run_gpu_checks(ops_by_namespace: dict[str, list[str]]) -> tuple[list[str], list[str], list[str]]:
    """(passed, failed, not implemented) op names."""
    passed, failed, missing = [], [], []
    gen = torch.Generator(device="cuda")
    for namespace, ops in ops_by_namespace.items():
        handle = _extension.load(namespace)
        for op in ops:
            if not implemented(op):
                missing.append(op)
                continue
            check = CHECKS.get(op)
            if check is None:
                print(f"  FAIL {op}: implemented in this build, but test_kernels.py has no check for it")
                failed.append(op)
                continue
            gen.manual_seed(1234)
            try:
                check(handle, gen, "cuda")
                torch.cuda.synchronize()
            except NotImplementedError as exc:  # a kernel missing for one of its dtypes or cases
                print(f"  FAIL {op}: {str(exc).splitlines()[0]}")
                failed.append(op)
            except Exception as exc:  # noqa: BLE001 - report every op, then fail at the end
                detail = str(exc) if isinstance(exc, CheckFailed) else traceback.format_exc(limit=3)
                print(f"  FAIL {op}: {detail}")
                failed.append(op)
            else:
                print(f"  ok   {op}")
                passed.append(op)
    return passed, failed, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-archs", help="';'-separated archs the build must have (default: the recipe's)")
    parser.add_argument("--allow-missing-ops", action="store_true",
                        help="list the ops without a CUDA kernel instead of failing (partial development builds)")
    args = parser.parse_args(argv)
    expected_archs = args.expect_archs.split(";") if args.expect_archs else None
    print(f"awq-kernels {awq_kernels.__version__} from {Path(awq_kernels.__file__).parent}")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    failures = 0
    archs: list[str] = []
    for namespace in NAMESPACES:
        print(f"[build] {namespace}")
        try:
            archs = check_build(namespace, expected_archs)
        except CheckFailed as exc:
            print(f"  FAIL: {exc}")
            failures += 1
    ops_by_namespace = {ns: ops_of(ns) for ns in NAMESPACES}
    not_implemented = [op for ops in ops_by_namespace.values() for op in ops if not implemented(op)]
    implemented_ops = [op for ops in ops_by_namespace.values() for op in ops if implemented(op)]
    print(f"[ops] implemented in this build: {', '.join(implemented_ops) or 'none'}")
    if not_implemented:
        print(f"[ops] NOT implemented in this build (calls raise NotImplementedError): {', '.join(not_implemented)}")
        if not args.allow_missing_ops:
            print("  FAIL: a release build has a CUDA kernel for every op (--allow-missing-ops for a partial build)")
            failures += 1
    if not torch.cuda.is_available():
        print(
            "[gpu] SKIPPED the GPU kernel checks: no CUDA device is visible (torch.cuda.is_available() is "
            "False). Only the build facts above were checked."
        )
    else:
        print("[gpu] kernel checks")
        try:
            check_device_covered(archs)
        except CheckFailed as exc:
            print(f"  FAIL: {exc}")
            failures += 1
        else:
            passed, failed, _ = run_gpu_checks(ops_by_namespace)
            failures += len(failed)
            print(f"[gpu] {len(passed)} op(s) passed, {len(failed)} failed, {len(not_implemented)} not implemented")
    print("RESULT: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
