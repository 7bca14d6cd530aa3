"""4-bit AWQ linear layers that run on the awq-kernels W4A16 ops.

* :class:`WQLinear`: llm-awq's ``WQLinear`` at HEAD (TinyChat v2, Format C). Same constructor,
  attributes and buffers (``qweight``, ``scales``, ``scaled_zeros``, optional ``bias``), so llm-awq
  ``*-v2.pt`` state dicts load unchanged.
* :class:`WQLinearV1`: the older TinyChat v1 ``WQLinear`` (Format B: ``qweight``, ``qzeros``,
  ``scales``, optional ``bias``).

Both quantize an ``nn.Linear`` with the AWQ reference quantizer in ``from_linear``. Layouts are
documented in ``awq_kernels.quantization``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from awq_kernels import ops
from awq_kernels.quantization import (
    MAX_CODE,
    pack_format_b,
    pack_format_c,
    padded_group_count,
    pseudo_quantize,
    resolve_group_size,
)

_IO_DTYPES = (torch.float16, torch.bfloat16)


class _WQLinearBase(nn.Module):
    """What both layouts share: shape attributes, ``from_linear`` and the forward call."""

    layout: str  # the ``layout`` argument of ``awq_kernels.ops.w4a16_gemm``

    def __init__(
        self,
        w_bit: int,
        group_size: int,
        in_features: int,
        out_features: int,
        bias: bool,
        dev: torch.device | str | None,
        dtype: torch.dtype = torch.float16,
    ) -> None:
        super().__init__()
        if w_bit != 4:
            raise NotImplementedError(f"{type(self).__name__}: only 4-bit weights are supported, got w_bit={w_bit}")
        if dtype not in _IO_DTYPES:
            raise ValueError(f"{type(self).__name__}: dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.w_bit = w_bit
        self.group_size = resolve_group_size(in_features, group_size)
        self.split_k_iters = 8  # kept for llm-awq compatibility; the kernels choose their own split
        self._register_weight_buffers(dev, dtype)
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=dev))
        else:
            self.bias = None

    def _register_weight_buffers(self, dev: torch.device | str | None, dtype: torch.dtype) -> None:
        raise NotImplementedError

    def _set_weight(self, q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> None:
        """Pack the unpacked weight (``awq_kernels.quantization``) into the buffers."""
        raise NotImplementedError

    def _kernel_operands(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(qweight, scales, zeros)`` as ``ops.w4a16_gemm`` takes them for this layout."""
        raise NotImplementedError

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        w_bit: int = 4,
        group_size: int = 128,
        init_only: bool = False,
        scales: Optional[torch.Tensor] = None,
        zeros: Optional[torch.Tensor] = None,
    ) -> _WQLinearBase:
        """Quantize ``linear`` (llm-awq's signature).

        Without ``scales`` and ``zeros`` the weight is quantized with the AWQ reference quantizer
        (``pseudo_quantize``). With them (``[N, K/G]``, as returned by llm-awq's
        ``pseudo_quantize_tensor(..., get_scale_zp=True)``) the codes are
        ``clamp(round((w + zeros * scales) / scales), 0, 15)`` with the scales in the layer's dtype.
        ``init_only`` returns the layer with zero buffers. The layer's dtype is the linear's when
        that is fp16 or bf16, fp16 otherwise.
        """
        weight = linear.weight.detach()
        dtype = weight.dtype if weight.dtype in _IO_DTYPES else torch.float16
        layer = cls(w_bit, group_size, linear.in_features, linear.out_features, linear.bias is not None,
                    weight.device, dtype)
        if init_only:
            return layer
        if (scales is None) != (zeros is None):
            raise ValueError("from_linear: pass both scales and zeros, or neither")
        if scales is None:
            q, zero_points, group_scales = pseudo_quantize(weight, layer.group_size)
        else:
            q, zero_points, group_scales = _codes_from_scales(weight, scales, zeros, layer.group_size, dtype)
        layer._set_weight(q, zero_points, group_scales)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qweight, scales, zeros = self._kernel_operands()
        out = ops.w4a16_gemm(x, qweight, scales, zeros, group_size=self.group_size, layout=self.layout)
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"w_bit={self.w_bit}, group_size={self.group_size}, layout={self.layout}"
        )


class WQLinear(_WQLinearBase):
    """llm-awq's ``WQLinear`` (TinyChat v2, Format C), running on ``awq_kernels.ops.w4a16_gemm``.

    Buffers, as llm-awq at HEAD: int16 ``qweight [N/4, K]``; ``scales`` and ``scaled_zeros``
    ``[Gp, N]`` in ``dtype`` with ``Gp = 8 * calculate_zeros_width(K, G)`` (zero padding rows);
    optional ``bias [N]``. The weight is ``w = q * scales + scaled_zeros``. Needs N % 4 == 0 and
    K % 64 == 0; the kernels take group sizes 32, 64 and 128.
    """

    layout = "v2"

    def _register_weight_buffers(self, dev: torch.device | str | None, dtype: torch.dtype) -> None:
        n, k = self.out_features, self.in_features
        if n % 4 != 0 or k % 64 != 0:
            raise ValueError(f"WQLinear (Format C) needs out_features % 4 == 0 and in_features % 64 == 0, "
                             f"got out_features={n}, in_features={k}")
        padded = padded_group_count(k, self.group_size)
        self.register_buffer("qweight", torch.zeros(n // 4, k, dtype=torch.int16, device=dev))
        self.register_buffer("scales", torch.zeros(padded, n, dtype=dtype, device=dev))
        self.register_buffer("scaled_zeros", torch.zeros(padded, n, dtype=dtype, device=dev))

    def _set_weight(self, q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> None:
        packed = pack_format_c(q, zeros, scales, self.group_size, dtype=self.scales.dtype)
        self.qweight.copy_(packed.qweight)
        self.scales.copy_(packed.scales)
        self.scaled_zeros.copy_(packed.scaled_zeros)

    def _kernel_operands(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.qweight, self.scales, self.scaled_zeros


class WQLinearV1(_WQLinearBase):
    """The TinyChat v1 ``WQLinear`` (Format B), running on ``awq_kernels.ops.w4a16_gemm``.

    Buffers: int32 ``qweight [N, K/8]`` (sequential nibbles along K), int32 ``qzeros [N, Zw]``,
    ``scales [N, 8*Zw]`` in ``dtype`` (zero padding columns), optional ``bias [N]``. The weight is
    ``w = scales * (q - zeros)``.
    """

    layout = "v1"

    def _register_weight_buffers(self, dev: torch.device | str | None, dtype: torch.dtype) -> None:
        n, k = self.out_features, self.in_features
        if k % 8 != 0:
            raise ValueError(f"WQLinearV1 (Format B) needs in_features % 8 == 0, got in_features={k}")
        padded = padded_group_count(k, self.group_size)
        self.register_buffer("qweight", torch.zeros(n, k // 8, dtype=torch.int32, device=dev))
        self.register_buffer("qzeros", torch.zeros(n, padded // 8, dtype=torch.int32, device=dev))
        self.register_buffer("scales", torch.zeros(n, padded, dtype=dtype, device=dev))

    def _set_weight(self, q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> None:
        packed = pack_format_b(q, zeros, scales, self.group_size, dtype=self.scales.dtype)
        self.qweight.copy_(packed.qweight)
        self.qzeros.copy_(packed.qzeros)
        self.scales.copy_(packed.scales)

    def _kernel_operands(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.qweight, self.scales, self.qzeros


def _codes_from_scales(
    weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """llm-awq's ``from_linear`` codes for given ``scales``/``zeros [N, K/G]``: ``round((w + z*s) / s)``."""
    rows, in_features = weight.shape
    groups = in_features // group_size
    if tuple(scales.shape) != (rows, groups) or tuple(zeros.shape) != (rows, groups):
        raise ValueError(f"from_linear: scales and zeros must have shape [N, K/G] = [{rows}, {groups}], "
                         f"got {list(scales.shape)} and {list(zeros.shape)}")
    zero_points = zeros.float().round().clamp(0, MAX_CODE)
    if not torch.equal(zero_points, zeros.float()):
        raise ValueError("from_linear: zeros must be integers in [0, 15]")
    stored_scales = scales.to(dtype)
    s = stored_scales.float().unsqueeze(2)
    w = weight.float().reshape(rows, groups, group_size)
    q = ((w + zero_points.float().unsqueeze(2) * scales.float().unsqueeze(2)) / s).round_().clamp_(0, MAX_CODE)
    return q.to(torch.uint8).reshape(rows, in_features), zero_points.to(torch.uint8), stored_scales
