"""invoke_quant, rms_norm_general (LayerNorm + int8) and gelu_and_quant against float64 references.

Codes are compared with round-half-to-even(clamp(scaled, -128, 127)) of the reference's scaled value;
they may differ by +-1 only where that value lies within `ulp` (relative) of a .5 rounding boundary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import awq_inference_engine
from awq_kernels import ops
from tests.utils import poison, poisoned_empty

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "llm-awq-h100.pt"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# One ulp (relative) of the arithmetic that produces the scaled value.
ULP = {torch.float32: 2.0**-20, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
SHAPES = [(7, 4096), (3, 5, 1000), (1, 1), (4, 33), (100, 24), (300, 3), (2, 8192), (3, 5001), (2, 40000)]


def assert_codes(codes: torch.Tensor, scaled: torch.Tensor, ulp: float) -> None:
    s = scaled.detach().double().cpu().reshape(codes.shape)
    q = codes.detach().cpu().long()
    expected = torch.where(s.isnan(), torch.zeros_like(s), s.clamp(-128, 127).round()).long()
    diff = (q - expected).abs()
    assert diff.max().item() <= 1, f"codes differ by up to {diff.max().item()}"
    distance_to_half = ((s.abs() - s.abs().floor()) - 0.5).abs()
    off_boundary = (diff != 0) & (distance_to_half > ulp * s.abs().clamp_min(1.0))
    assert not off_boundary.any(), (
        f"{int(off_boundary.sum())} codes differ away from a .5 boundary, e.g. scaled "
        f"{s[off_boundary][:4].tolist()} -> {q[off_boundary][:4].tolist()}"
    )


def assert_scales(scale: torch.Tensor, expected: torch.Tensor) -> None:
    """fp16 scales equal up to one fp16 rounding of amax/127."""
    torch.testing.assert_close(scale.float().cpu(), expected.float().cpu(), rtol=2.0**-10, atol=0.0)


# ---- invoke_quant ----


def invoke_quant_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled values x * 127/amax, fp16 scales) in float64."""
    xf = x.double().reshape(-1, x.size(-1))
    amax = xf.abs().amax(-1, keepdim=True)
    return xf * (127.0 / amax), (amax.squeeze(-1) / 127.0).half()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_invoke_quant(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=dtype, device="cuda") * 3
    tokens = x.numel() // shape[-1]
    out, scale = poisoned_empty(*shape, dtype=torch.int8), poisoned_empty(tokens, dtype=torch.float16)
    awq_inference_engine.invoke_quant(out, x, scale)
    scaled, expected_scale = invoke_quant_reference(x)
    assert_codes(out, scaled, ULP[torch.float32])  # exact input, fp32 arithmetic
    assert_scales(scale, expected_scale)


@pytest.mark.gpu
def test_invoke_quant_zero_and_nan_rows() -> None:
    x = torch.randn(3, 64, device="cuda", dtype=torch.float16)
    x[0] = 0
    x[2, 5] = float("nan")
    out, scale = poisoned_empty(3, 64, dtype=torch.int8), poisoned_empty(3, dtype=torch.float16)
    awq_inference_engine.invoke_quant(out, x, scale)
    assert scale[0].item() == 0 and (out[0] == 0).all()
    assert out[2, 5].item() == 0  # NaN -> 0
    assert_codes(out[1:2], invoke_quant_reference(x[1:2])[0], ULP[torch.float32])


@pytest.mark.gpu
def test_quantize_per_token_roundtrip() -> None:
    x = torch.randn(33, 4096, device="cuda", dtype=torch.bfloat16)
    codes, scales = ops.quantize_per_token(x)
    approx = codes.float() * scales.float()[:, None]
    # half a step, plus up to 127 codes times the fp16 rounding of the scale (2^-11 relative)
    bound = scales.float()[:, None] * (0.5 + 127 * 2.0**-11) * 1.01
    assert ((approx - x.float()).abs() <= bound).all()


@pytest.mark.gpu
def test_invoke_quant_golden() -> None:
    c = torch.load(GOLDEN, weights_only=True)["cases"]["invoke_quant/fp16/7x4096"]
    x = c["inputs"]["x"].cuda()
    out, scale = poisoned_empty(*x.shape, dtype=torch.int8), poisoned_empty(x.size(0), dtype=torch.float16)
    awq_inference_engine.invoke_quant(out, x, scale)
    scaled, expected_scale = invoke_quant_reference(x)
    assert_codes(out, scaled, ULP[torch.float32])
    assert_codes(c["outputs"]["out"], scaled, ULP[torch.float16])  # the original, for the record
    assert torch.equal(scale.cpu(), c["outputs"]["scale"])


# ---- rms_norm_general ----


def layernorm_quant_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scaling: torch.Tensor, eps: float, per_token: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scaled values, fp16 per-token scales or None) of the spec's math in float64."""
    dtype = x.dtype
    xf = x.double().reshape(-1, x.size(-1))
    mean = xf.mean(-1, keepdim=True)
    var = (xf - mean).pow(2).mean(-1, keepdim=True)
    y_no_bias = (xf - mean) / torch.sqrt(var + eps) * weight.double()
    if not per_token:
        return y_no_bias.to(dtype).double() * scaling.reshape(-1)[0].double(), None
    y = y_no_bias + bias.double()
    floor = torch.tensor(1e-6, dtype=dtype).double().item()
    amax = y.to(dtype).double().abs().amax(-1, keepdim=True).clamp_min(floor)
    return y * (127.0 / amax), (amax.squeeze(-1) / 127.0).half()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_token", [True, False])
def test_rms_norm_general(dtype: torch.dtype, shape: tuple[int, ...], per_token: bool) -> None:
    hidden = shape[-1]
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype)
    weight = (torch.rand(hidden, device="cuda") + 0.5).to(dtype)
    bias = (torch.randn(hidden, device="cuda") * 0.1).to(dtype)
    tokens = x.numel() // hidden
    if per_token:
        scaling = poisoned_empty(tokens, dtype=torch.float16)
    else:
        scaling = torch.tensor([20.0], dtype=torch.float16, device="cuda")  # multiplier (1/scale)
    scaling_before = scaling.clone()
    out = poisoned_empty(*shape, dtype=torch.int8)
    awq_inference_engine.rms_norm_general(out, x, weight, bias, scaling, 1e-5, per_token)
    scaled, expected_scale = layernorm_quant_reference(x, weight, bias, scaling_before, 1e-5, per_token)
    # y is rounded to the dtype for amax (and per-tensor codes); fp32 mean/variance/rsqrt add ~2^-20
    assert_codes(out, scaled, ULP[dtype] if dtype != torch.float32 else 2.0**-16)
    if per_token:
        assert_scales(scaling, expected_scale)
    else:
        assert torch.equal(scaling, scaling_before)


@pytest.mark.gpu
def test_rms_norm_general_keywords_and_default() -> None:
    x = torch.randn(4, 256, device="cuda", dtype=torch.float16)
    w, b = torch.ones(256, device="cuda", dtype=torch.float16), torch.zeros(256, device="cuda", dtype=torch.float16)
    out, scaling = poisoned_empty(4, 256, dtype=torch.int8), poisoned_empty(4, dtype=torch.float16)
    awq_inference_engine.rms_norm_general(out=out, input=x, weight=w, bias=b, scaling=scaling, epsilon=1e-6)
    scaled, expected_scale = layernorm_quant_reference(x, w, b, scaling, 1e-6, True)
    assert_codes(out, scaled, ULP[torch.float16])
    assert_scales(scaling, expected_scale)


@pytest.mark.gpu
@pytest.mark.parametrize("per_token", [True, False])
def test_rms_norm_general_golden(per_token: bool) -> None:
    c = torch.load(GOLDEN, weights_only=True)["cases"][f"rms_norm_general/fp16/per_token_{per_token}"]
    inp = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in c["inputs"].items()}
    scaling = inp["scaling_in"].clone()
    if per_token:
        poison(scaling)
    out = poisoned_empty(*inp["x"].shape, dtype=torch.int8)
    awq_inference_engine.rms_norm_general(out, inp["x"], inp["weight"], inp["bias"], scaling, 1e-6, per_token)
    scaled, expected_scale = layernorm_quant_reference(
        inp["x"], inp["weight"], inp["bias"], inp["scaling_in"], 1e-6, per_token
    )
    assert_codes(out, scaled, ULP[torch.float16])
    assert_codes(c["outputs"]["out"], scaled, ULP[torch.float16])
    if per_token:
        assert_scales(scaling, expected_scale)
        assert_scales(scaling, c["outputs"]["scaling"])
    else:
        assert torch.equal(scaling.cpu(), c["outputs"]["scaling"])


# ---- gelu_and_quant ----


def gelu_quant_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scaled values, gelu values, fp16 scales) in float64."""
    xf = x.double().reshape(-1, x.size(-1))
    g = 0.5 * xf * (1 + torch.tanh(0.79788456 * xf * (1 + 0.044715 * xf * xf)))
    amax = g.abs().amax(-1, keepdim=True)
    return g * (127.0 / amax), g, (amax.squeeze(-1) / 127.0).half()


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_and_quant(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float16, device="cuda") * 3
    numel, tokens = x.numel(), x.numel() // shape[-1]
    out, scale = poisoned_empty(*shape, dtype=torch.int8), poisoned_empty(tokens, dtype=torch.float16)
    tmp = poisoned_empty(numel + 5, dtype=torch.float16)  # larger than needed: the tail stays untouched
    awq_inference_engine.gelu_and_quant(out, x, scale, tmp)
    scaled, g, expected_scale = gelu_quant_reference(x)
    # A token whose gelu values all round to about 0 (x < -7 in a (1, 1) input) has scale 0 in fp16, so
    # any code dequantizes to 0 and the codes (NaN in the reference) are not checked; the scale is.
    live = expected_scale != 0
    if live.any():
        assert_codes(out.reshape(tokens, -1)[live], scaled[live], 2.0**-18)  # fp32 (tanhf within a few ulp)
    assert_scales(scale, expected_scale)
    torch.testing.assert_close(tmp[:numel].view(-1, shape[-1]).double().cpu(), g.cpu(), rtol=2.0**-10, atol=1e-7)
    assert tmp[numel:].isnan().all()


@pytest.mark.gpu
def test_gelu_and_quant_zero_row() -> None:
    x = torch.zeros(2, 64, dtype=torch.float16, device="cuda")
    out, scale = poisoned_empty(2, 64, dtype=torch.int8), poisoned_empty(2, dtype=torch.float16)
    tmp = poisoned_empty(128, dtype=torch.float16)
    awq_inference_engine.gelu_and_quant(out, x, scale, tmp)
    assert (out == 0).all() and (scale == 0).all() and (tmp == 0).all()


@pytest.mark.gpu
def test_gelu_and_quant_golden() -> None:
    c = torch.load(GOLDEN, weights_only=True)["cases"]["gelu_and_quant/fp16/6x512"]
    x = c["inputs"]["x"].cuda()
    out, scale = poisoned_empty(*x.shape, dtype=torch.int8), poisoned_empty(x.size(0), dtype=torch.float16)
    tmp = poisoned_empty(x.numel(), dtype=torch.float16)
    awq_inference_engine.gelu_and_quant(out, x, scale, tmp)
    scaled, g, expected_scale = gelu_quant_reference(x)
    assert_codes(out, scaled, 2.0**-18)
    assert_scales(scale, expected_scale)
    g = g.cpu()
    # ours is at least as close to the exact GELU as the original's fp16-arithmetic values
    ours_err = (tmp.double().cpu() - g.reshape(-1)).abs().max()
    original_err = (c["outputs"]["tmp"].double() - g.reshape(-1)).abs().max()
    assert ours_err <= original_err
    # the original's codes: +-1 near a boundary, within the few fp16 roundings of its pipeline
    assert_codes(c["outputs"]["out"], scaled, 4 * ULP[torch.float16])


# ---- argument errors (CPU: validation runs before the device check) ----


def _i8(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.int8)


def _h(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.float16)


@pytest.mark.parametrize(
    "out,x,scale,match",
    [
        (_i8(4, 8), torch.randn(4, 8).double(), _h(4), r"invoke_quant: argument 'input' must have dtype one of"),
        (_i8(4, 8), torch.randn(8, 4).t(), _h(4), r"argument 'input' must be contiguous"),
        (_i8(4, 0), torch.randn(4, 0), _h(4), r"argument 'input' must have a last dimension in \[1, 2\^30\]"),
        (_h(4, 8), torch.randn(4, 8), _h(4), r"argument 'out' must have dtype Char"),
        (_i8(4, 7), torch.randn(4, 8), _h(4), r"argument 'out' must have as many elements as 'input'"),
        (_i8(8, 4).t(), torch.randn(4, 8), _h(4), r"argument 'out' must be contiguous"),
        (_i8(4, 8), torch.randn(4, 8), torch.zeros(4), r"argument 'scale' must have dtype Half"),
        (_i8(4, 8), torch.randn(4, 8), _h(3), r"argument 'scale' must have at least one element per token \(4\)"),
        (_i8(4, 8), torch.randn(4, 8), _h(8)[::2], r"argument 'scale' must be contiguous"),
        (_i8(4, 8), torch.randn(4, 8), _h(4), r"argument 'input' must be a CUDA tensor"),
    ],
)
def test_invoke_quant_errors(out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        awq_inference_engine.invoke_quant(out, x, scale)


def _ln_args(**over: object) -> dict:
    args = {
        "out": _i8(4, 8), "input": torch.randn(4, 8), "weight": torch.ones(8), "bias": torch.zeros(8),
        "scaling": _h(4), "epsilon": 1e-6, "use_per_token_quant": True,
    }
    args.update(over)
    return args


@pytest.mark.parametrize(
    "over,match",
    [
        ({"input": torch.randn(4, 8).double()}, r"rms_norm_general: argument 'input' must have dtype one of"),
        ({"input": torch.randn(8, 4).t()}, r"argument 'input' must be contiguous"),
        ({"weight": torch.ones(8).half()}, r"argument 'weight' must have the dtype of 'input'"),
        ({"weight": torch.ones(7)}, r"argument 'weight' must have shape \[input.size\(-1\)\]"),
        ({"weight": torch.ones(16)[::2]}, r"argument 'weight' must be contiguous"),
        ({"bias": torch.zeros(8).half()}, r"argument 'bias' must have the dtype of 'input'"),
        ({"bias": torch.zeros(4, 2)}, r"argument 'bias' must have shape \[input.size\(-1\)\]"),
        ({"out": _h(4, 8)}, r"argument 'out' must have dtype Char"),
        ({"out": _i8(32)}, r"argument 'out' must have the shape of 'input'"),
        ({"scaling": torch.zeros(4)}, r"argument 'scaling' must have dtype Half"),
        ({"scaling": _h(3)}, r"argument 'scaling' must have one element per token \(4\) in per-token mode"),
        ({"scaling": _h(0), "use_per_token_quant": False}, r"must hold the per-tensor multiplier"),
        ({"epsilon": float("nan")}, r"argument 'epsilon' must be a finite float >= 0"),
        ({"epsilon": -1.0}, r"argument 'epsilon' must be a finite float >= 0"),
        ({}, r"argument 'input' must be a CUDA tensor"),
        ({"use_per_token_quant": False, "scaling": _h(1)}, r"argument 'input' must be a CUDA tensor"),
    ],
)
def test_rms_norm_general_errors(over: dict, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        awq_inference_engine.rms_norm_general(**_ln_args(**over))


@pytest.mark.parametrize(
    "out,x,scale,tmp,match",
    [
        (_i8(4, 8), torch.randn(4, 8), _h(4), _h(32), r"gelu_and_quant: argument 'input' must have dtype Half"),
        (_i8(4, 8), _h(8, 4).t(), _h(4), _h(32), r"argument 'input' must be contiguous"),
        (_i8(4, 8).float(), _h(4, 8), _h(4), _h(32), r"argument 'out' must have dtype Char"),
        (_i8(4, 9), _h(4, 8), _h(4), _h(32), r"argument 'out' must have as many elements as 'input'"),
        (_i8(4, 8), _h(4, 8), torch.zeros(4), _h(32), r"argument 'scale_out' must have dtype Half"),
        (_i8(4, 8), _h(4, 8), _h(3), _h(32), r"argument 'scale_out' must have at least one element per token"),
        (_i8(4, 8), _h(4, 8), _h(4), torch.zeros(32), r"argument 'tmp' must have dtype Half"),
        (_i8(4, 8), _h(4, 8), _h(4), _h(31), r"argument 'tmp' must have at least as many elements as 'input'"),
        (_i8(4, 8), _h(4, 8), _h(4), _h(64)[::2], r"argument 'tmp' must be contiguous"),
        (_i8(4, 8), _h(4, 8), _h(4), _h(32), r"argument 'input' must be a CUDA tensor"),
    ],
)
def test_gelu_and_quant_errors(out, x, scale, tmp, match: str) -> None:
    with pytest.raises(RuntimeError, match=match):
        awq_inference_engine.gelu_and_quant(out, x, scale, tmp)


def test_gelu_and_quant_tmp_must_not_overlap_input() -> None:
    # tmp receives the GELU values while long rows are still read from input: aliasing is an error.
    buffer = _h(48)
    x = buffer[:32].view(4, 8)
    for tmp in (x, buffer[16:]):
        with pytest.raises(RuntimeError, match="gelu_and_quant: arguments 'tmp' and 'input' overlap in memory"):
            awq_inference_engine.gelu_and_quant(_i8(4, 8), x, _h(4), tmp)
