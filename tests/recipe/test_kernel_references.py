"""The references of recipe/test_kernels.py, checked on the CPU against the golden
vectors of the original llm-awq kernels (the GPU checks are only as good as these)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from awq_kernels.quantization import dequantize, dequantize_format_c
from tests.utils import golden_cases

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def golden() -> dict:
    return dict(golden_cases(""))


def cases(golden: dict, prefix: str) -> list[dict]:
    found = [case for name, case in golden.items() if name.startswith(prefix + "/")]
    assert found, f"no golden case for {prefix}"
    return found


@pytest.mark.parametrize("op", ["gemm_forward_cuda", "gemv_forward_cuda", "gemm_forward_cuda_new",
                                "gemv_forward_cuda_new"])
def test_w4a16_reference(golden, test_kernels, op):
    """ref_w4a16 over the package's dequantizers (their packers are tested in tests/w4a16)."""
    for case in cases(golden, op):
        inputs = case["inputs"]
        group_size = int(inputs.get("group_size", 128))
        if op.endswith("_new"):
            weight = dequantize_format_c(inputs["qweight"], inputs["scales"], inputs["scaled_zeros"], group_size)
        else:
            k = inputs["q"].shape[1]
            weight = dequantize(inputs["q"], inputs["zeros"], inputs["scales"][:, : k // group_size], group_size)
        expected = test_kernels.ref_w4a16(inputs["x"], weight)
        assert test_kernels.relerr(expected, case["reference"]) < 1e-6


def test_rms_norm_reference(golden, test_kernels):
    for case in cases(golden, "layernorm_forward_cuda"):
        inputs = case["inputs"]
        expected = test_kernels.ref_rms_norm(inputs["x"], inputs["gamma"], float(inputs["eps"]))
        assert test_kernels.relerr(expected, case["reference"]) < 1e-6
        dtype = inputs["x"].dtype
        assert test_kernels.relerr(case["outputs"]["out"], expected) < test_kernels.FLOAT_TOLERANCE[dtype]


def test_rotary_references(golden, test_kernels):
    for case in cases(golden, "rotary_embedding_neox"):
        inputs = case["inputs"]
        query = test_kernels.ref_rotary_neox(inputs["positions"], inputs["query"], inputs["cos_sin_cache"])
        key = test_kernels.ref_rotary_neox(inputs["positions"], inputs["key"], inputs["cos_sin_cache"])
        assert test_kernels.relerr(query, case["reference"]) < 1e-6
        assert test_kernels.relerr(case["outputs"]["out"], query) < 5e-3
        assert test_kernels.relerr(case["outputs"]["key_out"], key) < 5e-3
    for case in cases(golden, "fused_rope_with_pos_forward_func"):
        inputs = case["inputs"]
        x = inputs["qkv"][:, :, : int(inputs["H"])]
        expected = test_kernels.ref_fused_rope(x, inputs["freqs"])
        assert test_kernels.relerr(expected, case["reference"]) < 1e-6
        assert test_kernels.relerr(case["outputs"]["out"], expected) < 5e-3


def test_silu_and_mul_reference(golden, test_kernels):
    for case in cases(golden, "silu_and_mul"):
        expected = test_kernels.ref_silu_and_mul(case["inputs"]["x"])
        assert test_kernels.relerr(expected, case["reference"]) < 1e-6


def test_attention_reference(golden, test_kernels):
    for case in cases(golden, "single_query_attention"):
        inputs, outputs = case["inputs"], case["outputs"]
        qkv, heads, kv_heads = inputs["qkv"], int(inputs["Hq"]), int(inputs["Hkv"])
        q, k, v = qkv[:, :heads], qkv[:, heads : heads + kv_heads], qkv[:, heads + kv_heads :]
        expected, k_after, v_after = test_kernels.ref_single_query_attention(
            q,
            k,
            v,
            inputs["k_cache"],
            inputs["v_cache"],
            inputs["length_per_sample"],
            inputs["alibi_slopes"],
            int(inputs["timestep"]),
            int(inputs["rotary_embedding_dim"]),
            float(inputs["rotary_base"]),
            float(inputs["rotary_scale"]),
            bool(inputs["neox_rotary_style"]),
        )
        assert test_kernels.relerr(expected, case["reference"]) < 1e-5
        dtype = qkv.dtype
        assert test_kernels.relerr(outputs["out"], expected) < test_kernels.FLOAT_TOLERANCE[dtype]
        assert test_kernels.relerr(outputs["k_cache_after"], k_after) < test_kernels.FLOAT_TOLERANCE[dtype]
        assert test_kernels.relerr(outputs["v_cache_after"], v_after) < test_kernels.FLOAT_TOLERANCE[dtype]


def test_w8a8_reference(golden, test_kernels):
    for op in ("w8a8_gemm_forward_cuda", "w8a8_gemm_fuse_bias_forward_cuda"):
        for case in cases(golden, op):
            inputs = case["inputs"]
            expected = test_kernels.ref_w8a8(
                inputs["a"], inputs["w"], inputs["wscales"], inputs["ascales"], inputs.get("bias")
            )
            assert test_kernels.relerr(expected, case["reference"]) < 1e-6
            assert test_kernels.relerr(case["outputs"]["out"], expected) < 1e-3


def test_quantizer_references(golden, test_kernels):
    for case in cases(golden, "invoke_quant"):
        codes, scale = test_kernels.ref_invoke_quant(case["inputs"]["x"])
        test_kernels.assert_codes_close("invoke_quant", case["outputs"]["out"], codes)
        test_kernels.assert_close("invoke_quant scale", case["outputs"]["scale"], scale, torch.float16)
    for case in cases(golden, "rms_norm_general"):
        inputs = case["inputs"]
        per_token = bool(inputs["use_per_token_quant"])
        codes, scaling = test_kernels.ref_rms_norm_general(
            inputs["x"], inputs["weight"], inputs["bias"], inputs["scaling_in"], 1e-6, per_token
        )
        test_kernels.assert_codes_close("rms_norm_general", case["outputs"]["out"], codes)
        test_kernels.assert_close("rms_norm_general scaling", case["outputs"]["scaling"], scaling, torch.float16)
    for case in cases(golden, "gelu_and_quant"):
        x = case["inputs"]["x"]
        codes, scale, gelu = test_kernels.ref_gelu_and_quant(x)
        test_kernels.assert_codes_close("gelu_and_quant", case["outputs"]["out"], codes)
        test_kernels.assert_close("gelu_and_quant scale", case["outputs"]["scale_out"], scale, torch.float16)
        test_kernels.assert_close("gelu_and_quant tmp", case["outputs"]["tmp"].view(x.shape), gelu, torch.float16)


def test_every_op_has_a_check(test_kernels):
    """The GPU phase fails an implemented op without a check; keep the table complete."""
    schemas = (ROOT / "csrc" / "awq_inference_engine" / "torch_bindings.cpp").read_text()

    defined = {f"awq_inference_engine::{name}" for name in re.findall(r'm\.def\("(\w+)\(', schemas)}
    defined.discard("awq_inference_engine::build_info")
    defined.add("ft_attention::single_query_attention")
    assert defined == set(test_kernels.CHECKS)
