"""WQLinear (TinyChat v2, Format C) and WQLinearV1 (Format B): buffers, loading, quantization (CPU) and
forward on the W4A16 kernels (GPU) against a float64 reference of the dequantized weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from awq_kernels.modules import WQLinear, WQLinearV1
from awq_kernels.quantization import (
    dequantize,
    dequantize_format_c,
    pseudo_quantize,
    unpack_format_b,
    unpack_format_c,
)
from tests.utils import golden_bound, relerr

GOLDEN = Path(__file__).parents[1] / "data" / "llm-awq-h100.pt"
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.fixture(scope="module")
def golden_cases() -> dict:
    return torch.load(GOLDEN, weights_only=True)["cases"]


def random_linear(in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device: str = "cpu") -> nn.Linear:
    linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=torch.float32)
    with torch.no_grad():
        linear.weight.normal_(0.0, 0.02)
        if bias:
            linear.bias.normal_(0.0, 0.1)
    return linear.to(dtype)


# --------------------------------------------------------------------------------------------------
# CPU: buffers, state dicts, from_linear


@pytest.mark.parametrize(
    ("in_features", "out_features", "group_size", "padded_groups"),
    [(4096, 4096, 128, 32), (11008, 4096, 128, 88), (896, 256, 128, 8), (512, 64, 64, 16), (512, 64, 32, 32)],
)
def test_wqlinear_buffers_as_llm_awq(in_features, out_features, group_size, padded_groups):
    layer = WQLinear(4, group_size, in_features, out_features, True, "cpu")
    assert (layer.in_features, layer.out_features, layer.w_bit, layer.group_size) == (
        in_features, out_features, 4, group_size
    )
    assert layer.split_k_iters == 8
    state = layer.state_dict()
    assert set(state) == {"qweight", "scales", "scaled_zeros", "bias"}
    assert state["qweight"].dtype == torch.int16 and state["qweight"].shape == (out_features // 4, in_features)
    for name in ("scales", "scaled_zeros"):
        assert state[name].dtype == torch.float16 and state[name].shape == (padded_groups, out_features)
    assert state["bias"].dtype == torch.float16 and state["bias"].shape == (out_features,)
    assert WQLinear(4, group_size, in_features, out_features, False, "cpu").bias is None


def test_wqlinear_v1_buffers():
    layer = WQLinearV1(4, 64, 576, 128, True, "cpu", torch.bfloat16)
    state = layer.state_dict()
    assert set(state) == {"qweight", "qzeros", "scales", "bias"}
    assert state["qweight"].dtype == torch.int32 and state["qweight"].shape == (128, 72)
    assert state["qzeros"].dtype == torch.int32 and state["qzeros"].shape == (128, 2)
    assert state["scales"].dtype == torch.bfloat16 and state["scales"].shape == (128, 16)


def test_wqlinear_loads_llm_awq_v2_state_dict(golden_cases):
    """The golden vectors' Format C tensors are what llm-awq's WQLinear stores: they load unchanged."""
    for dtype, tag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        inputs = golden_cases[f"gemm_forward_cuda_new/{tag}/M8_N256_K1024"]["inputs"]
        layer = WQLinear(4, 128, 1024, 256, False, "cpu", dtype)
        layer.load_state_dict({k: inputs[k] for k in ("qweight", "scales", "scaled_zeros")}, strict=True)
        unpacked = unpack_format_c(layer.qweight, layer.scales, layer.scaled_zeros, 128)
        assert torch.equal(unpacked.q, inputs["q"]) and torch.equal(unpacked.zeros, inputs["zeros"])


def test_wqlinear_v1_loads_format_b_state_dict(golden_cases):
    inputs = golden_cases["gemm_forward_cuda/fp16/G64_M5_N128_K1024_split8"]["inputs"]
    layer = WQLinearV1(4, 64, 1024, 128, False, "cpu")
    layer.load_state_dict({k: inputs[k] for k in ("qweight", "qzeros", "scales")}, strict=True)
    unpacked = unpack_format_b(layer.qweight, layer.qzeros, layer.scales, 64)
    assert torch.equal(unpacked.q, inputs["q"]) and torch.equal(unpacked.zeros, inputs["zeros"])


@pytest.mark.parametrize("cls", [WQLinear, WQLinearV1])
@pytest.mark.parametrize(("dtype", "expected_dtype"), [(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
                                                       (torch.float32, torch.float16)])
@pytest.mark.parametrize(("in_features", "out_features", "group_size"), [(256, 64, 128), (320, 12, 32), (192, 8, -1)])
def test_from_linear_uses_reference_quantizer(cls, dtype, expected_dtype, in_features, out_features, group_size):
    linear = random_linear(in_features, out_features, True, dtype)
    layer = cls.from_linear(linear, 4, group_size)
    g = in_features if group_size == -1 else group_size
    assert layer.group_size == g and layer.scales.dtype == expected_dtype
    q, zeros, scales = pseudo_quantize(linear.weight.detach(), group_size)
    if cls is WQLinear:
        unpacked = unpack_format_c(layer.qweight, layer.scales, layer.scaled_zeros, g)
    else:
        unpacked = unpack_format_b(layer.qweight, layer.qzeros, layer.scales, g)
    assert torch.equal(unpacked.q, q) and torch.equal(unpacked.zeros, zeros)
    assert torch.equal(unpacked.scales, scales.to(expected_dtype))
    assert torch.equal(layer.bias, linear.bias.detach().to(expected_dtype))
    assert relerr(dequantize(*unpacked, g), linear.weight.double()) < 0.12


def test_from_linear_with_given_scales_and_zeros():
    """llm-awq's call form from_linear(linear, w_bit, group_size, False, scales, zeros)."""
    q, zeros, scales = pseudo_quantize(torch.randn(16, 256) * 0.02, 128)
    stored_scales = scales.half()
    linear = nn.Linear(256, 16, bias=False)
    with torch.no_grad():
        linear.weight.copy_(dequantize(q, zeros, stored_scales, 128, dtype=torch.float32))
    layer = WQLinear.from_linear(linear, 4, 128, False, stored_scales, zeros.float())
    unpacked = unpack_format_c(layer.qweight, layer.scales, layer.scaled_zeros, 128)
    assert torch.equal(unpacked.q, q) and torch.equal(unpacked.zeros, zeros)
    assert torch.equal(unpacked.scales, stored_scales)


def test_from_linear_init_only():
    layer = WQLinear.from_linear(random_linear(128, 16, False, torch.float16), 4, 64, init_only=True)
    assert layer.qweight.shape == (4, 128) and not bool(layer.qweight.any()) and layer.bias is None


def test_module_errors():
    with pytest.raises(NotImplementedError, match="only 4-bit"):
        WQLinear(3, 128, 256, 64, False, "cpu")
    with pytest.raises(ValueError, match="not a multiple of group_size 128"):
        WQLinear(4, 128, 320, 64, False, "cpu")
    with pytest.raises(ValueError, match=r"out_features % 4 == 0 and in_features % 64 == 0, got out_features=6"):
        WQLinear(4, 32, 256, 6, False, "cpu")
    with pytest.raises(ValueError, match="in_features=96"):
        WQLinear(4, 32, 96, 8, False, "cpu")
    with pytest.raises(NotImplementedError, match="group_size 96"):
        WQLinear(4, 96, 384, 8, False, "cpu")
    with pytest.raises(ValueError, match="torch.float16 or torch.bfloat16"):
        WQLinear(4, 128, 256, 8, False, "cpu", torch.float32)
    with pytest.raises(ValueError, match="in_features % 8 == 0"):
        WQLinearV1(4, -1, 12, 8, False, "cpu")
    linear = random_linear(256, 8, False, torch.float16)
    with pytest.raises(ValueError, match="both scales and zeros"):
        WQLinear.from_linear(linear, 4, 128, False, torch.ones(8, 2), None)
    with pytest.raises(ValueError, match=r"shape \[N, K/G\] = \[8, 2\]"):
        WQLinear.from_linear(linear, 4, 128, False, torch.ones(8, 4), torch.zeros(8, 4))
    with pytest.raises(ValueError, match=r"zeros must be integers in \[0, 15\]"):
        WQLinear.from_linear(linear, 4, 128, False, torch.ones(8, 2), torch.full((8, 2), 2.5))


@pytest.mark.parametrize("cls", [WQLinear, WQLinearV1])
def test_forward_calls_w4a16_gemm(monkeypatch, cls):
    """On the CPU, with the op replaced by the float64 reference: the operands, layout and bias."""
    calls = []

    def fake_w4a16_gemm(x, qweight, scales, zeros, *, group_size, layout="v2", kernel="auto"):
        calls.append((qweight, scales, zeros, group_size, layout, kernel))
        return reference_output(layer_without_bias, x).to(x.dtype)

    monkeypatch.setattr("awq_kernels.ops.w4a16_gemm", fake_w4a16_gemm)
    layer = cls.from_linear(random_linear(256, 16, True, torch.float16), 4, 64)
    layer_without_bias = cls(4, 64, 256, 16, False, "cpu")
    layer_without_bias.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "bias"})
    x = torch.randn(2, 3, 256, dtype=torch.float16)
    out = layer(x)
    qweight, scales, zeros, group_size, layout, kernel = calls[0]
    assert qweight is layer.qweight and scales is layer.scales and group_size == 64 and kernel == "auto"
    if cls is WQLinear:
        assert zeros is layer.scaled_zeros and layout == "v2"
    else:
        assert zeros is layer.qzeros and layout == "v1"
    assert out.shape == (2, 3, 16) and out.dtype == torch.float16
    assert relerr(out, reference_output(layer, x)) < 2e-3


# --------------------------------------------------------------------------------------------------
# GPU: forward against float64


# Leading dims of x (rank 1 to 3) covering M in {1, 3, 7, 8, 15, 16, 17, 33, 64, 127, 255, 1000, 4096}.
LEADING_DIMS = [(), (1,), (3,), (1, 7), (8,), (15,), (2, 8), (17,), (33,), (64,), (127,), (3, 85), (4, 250), (4096,)]
LAYER_SHAPES = [(64, 4, 32), (192, 12, 64), (320, 136, 32), (1024, 256, 128), (896, 520, 128), (2048, 1000, 64)]


def reference_output(layer: WQLinear | WQLinearV1, x: torch.Tensor) -> torch.Tensor:
    """x @ W.T (+ bias) in float64, W the weight the kernels dequantize."""
    if isinstance(layer, WQLinear):
        weight = dequantize_format_c(layer.qweight, layer.scales, layer.scaled_zeros, layer.group_size)
    else:
        weight = dequantize(*unpack_format_b(layer.qweight, layer.qzeros, layer.scales, layer.group_size),
                            layer.group_size)
    out = x.double() @ weight.T
    return out + layer.bias.double() if layer.bias is not None else out


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [WQLinear, WQLinearV1])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("in_features", "out_features", "group_size"), LAYER_SHAPES)
@pytest.mark.parametrize("leading", LEADING_DIMS, ids=str)
def test_forward_matches_float64(cls, dtype, in_features, out_features, group_size, leading):
    linear = random_linear(in_features, out_features, len(leading) % 2 == 1, dtype, device="cuda")
    layer = cls.from_linear(linear, 4, group_size)  # packs on the GPU
    x = torch.randn(*leading, in_features, device="cuda", dtype=dtype)
    out = layer(x)
    assert out.shape == (*leading, out_features) and out.dtype == dtype and out.device == x.device
    assert relerr(out, reference_output(layer, x)) <= TOLERANCE[dtype]


@pytest.mark.gpu
def test_forward_large_k_fp16():
    """fp32 accumulation: K = 28672 in fp16 stays within 2e-3 (the original's fp16 sums give 6.2e-3)."""
    linear = random_linear(28672, 256, False, torch.float16, device="cuda")
    layer = WQLinear.from_linear(linear, 4, 128)
    for rows in (1, 16, 300):
        x = torch.randn(rows, 28672, device="cuda", dtype=torch.float16)
        assert relerr(layer(x), reference_output(layer, x)) <= 2e-3


@pytest.mark.gpu
def test_golden_v2_state_dict_forward(golden_cases):
    """A module loaded with llm-awq's tensors is at least as close to the reference as the original."""
    for name, case in golden_cases.items():
        if not name.startswith(("gemm_forward_cuda_new/", "gemv_forward_cuda_new/")):
            continue
        inputs = case["inputs"]
        layer = WQLinear(4, 128, 1024, 256, False, "cuda", inputs["x"].dtype)
        layer.load_state_dict({k: inputs[k] for k in ("qweight", "scales", "scaled_zeros")})
        out = layer(inputs["x"].cuda())
        assert relerr(out, case["reference"]) <= golden_bound(case, out.dtype), name


@pytest.mark.gpu
def test_golden_v1_state_dict_forward(golden_cases):
    for name, case in golden_cases.items():
        if not name.startswith(("gemm_forward_cuda/", "gemv_forward_cuda/")):
            continue
        inputs = case["inputs"]
        layer = WQLinearV1(4, inputs["group_size"], 1024, 128, False, "cuda")
        layer.load_state_dict({k: inputs[k] for k in ("qweight", "qzeros", "scales")})
        out = layer(inputs["x"].cuda())
        assert relerr(out, case["reference"]) <= golden_bound(case, out.dtype), name
