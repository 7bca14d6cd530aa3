"""AWQ 4-bit weight quantization: the reference quantizer, and the three packed layouts.

Unpacked form, shared by every function here (shared/spec/awq-interface.md §2.1):

* ``q``      uint8 ``[N, K]``: 4-bit codes in ``[0, 15]`` of the weight ``W[N, K]`` of an ``nn.Linear``;
* ``zeros``  uint8 ``[N, K/G]``: integer zero point per row and group of ``G`` consecutive K;
* ``scales`` ``[N, K/G]``: floating scale per row and group;
* dequantized weight ``w[n, k] = scales[n, k // G] * (q[n, k] - zeros[n, k // G])``.

Packed layouts (each documented in the spec, summarized at its pack function):

* Format A, AutoAWQ "GEMM": :func:`pack_format_a` / :func:`unpack_format_a`;
* Format B, TinyChat v1 (``gemm_forward_cuda``, ``gemv_forward_cuda``): :func:`pack_format_b` /
  :func:`unpack_format_b`;
* Format C, TinyChat v2 (``*_new`` kernels, llm-awq ``WQLinear`` at HEAD): :func:`pack_format_c` /
  :func:`unpack_format_c`.

All packing works on whole tensors (no Python loops over rows or columns), on the tensors' device,
so a 28672 x 8192 layer packs in about a second. Packed integer words are assembled as little-endian
bytes and reinterpreted with ``Tensor.view(dtype)``, like the kernels read them.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

MAX_CODE = 15
"""Largest 4-bit code; codes and zero points are unsigned, in [0, MAX_CODE]."""

FORMAT_A_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""Format A nibble order: nibble i of a packed word holds output channel 8c + FORMAT_A_ORDER[i]."""

FORMAT_C_INTERLEAVE = 4
"""Format C packs 4 consecutive output rows into one int16 row."""

FORMAT_C_KSTRIDE = 64
"""Format C interleaves the 4 rows in blocks of 64 K values."""

_FLOAT_IO_DTYPES = (torch.float16, torch.bfloat16)


class QuantizedWeight(NamedTuple):
    """Unpacked 4-bit weight: ``w = scales * (q - zeros)`` per group (see the module docstring)."""

    q: torch.Tensor
    zeros: torch.Tensor
    scales: torch.Tensor


class FormatA(NamedTuple):
    """AutoAWQ "GEMM" tensors: int32 ``qweight [K, N/8]``, int32 ``qzeros [K/G, N/8]``, ``scales [K/G, N]``."""

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor


class FormatB(NamedTuple):
    """TinyChat v1 tensors: int32 ``qweight [N, K/8]``, int32 ``qzeros [N, Zw]``, ``scales [N, 8*Zw]``."""

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor


class FormatC(NamedTuple):
    """TinyChat v2 tensors: int16 ``qweight [N/4, K]``, ``scales [Gp, N]``, ``scaled_zeros [Gp, N]``."""

    qweight: torch.Tensor
    scales: torch.Tensor
    scaled_zeros: torch.Tensor


# --------------------------------------------------------------------------------------------------
# Group sizes and padding


def resolve_group_size(in_features: int, group_size: int) -> int:
    """The group size G in K units: ``-1`` means one group per row (``G = K``); K must be a multiple of G."""
    if group_size == -1:
        group_size = in_features
    if group_size <= 0:
        raise ValueError(f"group_size must be positive or -1 (one group per row), got {group_size}")
    if in_features % group_size != 0:
        raise ValueError(f"in_features K={in_features} is not a multiple of group_size {group_size}")
    return group_size


def calculate_zeros_width(in_features: int, group_size: int = 128, pack_num: int = 8) -> int:
    """llm-awq's ``calculate_zeros_width`` (spec §2.2): int32 words per row for the K/G zero points.

    ``ceil(ceil((K // G) / pack_num) / mult) * mult`` with mult = 1 for G >= 128, 2 for G = 64 and 4
    for G = 32. Any other group size raises NotImplementedError, as in llm-awq (resolve ``-1`` with
    :func:`resolve_group_size` first). The padded group count of Formats B and C is ``8 * Zw``.
    """
    if group_size >= 128:
        multiplier = 1
    elif group_size == 64:
        multiplier = 2
    elif group_size == 32:
        multiplier = 4
    else:
        raise NotImplementedError(
            f"calculate_zeros_width: group_size {group_size} is not supported (32, 64 or >= 128)"
        )
    words = -(-(in_features // group_size) // pack_num)
    return -(-words // multiplier) * multiplier


def padded_group_count(in_features: int, group_size: int) -> int:
    """``Gp = 8 * calculate_zeros_width(K, G)``: rows of the Format C scales (columns in Format B)."""
    return 8 * calculate_zeros_width(in_features, group_size)


# --------------------------------------------------------------------------------------------------
# Reference quantizer and dequantizer


def pseudo_quantize(weight: torch.Tensor, group_size: int = 128) -> QuantizedWeight:
    """AWQ's asymmetric 4-bit quantizer (``pseudo_quantize_tensor``, spec §2.1), computed in fp32.

    Per row and group of ``G`` consecutive input channels: ``s = max(max - min, 1e-5) / 15``,
    ``z = clamp(-round(min / s), 0, 15)``, ``q = clamp(round(w / s) + z, 0, 15)``.

    Args:
        weight: ``[N, K]`` floating weight of an ``nn.Linear`` (any float dtype; finite).
        group_size: G; ``-1`` means ``G = K``.

    Returns:
        ``(q, zeros, scales)``: uint8 ``[N, K]``, uint8 ``[N, K/G]``, float32 ``[N, K/G]``.
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"pseudo_quantize: weight must be a 2-D floating tensor [N, K], got {_describe(weight)}")
    rows, in_features = weight.shape
    group_size = resolve_group_size(in_features, group_size)
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("pseudo_quantize: weight contains NaN or infinity")
    groups = weight.reshape(rows, in_features // group_size, group_size).float()
    max_val = groups.amax(dim=2, keepdim=True)
    min_val = groups.amin(dim=2, keepdim=True)
    scales = (max_val - min_val).clamp_(min=1e-5).div_(MAX_CODE)
    zeros = torch.round(-min_val / scales).clamp_(0, MAX_CODE)
    q = torch.div(groups, scales).round_().add_(zeros).clamp_(0, MAX_CODE)
    return QuantizedWeight(
        q=q.to(torch.uint8).reshape(rows, in_features),
        zeros=zeros.squeeze(2).to(torch.uint8),
        scales=scales.squeeze(2),
    )


def dequantize(
    q: torch.Tensor,
    zeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Reference dequantization ``scales * (q - zeros)`` in ``dtype``; returns ``[N, K]``."""
    rows, in_features = _check_unpacked(q, zeros, scales, group_size, "dequantize")
    group_size = resolve_group_size(in_features, group_size)
    codes = q.to(dtype).reshape(rows, in_features // group_size, group_size)
    weight = (codes - zeros.to(dtype).unsqueeze(2)) * scales.to(dtype).unsqueeze(2)
    return weight.reshape(rows, in_features)


def dequantize_format_c(
    qweight: torch.Tensor, scales: torch.Tensor, scaled_zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """The weight the Format C kernels multiply by, ``q * scales + scaled_zeros``, in float64 ``[N, K]``.

    This uses the stored (dtype T) scales and scaled zeros exactly as the kernels read them, so it is
    the reference for kernel and ``WQLinear`` tests.
    """
    q = unpack_qweight_format_c(qweight)
    rows, in_features = q.shape
    group_size = resolve_group_size(in_features, group_size)
    groups = in_features // group_size
    _check_transposed_scales(scales, scaled_zeros, rows, in_features, group_size, "dequantize_format_c")
    s = scales[:groups].t().double().unsqueeze(2)
    sz = scaled_zeros[:groups].t().double().unsqueeze(2)
    return (q.double().reshape(rows, groups, group_size) * s + sz).reshape(rows, in_features)


# --------------------------------------------------------------------------------------------------
# Nibble and byte helpers


def _nibbles_to_bytes(nibbles: torch.Tensor) -> torch.Tensor:
    """Pairs of 4-bit values along the last dim -> bytes (element 2j in the low nibble of byte j)."""
    pairs = nibbles.reshape(*nibbles.shape[:-1], nibbles.shape[-1] // 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def _bytes_to_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_nibbles_to_bytes`: uint8 ``[..., m]`` -> uint8 ``[..., 2m]``."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


def _pack_words(nibbles: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A stream of nibbles along the last dim -> little-endian words of ``dtype`` (int16 or int32)."""
    return _nibbles_to_bytes(nibbles.to(torch.uint8)).contiguous().view(dtype)


def _unpack_words(words: torch.Tensor) -> torch.Tensor:
    """Words along the last dim -> their nibble stream (uint8), least significant nibble first."""
    return _bytes_to_nibbles(words.contiguous().view(torch.uint8))


# --------------------------------------------------------------------------------------------------
# Format C: TinyChat v2


def pack_qweight_format_c(q: torch.Tensor) -> torch.Tensor:
    """Pack codes ``q [N, K]`` into the Format C int16 ``qweight [N/4, K]`` (spec §2.5.1).

    Layout: with ``n = 4*nb + r`` and ``k = 64*kb + 32*h + (8*a + 2*b + c)``, packed row ``nb`` is a
    little-endian nibble stream in which ``q[n, k]`` sits at nibble ``256*kb + 64*r + 32*h + 8*b + 4*c + a``.
    So each 64-wide K block holds the four rows one after the other, and each 32-code half is
    permuted so that one 32-bit word decodes (nibble order 0,4,1,5,2,6,3,7) to the K offsets of an
    ``mma.m16n8k16`` B fragment.
    """
    _check_codes(q, "q", "pack_qweight_format_c")
    rows, in_features = q.shape
    if rows % FORMAT_C_INTERLEAVE != 0:
        raise ValueError(f"Format C needs out_features N % {FORMAT_C_INTERLEAVE} == 0, got N={rows}")
    if in_features % FORMAT_C_KSTRIDE != 0:
        raise ValueError(f"Format C needs in_features K % {FORMAT_C_KSTRIDE} == 0, got K={in_features}")
    # dims: nb, r, kb, h, a, b, c  ->  stream order nb, kb, r, h, b, c, a
    split = q.reshape(rows // 4, 4, in_features // 64, 2, 4, 4, 2)
    stream = split.permute(0, 2, 1, 3, 5, 6, 4).reshape(rows // 4, 4 * in_features)
    return _pack_words(stream, torch.int16)


def unpack_qweight_format_c(qweight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_qweight_format_c`: int16 ``[N/4, K]`` -> uint8 codes ``[N, K]``."""
    if qweight.dim() != 2 or qweight.dtype != torch.int16:
        raise ValueError(f"Format C qweight must be int16 [N/4, K], got {_describe(qweight)}")
    packed_rows, in_features = qweight.shape
    if in_features % FORMAT_C_KSTRIDE != 0:
        raise ValueError(f"Format C needs in_features K % {FORMAT_C_KSTRIDE} == 0, got K={in_features}")
    stream = _unpack_words(qweight)
    # stream dims: nb, kb, r, h, b, c, a  ->  nb, r, kb, h, a, b, c
    split = stream.reshape(packed_rows, in_features // 64, 4, 2, 4, 2, 4)
    return split.permute(0, 2, 1, 3, 6, 4, 5).reshape(4 * packed_rows, in_features)


def pack_format_c(
    q: torch.Tensor,
    zeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: Optional[torch.dtype] = None,
) -> FormatC:
    """Build llm-awq's v2 tensors (``WQLinear`` buffers at HEAD) from the unpacked weight.

    * ``qweight``: int16 ``[N/4, K]`` (:func:`pack_qweight_format_c`);
    * ``scales``: ``[Gp, N]`` in ``dtype``, ``scales[g, n] = s[n, g]``, rows ``g >= K/G`` zero;
    * ``scaled_zeros``: ``[Gp, N]``, ``-(s[n, g] * z[n, g])`` with ``s`` rounded to ``dtype`` first and
      the product in fp32, then cast to ``dtype`` (as llm-awq); padding rows zero.

    ``Gp = 8 * calculate_zeros_width(K, G)``; G is 32, 64 or >= 128 (the kernels take 32, 64, 128).
    ``dtype`` (fp16 or bf16) defaults to the dtype of ``scales`` when that is fp16 or bf16, else fp16.
    """
    rows, in_features = _check_unpacked(q, zeros, scales, group_size, "pack_format_c")
    group_size = resolve_group_size(in_features, group_size)
    dtype = _io_dtype(scales, dtype)
    qweight = pack_qweight_format_c(q)
    padded = padded_group_count(in_features, group_size)
    scales_t = scales.to(dtype)
    scaled_zeros = -(scales_t.float() * zeros.float())
    return FormatC(
        qweight=qweight,
        scales=_pad_columns(scales_t, padded).t().contiguous(),
        scaled_zeros=_pad_columns(scaled_zeros.to(dtype), padded).t().contiguous(),
    )


def unpack_format_c(
    qweight: torch.Tensor, scales: torch.Tensor, scaled_zeros: torch.Tensor, group_size: int
) -> QuantizedWeight:
    """Inverse of :func:`pack_format_c`: ``(q, zeros, scales)`` with scales ``[N, K/G]`` in the stored dtype.

    The integer zero point is recovered as ``round(-scaled_zero / scale)``; a Format C tensor whose
    scaled zeros are not ``-(s * z)`` for an integer ``z`` in [0, 15] (within the dtype's rounding)
    raises ValueError rather than returning a wrong zero point.
    """
    q = unpack_qweight_format_c(qweight)
    rows, in_features = q.shape
    group_size = resolve_group_size(in_features, group_size)
    groups = in_features // group_size
    _check_transposed_scales(scales, scaled_zeros, rows, in_features, group_size, "unpack_format_c")
    s = scales[:groups].t().contiguous()
    ratio = -scaled_zeros[:groups].t().float() / s.float()
    ratio = torch.where(s == 0, torch.zeros_like(ratio), ratio)
    zeros = ratio.round()
    if not bool(((ratio - zeros).abs() <= 0.25).all() and (zeros >= 0).all() and (zeros <= MAX_CODE).all()):
        raise ValueError(
            "unpack_format_c: scaled_zeros are not -(scales * z) for integer zero points z in [0, 15]"
        )
    return QuantizedWeight(q=q, zeros=zeros.to(torch.uint8), scales=s)


# --------------------------------------------------------------------------------------------------
# Format B: TinyChat v1


def pack_format_b(
    q: torch.Tensor,
    zeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: Optional[torch.dtype] = None,
) -> FormatB:
    """Build TinyChat v1 tensors (spec §2.4) from the unpacked weight.

    * ``qweight``: int32 ``[N, K/8]``, bits ``4i..4i+3`` of ``qweight[n, c]`` = ``q[n, 8c + i]``;
    * ``qzeros``: int32 ``[N, Zw]``, the zero points packed the same way, groups ``>= K/G`` zero;
    * ``scales``: ``[N, 8*Zw]`` in ``dtype``, columns ``>= K/G`` zero.

    ``dtype`` defaults as in :func:`pack_format_c`.
    """
    rows, in_features = _check_unpacked(q, zeros, scales, group_size, "pack_format_b")
    group_size = resolve_group_size(in_features, group_size)
    if in_features % 8 != 0:
        raise ValueError(f"Format B needs in_features K % 8 == 0, got K={in_features}")
    padded = padded_group_count(in_features, group_size)
    return FormatB(
        qweight=_pack_words(q, torch.int32),
        qzeros=_pack_words(_pad_columns(zeros, padded), torch.int32),
        scales=_pad_columns(scales.to(_io_dtype(scales, dtype)), padded),
    )


def unpack_format_b(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> QuantizedWeight:
    """Inverse of :func:`pack_format_b`: ``(q, zeros, scales)`` with the padding dropped."""
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise ValueError(f"Format B qweight must be int32 [N, K/8], got {_describe(qweight)}")
    rows, in_features = qweight.shape[0], 8 * qweight.shape[1]
    group_size = resolve_group_size(in_features, group_size)
    groups, padded = in_features // group_size, padded_group_count(in_features, group_size)
    if qzeros.dtype != torch.int32 or tuple(qzeros.shape) != (rows, padded // 8):
        raise ValueError(
            f"Format B qzeros must be int32 [N, Zw] = [{rows}, {padded // 8}] for K={in_features}, "
            f"G={group_size}; got {_describe(qzeros)}"
        )
    if not scales.is_floating_point() or tuple(scales.shape) != (rows, padded):
        raise ValueError(
            f"Format B scales must be floating [N, 8*Zw] = [{rows}, {padded}] for K={in_features}, "
            f"G={group_size}; got {_describe(scales)}"
        )
    return QuantizedWeight(
        q=_unpack_words(qweight),
        zeros=_unpack_words(qzeros)[:, :groups].contiguous(),
        scales=scales[:, :groups].contiguous(),
    )


# --------------------------------------------------------------------------------------------------
# Format A: AutoAWQ "GEMM"


def pack_format_a(
    q: torch.Tensor,
    zeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: Optional[torch.dtype] = None,
) -> FormatA:
    """Build AutoAWQ "GEMM" tensors (spec §2.3) from the unpacked weight.

    * ``qweight``: int32 ``[K, N/8]``, bits ``4i..4i+3`` of ``qweight[k, c]`` = ``q[8c + ORDER[i], k]``;
    * ``qzeros``: int32 ``[K/G, N/8]``, bits ``4i..4i+3`` of ``qzeros[g, c]`` = ``z[8c + ORDER[i], g]``;
    * ``scales``: ``[K/G, N]`` in ``dtype`` (``scales[g, n] = s[n, g]``);

    with ``ORDER = FORMAT_A_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)``. ``dtype`` defaults as in :func:`pack_format_c`.
    """
    rows, in_features = _check_unpacked(q, zeros, scales, group_size, "pack_format_a")
    if rows % 8 != 0:
        raise ValueError(f"Format A needs out_features N % 8 == 0, got N={rows}")
    order = torch.tensor(FORMAT_A_ORDER, device=q.device)

    def pack_along_n(codes: torch.Tensor) -> torch.Tensor:
        transposed = codes.t().reshape(codes.shape[1], rows // 8, 8)
        return _pack_words(transposed.index_select(2, order).reshape(codes.shape[1], rows), torch.int32)

    return FormatA(
        qweight=pack_along_n(q),
        qzeros=pack_along_n(zeros),
        scales=scales.to(_io_dtype(scales, dtype)).t().contiguous(),
    )


def unpack_format_a(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> QuantizedWeight:
    """Inverse of :func:`pack_format_a`: ``(q, zeros, scales)``; G is ``K / scales.shape[0]``."""
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise ValueError(f"Format A qweight must be int32 [K, N/8], got {_describe(qweight)}")
    in_features, rows = qweight.shape[0], 8 * qweight.shape[1]
    if scales.dim() != 2 or not scales.is_floating_point() or scales.shape[1] != rows:
        raise ValueError(f"Format A scales must be floating [K/G, N] with N={rows}, got {_describe(scales)}")
    groups = scales.shape[0]
    if groups == 0 or in_features % groups != 0:
        raise ValueError(f"Format A scales have {groups} groups, which does not divide K={in_features}")
    if qzeros.dtype != torch.int32 or tuple(qzeros.shape) != (groups, rows // 8):
        raise ValueError(f"Format A qzeros must be int32 [K/G, N/8] = [{groups}, {rows // 8}], got {_describe(qzeros)}")
    inverse = torch.tensor(sorted(range(8), key=FORMAT_A_ORDER.__getitem__), device=qweight.device)

    def unpack_along_n(words: torch.Tensor) -> torch.Tensor:
        stream = _unpack_words(words).reshape(words.shape[0], rows // 8, 8)
        return stream.index_select(2, inverse).reshape(words.shape[0], rows).t().contiguous()

    return QuantizedWeight(q=unpack_along_n(qweight), zeros=unpack_along_n(qzeros), scales=scales.t().contiguous())


def format_a_group_size(qweight: torch.Tensor, scales: torch.Tensor) -> int:
    """The group size of Format A tensors: ``K / scales.shape[0]`` (checked to divide)."""
    in_features, groups = qweight.shape[0], scales.shape[0]
    if groups == 0 or in_features % groups != 0:
        raise ValueError(f"Format A scales have {groups} groups, which does not divide K={in_features}")
    return in_features // groups


# --------------------------------------------------------------------------------------------------
# Converters


def convert_a_to_b(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> FormatB:
    """AutoAWQ (Format A) -> TinyChat v1 (Format B): a re-layout; scales keep their dtype."""
    unpacked = unpack_format_a(qweight, qzeros, scales)
    return pack_format_b(*unpacked, format_a_group_size(qweight, scales), dtype=scales.dtype)


def convert_a_to_c(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, dtype: Optional[torch.dtype] = None
) -> FormatC:
    """AutoAWQ (Format A) -> TinyChat v2 (Format C); ``dtype`` defaults to the scales' dtype."""
    unpacked = unpack_format_a(qweight, qzeros, scales)
    return pack_format_c(*unpacked, format_a_group_size(qweight, scales), dtype=dtype or scales.dtype)


def convert_b_to_c(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: Optional[torch.dtype] = None,
) -> FormatC:
    """TinyChat v1 (Format B) -> v2 (Format C), as llm-awq's ``offline-weight-repacker.py``.

    Codes are repacked, scales transposed, ``scaled_zeros = -(scales * zeros)`` (fp32 product of the
    stored scales, cast to ``dtype``), and ``qzeros`` dropped. ``dtype`` defaults to the scales' dtype.
    """
    unpacked = unpack_format_b(qweight, qzeros, scales, group_size)
    return pack_format_c(*unpacked, group_size, dtype=dtype or scales.dtype)


# --------------------------------------------------------------------------------------------------
# Validation helpers


def _describe(t: torch.Tensor) -> str:
    return f"{t.dtype} tensor of shape {list(t.shape)}"


def _io_dtype(scales: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.dtype:
    if dtype is None:
        dtype = scales.dtype if scales.dtype in _FLOAT_IO_DTYPES else torch.float16
    if dtype not in _FLOAT_IO_DTYPES:
        raise ValueError(f"the packed scales dtype must be torch.float16 or torch.bfloat16, got {dtype}")
    return dtype


def _check_codes(codes: torch.Tensor, name: str, fn: str) -> None:
    if codes.dim() != 2 or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"{fn}: {name} must be a 2-D integer tensor, got {_describe(codes)}")
    if codes.numel() and bool((codes.min() < 0) | (codes.max() > MAX_CODE)):
        raise ValueError(f"{fn}: {name} values must lie in [0, {MAX_CODE}]")


def _check_unpacked(
    q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group_size: int, fn: str
) -> tuple[int, int]:
    """Check ``(q [N, K], zeros [N, K/G], scales [N, K/G])``; returns ``(N, K)``."""
    _check_codes(q, "q", fn)
    _check_codes(zeros, "zeros", fn)
    rows, in_features = q.shape
    groups = in_features // resolve_group_size(in_features, group_size)
    if tuple(zeros.shape) != (rows, groups):
        raise ValueError(f"{fn}: zeros must have shape [N, K/G] = [{rows}, {groups}], got {list(zeros.shape)}")
    if not scales.is_floating_point() or tuple(scales.shape) != (rows, groups):
        raise ValueError(f"{fn}: scales must be floating [N, K/G] = [{rows}, {groups}], got {_describe(scales)}")
    return rows, in_features


def _check_transposed_scales(
    scales: torch.Tensor, scaled_zeros: torch.Tensor, rows: int, in_features: int, group_size: int, fn: str
) -> None:
    padded = padded_group_count(in_features, group_size)
    for name, t in (("scales", scales), ("scaled_zeros", scaled_zeros)):
        if not t.is_floating_point() or tuple(t.shape) != (padded, rows):
            raise ValueError(
                f"{fn}: {name} must be floating [Gp, N] = [{padded}, {rows}] for K={in_features}, "
                f"G={group_size}; got {_describe(t)}"
            )


def _pad_columns(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t [N, g]`` zero-padded on the right to ``[N, width]``."""
    padded = t.new_zeros(t.shape[0], width)
    padded[:, : t.shape[1]] = t
    return padded
