"""AutoAWQ checkpoint loading on a small synthetic checkpoint written in AutoAWQ's layout (Format A)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from awq_kernels.autoawq import load_autoawq_checkpoint
from awq_kernels.modules import WQLinear
from awq_kernels.quantization import dequantize, pack_format_a, pack_format_c, pseudo_quantize
from tests.utils import relerr

safetensors_torch = pytest.importorskip("safetensors.torch")

GROUP_SIZE = 64
# name -> (in_features, out_features, bias), named as in a Hugging Face Llama.
LAYERS = {
    "model.layers.0.self_attn.q_proj": (128, 128, True),
    "model.layers.0.mlp.up_proj": (128, 256, False),
    "model.layers.0.mlp.down_proj": (256, 128, False),
}
QUANTIZATION_CONFIG = {"bits": 4, "group_size": GROUP_SIZE, "quant_method": "awq", "version": "gemm",
                       "zero_point": True}


def tiny_model() -> nn.Module:
    """A module tree with the LAYERS names, plus a norm and an unquantized lm_head."""
    layer = nn.Module()
    layer.self_attn = nn.Module()
    layer.mlp = nn.Module()
    for name, (in_features, out_features, bias) in LAYERS.items():
        parent, child = name.split(".")[-2:]
        setattr(getattr(layer, parent), child, nn.Linear(in_features, out_features, bias=bias))
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList([layer])
    model.model.norm = nn.LayerNorm(128)
    model.lm_head = nn.Linear(128, 300, bias=False)
    return model


def autoawq_state_dict() -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
    """AutoAWQ tensors for LAYERS (quantized with the reference quantizer), and the unpacked weights."""
    state: dict[str, torch.Tensor] = {
        "model.norm.weight": torch.rand(128, dtype=torch.float16),
        "lm_head.weight": torch.randn(300, 128, dtype=torch.float16),
    }
    unpacked = {}
    for name, (in_features, out_features, bias) in LAYERS.items():
        q, zeros, scales = pseudo_quantize(torch.randn(out_features, in_features) * 0.02, GROUP_SIZE)
        packed = pack_format_a(q, zeros, scales, GROUP_SIZE, dtype=torch.float16)
        state.update({f"{name}.qweight": packed.qweight, f"{name}.qzeros": packed.qzeros,
                      f"{name}.scales": packed.scales})
        if bias:
            state[f"{name}.bias"] = torch.randn(out_features, dtype=torch.float16)
        unpacked[name] = (q, zeros, scales.half())
    return state, unpacked


def write_checkpoint(directory: Path, state: dict[str, torch.Tensor], *, shards: int = 1,
                     config: dict | None = None, legacy_quant_config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    if shards == 1:
        safetensors_torch.save_file(state, directory / "model.safetensors")
    else:
        weight_map = {}
        for i in range(shards):
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in keys[i::shards]}
            safetensors_torch.save_file(part, directory / file)
            weight_map.update(dict.fromkeys(part, file))
        (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model_config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 128}
    if config is not None:
        model_config["quantization_config"] = config
    (directory / "config.json").write_text(json.dumps(model_config))
    if legacy_quant_config is not None:
        (directory / "quant_config.json").write_text(json.dumps(legacy_quant_config))
    return directory


def check_loaded(checkpoint, state: dict[str, torch.Tensor], unpacked: dict[str, tuple]) -> None:
    assert sorted(checkpoint.linears) == sorted(LAYERS)
    assert sorted(checkpoint.tensors) == ["lm_head.weight", "model.norm.weight"]
    assert torch.equal(checkpoint.tensors["lm_head.weight"], state["lm_head.weight"])
    for name, (in_features, out_features, bias) in LAYERS.items():
        layer = checkpoint.linears[name]
        assert isinstance(layer, WQLinear)
        assert (layer.in_features, layer.out_features, layer.group_size) == (in_features, out_features, GROUP_SIZE)
        expected = pack_format_c(*unpacked[name], GROUP_SIZE, dtype=torch.float16)
        assert torch.equal(layer.qweight, expected.qweight)
        assert torch.equal(layer.scales, expected.scales)
        assert torch.equal(layer.scaled_zeros.view(torch.int16), expected.scaled_zeros.view(torch.int16))
        assert (layer.bias is not None) == bias
        if bias:
            assert torch.equal(layer.bias, state[f"{name}.bias"])


@pytest.mark.parametrize("shards", [1, 3])
def test_load_directory(tmp_path, shards):
    state, unpacked = autoawq_state_dict()
    path = write_checkpoint(tmp_path / "ckpt", state, shards=shards, config=QUANTIZATION_CONFIG)
    checkpoint = load_autoawq_checkpoint(path)
    assert checkpoint.quantization_config == QUANTIZATION_CONFIG
    check_loaded(checkpoint, state, unpacked)


def test_load_single_file_and_legacy_quant_config(tmp_path):
    state, unpacked = autoawq_state_dict()
    legacy = {"zero_point": True, "q_group_size": GROUP_SIZE, "w_bit": 4, "version": "GEMM"}
    path = write_checkpoint(tmp_path / "ckpt", state, legacy_quant_config=legacy)
    checkpoint = load_autoawq_checkpoint(path / "model.safetensors")
    assert checkpoint.quantization_config == legacy
    check_loaded(checkpoint, state, unpacked)


def test_load_state_dict_infers_group_size():
    state, unpacked = autoawq_state_dict()
    checkpoint = load_autoawq_checkpoint(state)
    check_loaded(checkpoint, state, unpacked)
    assert "model.layers.0.mlp.up_proj.qweight" in state  # the caller's dict is not consumed


def test_load_to_bf16():
    state, unpacked = autoawq_state_dict()
    checkpoint = load_autoawq_checkpoint(state, dtype=torch.bfloat16)
    layer = checkpoint.linears["model.layers.0.self_attn.q_proj"]
    assert layer.scales.dtype == layer.scaled_zeros.dtype == layer.bias.dtype == torch.bfloat16
    q, zeros, scales = unpacked["model.layers.0.self_attn.q_proj"]
    assert torch.equal(layer.scales[:2], scales.bfloat16().t())


def test_install_into_model():
    state, unpacked = autoawq_state_dict()
    model = tiny_model()
    checkpoint = load_autoawq_checkpoint(state)
    assert checkpoint.install(model) == list(checkpoint.linears)
    for name in LAYERS:
        assert model.get_submodule(name) is checkpoint.linears[name]
    assert isinstance(model.lm_head, nn.Linear)
    missing, unexpected = model.load_state_dict(checkpoint.tensors, strict=False)
    assert not unexpected and "model.norm.bias" in missing
    assert torch.equal(model.lm_head.weight.half(), state["lm_head.weight"])

    wrong = tiny_model()
    wrong.model.layers[0].mlp.up_proj = nn.Linear(128, 64)
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.up_proj must be an nn.Linear\(128, 256\)"):
        checkpoint.install(wrong)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ({"version": "gemv"}, NotImplementedError, "only AutoAWQ version 'gemm'"),
        ({"bits": 8}, NotImplementedError, "only 4-bit"),
        ({"zero_point": False}, NotImplementedError, "without zero points"),
        ({"quant_method": "gptq"}, NotImplementedError, "'gptq' is not AWQ"),
        ({"group_size": 128}, ValueError, "has group size 64 .* but the quantization config says 128"),
    ],
)
def test_config_errors(tmp_path, override, error, message):
    state, _ = autoawq_state_dict()
    path = write_checkpoint(tmp_path / "ckpt", state, config={**QUANTIZATION_CONFIG, **override})
    with pytest.raises(error, match=message):
        load_autoawq_checkpoint(path)


def test_missing_tensors(tmp_path):
    state, _ = autoawq_state_dict()
    del state["model.layers.0.mlp.up_proj.qzeros"]
    with pytest.raises(ValueError, match="model.layers.0.mlp.up_proj has a qweight but no .*qzeros"):
        load_autoawq_checkpoint(state)
    with pytest.raises(FileNotFoundError, match="no .safetensors file"):
        load_autoawq_checkpoint(tmp_path)


@pytest.mark.gpu
def test_loaded_model_forward_on_gpu():
    state, unpacked = autoawq_state_dict()
    checkpoint = load_autoawq_checkpoint(state, device="cuda")
    for name, (in_features, _, _) in LAYERS.items():
        layer = checkpoint.linears[name]
        assert layer.qweight.is_cuda
        for rows in (1, 5, 40):
            x = torch.randn(rows, in_features, device="cuda", dtype=torch.float16)
            weight = dequantize(*unpacked[name], GROUP_SIZE).cuda()
            expected = x.double() @ weight.T
            if layer.bias is not None:
                expected += layer.bias.double()
            # The checkpoint's weight is s*(q - z); the kernels use q*s + fp16(-(s*z)): well inside 2e-3.
            assert relerr(layer(x), expected) <= 2e-3, (name, rows)
