"""CPU tests of the AWQ reference quantizer and the Format A/B/C packers (awq_kernels.quantization)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from awq_kernels.quantization import (
    FORMAT_A_ORDER,
    calculate_zeros_width,
    convert_a_to_b,
    convert_a_to_c,
    convert_b_to_c,
    dequantize,
    dequantize_format_c,
    pack_format_a,
    pack_format_b,
    pack_format_c,
    pack_qweight_format_c,
    padded_group_count,
    pseudo_quantize,
    resolve_group_size,
    unpack_format_a,
    unpack_format_b,
    unpack_format_c,
    unpack_qweight_format_c,
)
from tests.utils import relerr

GOLDEN = Path(__file__).parents[1] / "data" / "llm-awq-h100.pt"


@pytest.fixture(scope="module")
def golden_cases() -> dict:
    return torch.load(GOLDEN, weights_only=True)["cases"]


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw 16-bit patterns of an fp16/bf16 tensor, for bit-exact comparisons (-0.0 != 0.0)."""
    return t.contiguous().view(torch.int16)


def random_unpacked(rows: int, in_features: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random codes, zero points and positive fp32 scales (never all zero)."""
    groups = in_features // group_size
    q = torch.randint(0, 16, (rows, in_features), dtype=torch.uint8)
    zeros = torch.randint(0, 16, (rows, groups), dtype=torch.uint8)
    scales = torch.rand(rows, groups) * 0.02 + 1e-3
    return q, zeros, scales


# --------------------------------------------------------------------------------------------------
# calculate_zeros_width and group sizes


@pytest.mark.parametrize(
    ("in_features", "group_size", "expected"),
    [
        (4096, 128, 4),  # spec §2.2 examples
        (11008, 128, 11),
        (896, 128, 1),
        (4096, 64, 8),
        (4032, 64, 8),  # 63 groups -> 8 words, already even
        (576, 64, 2),  # 9 groups -> 2 words
        (512, 64, 2),  # 8 groups -> 1 word -> rounded up to 2
        (512, 32, 4),  # 16 groups -> 2 words -> 4
        (4096, 32, 16),
        (4224, 32, 20),  # 132 groups -> 17 words -> 20
        (8192, 256, 4),
        (4096, 4096, 1),
    ],
)
def test_calculate_zeros_width(in_features, group_size, expected):
    assert calculate_zeros_width(in_features, group_size) == expected
    assert padded_group_count(in_features, group_size) == 8 * expected


@pytest.mark.parametrize("group_size", [16, 48, 96, 100, 0, -1])
def test_calculate_zeros_width_unsupported_group_size(group_size):
    with pytest.raises(NotImplementedError, match="group_size"):
        calculate_zeros_width(4096, group_size)


def test_resolve_group_size():
    assert resolve_group_size(4096, -1) == 4096
    assert resolve_group_size(4096, 128) == 128
    with pytest.raises(ValueError, match="not a multiple of group_size 96"):
        resolve_group_size(4096, 96)
    with pytest.raises(ValueError, match="group_size must be positive"):
        resolve_group_size(4096, 0)


# --------------------------------------------------------------------------------------------------
# Reference quantizer


def spec_pseudo_quantize(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spec §2.1 written out per group in fp32, as an independent check."""
    rows, in_features = w.shape
    groups = w.float().reshape(-1, group_size)
    s = (groups.max(dim=1).values - groups.min(dim=1).values).clamp(min=1e-5) / 15
    z = torch.clamp(-torch.round(groups.min(dim=1).values / s), 0, 15)
    q = torch.clamp(torch.round(groups / s[:, None]) + z[:, None], 0, 15)
    return q.reshape(rows, in_features), z.reshape(rows, -1), s.reshape(rows, -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("rows", "in_features", "group_size"), [(8, 256, 128), (12, 192, 64), (5, 96, 32), (3, 80, -1)])
def test_pseudo_quantize_matches_spec(dtype, rows, in_features, group_size):
    w = (torch.randn(rows, in_features) * 0.05 + 0.01).to(dtype)
    q, zeros, scales = pseudo_quantize(w, group_size)
    g = resolve_group_size(in_features, group_size)
    assert q.dtype == torch.uint8 and q.shape == (rows, in_features)
    assert zeros.dtype == torch.uint8 and zeros.shape == (rows, in_features // g)
    assert scales.dtype == torch.float32 and scales.shape == (rows, in_features // g)
    ref_q, ref_z, ref_s = spec_pseudo_quantize(w, g)
    assert torch.equal(scales, ref_s)
    assert torch.equal(zeros.float(), ref_z)
    assert torch.equal(q.float(), ref_q)
    # Every group straddles zero here, so no clamping: the error is at most half a step.
    err = (dequantize(q, zeros, scales, g) - w.double()).abs()
    step = scales.double().repeat_interleave(g, dim=1)
    assert bool((err <= step * 0.5 + 1e-6).all())
    assert int(q.max()) == 15 and int(q.min()) == 0


def test_pseudo_quantize_constant_group():
    w = torch.full((4, 128), 0.25)
    q, zeros, scales = pseudo_quantize(w, 64)
    assert torch.allclose(scales, torch.full_like(scales, 1e-5 / 15))
    assert bool((q == 15).all())  # clamped: 0.25 / s is far beyond the code range
    assert bool((zeros == 0).all())


def test_pseudo_quantize_errors():
    with pytest.raises(ValueError, match="2-D floating"):
        pseudo_quantize(torch.randn(2, 4, 64), 64)
    with pytest.raises(ValueError, match="2-D floating"):
        pseudo_quantize(torch.randint(0, 4, (4, 64)), 64)
    with pytest.raises(ValueError, match="not a multiple of group_size 128"):
        pseudo_quantize(torch.randn(4, 192), 128)
    bad = torch.randn(4, 128)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pseudo_quantize(bad, 128)


# --------------------------------------------------------------------------------------------------
# Golden vectors of the original llm-awq code


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_pack_format_c_golden(golden_cases, group_size):
    case = golden_cases[f"pack_format_c/G{group_size}_N64_K512"]
    inputs, outputs = case["inputs"], case["outputs"]
    packed = pack_format_c(inputs["q"], inputs["zeros"], inputs["scales_fp32"], group_size, dtype=torch.float16)
    assert packed.qweight.dtype == torch.int16 and torch.equal(packed.qweight, outputs["qweight"])
    assert torch.equal(bits(packed.scales), bits(outputs["scales"]))
    assert torch.equal(bits(packed.scaled_zeros), bits(outputs["scaled_zeros"]))
    unpacked = unpack_format_c(*packed, group_size)
    assert torch.equal(unpacked.q, inputs["q"]) and torch.equal(unpacked.zeros, inputs["zeros"])
    assert torch.equal(unpacked.scales, inputs["scales_fp32"].half())


def format_c_kernel_case_names(cases: dict) -> list[str]:
    return [name for name in cases if name.startswith(("gemm_forward_cuda_new/", "gemv_forward_cuda_new/"))]


def format_b_kernel_case_names(cases: dict) -> list[str]:
    return [name for name in cases if name.startswith(("gemm_forward_cuda/", "gemv_forward_cuda/"))]


def test_format_c_golden_kernel_inputs(golden_cases):
    """The Format C tensors the original kernels were run on (fp16 and bf16) are what we pack."""
    names = format_c_kernel_case_names(golden_cases)
    assert len(names) == 16
    for name in names:
        inputs, case = golden_cases[name]["inputs"], golden_cases[name]
        dtype = inputs["x"].dtype
        packed = pack_format_c(inputs["q"], inputs["zeros"], inputs["scales_fp32"], 128, dtype=dtype)
        assert torch.equal(packed.qweight, inputs["qweight"]), name
        assert torch.equal(bits(packed.scales), bits(inputs["scales"])), name
        assert torch.equal(bits(packed.scaled_zeros), bits(inputs["scaled_zeros"])), name
        # dequantize_format_c is the math the reference was computed with.
        weight = dequantize_format_c(inputs["qweight"], inputs["scales"], inputs["scaled_zeros"], 128)
        assert relerr(inputs["x"].double() @ weight.T, case["reference"]) < 1e-6, name


def test_format_b_golden_kernel_inputs(golden_cases):
    names = format_b_kernel_case_names(golden_cases)
    assert len(names) == 8
    for name in names:
        inputs, case = golden_cases[name]["inputs"], golden_cases[name]
        group_size = inputs["group_size"]
        packed = pack_format_b(inputs["q"], inputs["zeros"], inputs["scales_fp32"], group_size, dtype=torch.float16)
        assert torch.equal(packed.qweight, inputs["qweight"]), name
        assert torch.equal(packed.qzeros, inputs["qzeros"]), name
        assert torch.equal(bits(packed.scales), bits(inputs["scales"])), name
        unpacked = unpack_format_b(inputs["qweight"], inputs["qzeros"], inputs["scales"], group_size)
        assert torch.equal(unpacked.q, inputs["q"]) and torch.equal(unpacked.zeros, inputs["zeros"]), name
        weight = dequantize(*unpacked, group_size)
        assert relerr(inputs["x"].double() @ weight.T, case["reference"]) < 1e-6, name


# --------------------------------------------------------------------------------------------------
# Layouts checked element by element against the spec's formulas (independent of the packers)


def test_format_c_qweight_matches_spec_formula():
    rows, in_features = 8, 192
    q = torch.randint(0, 16, (rows, in_features), dtype=torch.uint8)
    qweight = pack_qweight_format_c(q)
    assert qweight.shape == (rows // 4, in_features)
    words = qweight.to(torch.int32) & 0xFFFF
    for n in range(rows):
        nb, r = divmod(n, 4)
        for k in range(in_features):
            kb, rest = divmod(k, 64)
            h, o = divmod(rest, 32)
            a, rem = divmod(o, 8)
            b, c = divmod(rem, 2)
            p = 8 * b + 4 * c + a
            word = int(words[nb, 64 * kb + 16 * r + (32 * h + p) // 4])
            assert (word >> (4 * ((32 * h + p) % 4))) & 15 == int(q[n, k]), (n, k)


def test_format_c_chunk_order_matches_spec_table():
    """The K offsets stored at positions 0..31 of a 32-chunk, as tabulated in spec §2.5.1."""
    table = [0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27,
             4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31]
    offsets = torch.arange(32)
    stored = torch.zeros(32, dtype=torch.int64)
    for digit, weight in ((offsets % 16, 1), (offsets // 16, 16)):  # offsets need 5 bits: two passes
        q = torch.zeros(4, 64, dtype=torch.uint8)
        q[0, :32] = digit
        first_half = pack_qweight_format_c(q).view(torch.uint8)[0, :16]  # row r=0, h=0 of block 0
        stored += weight * torch.stack((first_half & 15, first_half >> 4), dim=-1).flatten()
    assert stored.tolist() == table


def test_format_b_matches_spec_formula():
    rows, in_features, group_size = 6, 256, 64
    q, zeros, scales = random_unpacked(rows, in_features, group_size)
    packed = pack_format_b(q, zeros, scales, group_size)
    words = packed.qweight.to(torch.int64) & 0xFFFFFFFF
    zero_words = packed.qzeros.to(torch.int64) & 0xFFFFFFFF
    for n in range(rows):
        for k in range(in_features):
            c, i = divmod(k, 8)
            assert (int(words[n, c]) >> (4 * i)) & 15 == int(q[n, k])
        for g in range(in_features // group_size):
            c, j = divmod(g, 8)
            assert (int(zero_words[n, c]) >> (4 * j)) & 15 == int(zeros[n, g])


def test_format_a_matches_spec_formula():
    rows, in_features, group_size = 16, 128, 32
    q, zeros, scales = random_unpacked(rows, in_features, group_size)
    packed = pack_format_a(q, zeros, scales, group_size)
    assert packed.qweight.shape == (in_features, rows // 8) and packed.qweight.dtype == torch.int32
    assert packed.qzeros.shape == (in_features // group_size, rows // 8)
    assert packed.scales.shape == (in_features // group_size, rows)
    words = packed.qweight.to(torch.int64) & 0xFFFFFFFF
    zero_words = packed.qzeros.to(torch.int64) & 0xFFFFFFFF
    for c in range(rows // 8):
        for i, offset in enumerate(FORMAT_A_ORDER):
            n = 8 * c + offset
            for k in range(in_features):
                assert (int(words[k, c]) >> (4 * i)) & 15 == int(q[n, k])
            for g in range(in_features // group_size):
                assert (int(zero_words[g, c]) >> (4 * i)) & 15 == int(zeros[n, g])
    assert torch.equal(packed.scales, scales.half().t())


# --------------------------------------------------------------------------------------------------
# Round trips, padding, converters


SHAPES = [(4, 64, 64), (12, 192, 64), (8, 320, 32), (20, 896, 128), (36, 1024, 32), (64, 448, 64), (4, 256, -1)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("rows", "in_features", "group_size"), SHAPES)
def test_format_c_round_trip_and_padding(dtype, rows, in_features, group_size):
    g = resolve_group_size(in_features, group_size)
    q, zeros, scales = random_unpacked(rows, in_features, g)
    packed = pack_format_c(q, zeros, scales, group_size, dtype=dtype)
    groups, padded = in_features // g, padded_group_count(in_features, g)
    assert packed.qweight.shape == (rows // 4, in_features) and packed.qweight.dtype == torch.int16
    assert packed.scales.shape == packed.scaled_zeros.shape == (padded, rows)
    assert packed.scales.dtype == packed.scaled_zeros.dtype == dtype
    assert packed.scales.is_contiguous() and packed.scaled_zeros.is_contiguous()
    assert bool((bits(packed.scales[groups:]) == 0).all()) and bool((bits(packed.scaled_zeros[groups:]) == 0).all())
    s_t = scales.to(dtype)
    assert torch.equal(packed.scales[:groups], s_t.t())
    assert torch.equal(bits(packed.scaled_zeros[:groups]), bits((-(s_t.float() * zeros.float())).to(dtype).t()))
    assert torch.equal(unpack_qweight_format_c(packed.qweight), q)
    unpacked = unpack_format_c(*packed, group_size)
    assert torch.equal(unpacked.q, q) and torch.equal(unpacked.zeros, zeros) and torch.equal(unpacked.scales, s_t)
    # The kernels' weight q*s + sz is the quantized weight up to the rounding of sz to dtype.
    error = (dequantize_format_c(*packed, group_size) - dequantize(q, zeros, s_t, g)).abs()
    scaled_zero = (s_t.double() * zeros.double()).repeat_interleave(g, dim=1)
    assert bool((error <= scaled_zero * torch.finfo(dtype).eps / 2).all())


@pytest.mark.parametrize(("rows", "in_features", "group_size"), [(3, 64, 64), (12, 192, 64), (8, 320, 32), (5, 136, -1)])
def test_format_b_round_trip_and_padding(rows, in_features, group_size):
    g = resolve_group_size(in_features, group_size)
    q, zeros, scales = random_unpacked(rows, in_features, g)
    packed = pack_format_b(q, zeros, scales, group_size, dtype=torch.bfloat16)
    groups, padded = in_features // g, padded_group_count(in_features, g)
    assert packed.qweight.shape == (rows, in_features // 8) and packed.qweight.dtype == torch.int32
    assert packed.qzeros.shape == (rows, padded // 8) and packed.qzeros.dtype == torch.int32
    assert packed.scales.shape == (rows, padded) and packed.scales.dtype == torch.bfloat16
    assert bool((bits(packed.scales[:, groups:]) == 0).all())
    zero_nibbles = torch.stack((packed.qzeros.view(torch.uint8) & 15, packed.qzeros.view(torch.uint8) >> 4), -1)
    assert bool((zero_nibbles.flatten(1)[:, groups:] == 0).all())
    unpacked = unpack_format_b(*packed, group_size)
    assert torch.equal(unpacked.q, q) and torch.equal(unpacked.zeros, zeros)
    assert torch.equal(unpacked.scales, scales.bfloat16())


@pytest.mark.parametrize(("rows", "in_features", "group_size"), [(8, 64, 64), (24, 192, 64), (16, 320, 32), (8, 256, -1)])
def test_format_a_round_trip(rows, in_features, group_size):
    g = resolve_group_size(in_features, group_size)
    q, zeros, scales = random_unpacked(rows, in_features, g)
    packed = pack_format_a(q, zeros, scales, group_size)
    unpacked = unpack_format_a(*packed)
    assert torch.equal(unpacked.q, q) and torch.equal(unpacked.zeros, zeros)
    assert torch.equal(unpacked.scales, scales.half())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("rows", "in_features", "group_size"), [(8, 64, 64), (24, 192, 64), (16, 320, 32), (40, 1024, 128)])
def test_converters(dtype, rows, in_features, group_size):
    q, zeros, scales = random_unpacked(rows, in_features, group_size)
    a = pack_format_a(q, zeros, scales, group_size, dtype=dtype)
    b = pack_format_b(q, zeros, scales, group_size, dtype=dtype)
    c = pack_format_c(q, zeros, scales, group_size, dtype=dtype)
    for got, want in ((convert_a_to_b(*a), b), (convert_a_to_c(*a), c), (convert_b_to_c(*b, group_size), c)):
        assert len(got) == len(want)
        for x, y in zip(got, want):
            assert x.dtype == y.dtype and torch.equal(bits(x) if x.is_floating_point() else x,
                                                      bits(y) if y.is_floating_point() else y)


def test_convert_to_other_dtype():
    q, zeros, scales = random_unpacked(16, 256, 128)
    a = pack_format_a(q, zeros, scales, 128, dtype=torch.float16)
    c = convert_a_to_c(*a, dtype=torch.bfloat16)
    assert c.scales.dtype == c.scaled_zeros.dtype == torch.bfloat16
    assert torch.equal(c.scales[:2], scales.half().bfloat16().t())


def test_quantize_pack_dequantize_end_to_end():
    w = torch.randn(64, 512) * 0.02
    q, zeros, scales = pseudo_quantize(w, 128)
    weight = dequantize_format_c(*pack_format_c(q, zeros, scales, 128), 128)
    assert relerr(weight, w.double()) < 0.12  # 4-bit quantization error of a Gaussian weight


# --------------------------------------------------------------------------------------------------
# Errors


def test_pack_errors():
    q, zeros, scales = random_unpacked(8, 128, 64)
    with pytest.raises(ValueError, match=r"N % 4 == 0, got N=6"):
        pack_format_c(q[:6], zeros[:6], scales[:6], 64)
    q96, zeros96, scales96 = random_unpacked(8, 96, 32)
    with pytest.raises(ValueError, match=r"K % 64 == 0, got K=96"):
        pack_format_c(q96, zeros96, scales96, 32)
    with pytest.raises(ValueError, match="not a multiple of group_size 96"):
        pack_format_c(q, zeros, scales, 96)
    q48, zeros48, scales48 = random_unpacked(8, 192, 48)
    with pytest.raises(NotImplementedError, match="group_size 48"):
        pack_format_c(q48, zeros48, scales48, 48)
    with pytest.raises(NotImplementedError, match="group_size 48"):
        pack_format_b(q48, zeros48, scales48, 48)
    with pytest.raises(ValueError, match=r"zeros must have shape \[N, K/G\] = \[8, 2\]"):
        pack_format_c(q, zeros[:, :1], scales, 64)
    with pytest.raises(ValueError, match=r"scales must be floating \[N, K/G\]"):
        pack_format_b(q, zeros, scales.t(), 64)
    too_large = q.clone()
    too_large[3, 5] = 16
    with pytest.raises(ValueError, match=r"q values must lie in \[0, 15\]"):
        pack_format_c(too_large, zeros, scales, 64)
    with pytest.raises(ValueError, match="q must be a 2-D integer tensor"):
        pack_format_c(q.float(), zeros, scales, 64)
    negative = zeros.to(torch.int32)
    negative[1, 1] = -1
    with pytest.raises(ValueError, match=r"zeros values must lie in \[0, 15\]"):
        pack_format_a(q, negative, scales, 64)
    with pytest.raises(ValueError, match=r"N % 8 == 0, got N=4"):
        pack_format_a(q[:4], zeros[:4], scales[:4], 64)
    q12, zeros12, scales12 = random_unpacked(4, 12, 12)
    with pytest.raises(ValueError, match=r"K % 8 == 0, got K=12"):
        pack_format_b(q12, zeros12, scales12, -1)
    with pytest.raises(ValueError, match="torch.float16 or torch.bfloat16"):
        pack_format_c(q, zeros, scales, 64, dtype=torch.float32)


def test_unpack_errors():
    q, zeros, scales = random_unpacked(8, 256, 64)
    c = pack_format_c(q, zeros, scales, 64)
    with pytest.raises(ValueError, match=r"scales must be floating \[Gp, N\] = \[16, 8\]"):
        unpack_format_c(c.qweight, c.scales[:4], c.scaled_zeros, 64)
    with pytest.raises(ValueError, match=r"scaled_zeros must be floating \[Gp, N\]"):
        unpack_format_c(c.qweight, c.scales, c.scaled_zeros.t(), 64)
    with pytest.raises(ValueError, match="int16"):
        unpack_format_c(c.qweight.int(), c.scales, c.scaled_zeros, 64)
    with pytest.raises(ValueError, match="not -\\(scales \\* z\\)"):
        unpack_format_c(c.qweight, c.scales, c.scaled_zeros - 8 * c.scales, 64)  # fused_mlp's shifted zeros
    b = pack_format_b(q, zeros, scales, 64)
    with pytest.raises(ValueError, match=r"qzeros must be int32 \[N, Zw\] = \[8, 2\]"):
        unpack_format_b(b.qweight, b.qzeros[:, :1], b.scales, 64)
    with pytest.raises(ValueError, match=r"scales must be floating \[N, 8\*Zw\] = \[8, 16\]"):
        unpack_format_b(b.qweight, b.qzeros, b.scales[:, :4], 64)
    with pytest.raises(ValueError, match="Format B qweight must be int32"):
        unpack_format_b(b.qweight.view(torch.int16), b.qzeros, b.scales, 64)
    a = pack_format_a(q, zeros, scales, 64)
    with pytest.raises(ValueError, match="3 groups, which does not divide K=256"):
        unpack_format_a(a.qweight, a.qzeros[:3], a.scales[:3])
    with pytest.raises(ValueError, match=r"qzeros must be int32 \[K/G, N/8\] = \[4, 1\]"):
        unpack_format_a(a.qweight, a.qzeros[:2], a.scales)
    with pytest.raises(ValueError, match="Format A scales must be floating"):
        unpack_format_a(a.qweight, a.qzeros, a.scales[:, :4])
