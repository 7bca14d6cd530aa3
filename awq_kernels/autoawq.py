"""Loading AutoAWQ checkpoints (Format A, ``version: "gemm"``) onto awq-kernels ``WQLinear`` layers.

An AutoAWQ checkpoint is a directory with ``config.json`` (whose ``quantization_config`` holds
``bits``, ``group_size``, ``zero_point``, ``version``; older exports write ``quant_config.json`` with
``w_bit``, ``q_group_size``, ``zero_point``, ``version``) and one or more ``*.safetensors`` files.
Each quantized linear layer ``<name>`` has ``<name>.qweight`` (int32 ``[K, N/8]``), ``<name>.qzeros``
(int32 ``[K/G, N/8]``), ``<name>.scales`` (``[K/G, N]``) and optionally ``<name>.bias``. The layers are
converted to Format C (TinyChat v2) at load time; every other tensor is returned as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from awq_kernels.modules import WQLinear
from awq_kernels.quantization import convert_a_to_c, format_a_group_size

_LINEAR_SUFFIXES = ("qweight", "qzeros", "scales")


@dataclass
class AutoAWQCheckpoint:
    """A loaded AutoAWQ checkpoint.

    Attributes:
        linears: the quantized layers as :class:`WQLinear`, keyed by module name
            (``"model.layers.0.self_attn.q_proj"``).
        tensors: every other tensor of the checkpoint (embeddings, norms, unquantized layers), by key.
        quantization_config: the checkpoint's quantization config (empty for a bare state dict).
    """

    linears: dict[str, WQLinear]
    tensors: dict[str, torch.Tensor]
    quantization_config: dict[str, Any] = field(default_factory=dict)

    def install(self, model: nn.Module) -> list[str]:
        """Replace each ``nn.Linear`` of ``model`` named in :attr:`linears` by its ``WQLinear``.

        The other tensors are not touched (load them with ``model.load_state_dict(ckpt.tensors,
        strict=False)``). Returns the replaced names; raises if a name is missing from ``model`` or
        names a module of another shape.
        """
        for name, layer in self.linears.items():
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            old = getattr(parent, child_name, None)
            if not isinstance(old, nn.Linear) or (old.in_features, old.out_features) != (
                layer.in_features,
                layer.out_features,
            ):
                raise ValueError(
                    f"install: {name} must be an nn.Linear({layer.in_features}, {layer.out_features}) in the "
                    f"model, found {old!r}"
                )
            setattr(parent, child_name, layer)
        return list(self.linears)


def load_autoawq_checkpoint(
    source: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
    *,
    quantization_config: Optional[Mapping[str, Any]] = None,
    dtype: Optional[torch.dtype] = None,
    device: Union[str, torch.device] = "cpu",
) -> AutoAWQCheckpoint:
    """Load an AutoAWQ "GEMM" checkpoint and convert its quantized layers to :class:`WQLinear`.

    Args:
        source: a checkpoint directory, one ``.safetensors`` file, or a state dict.
        quantization_config: overrides the one read from ``config.json`` / ``quant_config.json``
            (next to the files). For a state dict without a config, the group size of each layer is
            inferred from its shapes.
        dtype: dtype of the layers (fp16 or bf16); defaults to the dtype of each layer's scales.
        device: where the layers (and the other tensors) are placed; the conversion runs there.
    """
    if isinstance(source, Mapping):
        state_dict = dict(source)
        config = dict(quantization_config or {})
    else:
        path = Path(source)
        state_dict = _read_safetensors(path)
        config = dict(quantization_config) if quantization_config is not None else _read_config(path)
    expected_group_size = _check_config(config)

    names = sorted(key[: -len(".qweight")] for key in state_dict if key.endswith(".qweight"))
    linears: dict[str, WQLinear] = {}
    for name in names:
        missing = [f"{name}.{s}" for s in _LINEAR_SUFFIXES if f"{name}.{s}" not in state_dict]
        if missing:
            raise ValueError(f"load_autoawq_checkpoint: {name} has a qweight but no {', '.join(missing)}")
        qweight, qzeros, scales = (state_dict.pop(f"{name}.{s}").to(device) for s in _LINEAR_SUFFIXES)
        bias = state_dict.pop(f"{name}.bias", None)
        linears[name] = _to_wqlinear(name, qweight, qzeros, scales, bias, expected_group_size, dtype)
    tensors = {key: t.to(device) for key, t in state_dict.items()}
    return AutoAWQCheckpoint(linears=linears, tensors=tensors, quantization_config=config)


def _to_wqlinear(
    name: str,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    bias: Optional[torch.Tensor],
    expected_group_size: Optional[int],
    dtype: Optional[torch.dtype],
) -> WQLinear:
    in_features, out_features = qweight.shape[0], 8 * qweight.shape[1]
    group_size = format_a_group_size(qweight, scales)
    if expected_group_size is not None and expected_group_size not in (-1, group_size):
        raise ValueError(
            f"load_autoawq_checkpoint: {name} has group size {group_size} (K={in_features}, "
            f"{scales.shape[0]} groups) but the quantization config says {expected_group_size}"
        )
    packed = convert_a_to_c(qweight, qzeros, scales, dtype=dtype)
    layer = WQLinear(4, group_size, in_features, out_features, bias is not None, qweight.device, packed.scales.dtype)
    layer.qweight.copy_(packed.qweight)
    layer.scales.copy_(packed.scales)
    layer.scaled_zeros.copy_(packed.scaled_zeros)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ImportError("loading AutoAWQ checkpoints needs the safetensors package (pip install safetensors)") from exc
    if path.is_file():
        files = [path]
    else:
        index = path / "model.safetensors.index.json"
        if index.is_file():
            files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
        else:
            files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"load_autoawq_checkpoint: no .safetensors file in {path}")
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        state_dict.update(load_file(file))
    return state_dict


def _read_config(path: Path) -> dict[str, Any]:
    """``quantization_config`` of ``config.json``, else ``quant_config.json``, else empty."""
    directory = path if path.is_dir() else path.parent
    config_file, quant_config_file = directory / "config.json", directory / "quant_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text()).get("quantization_config")
        if config is not None:
            return dict(config)
    if quant_config_file.is_file():
        return dict(json.loads(quant_config_file.read_text()))
    return {}


def _check_config(config: Mapping[str, Any]) -> Optional[int]:
    """Reject what we cannot run; returns the configured group size (None when absent)."""
    method = str(config.get("quant_method", "awq")).lower()
    bits = config.get("bits", config.get("w_bit", 4))
    version = str(config.get("version", "gemm")).lower()
    zero_point = config.get("zero_point", True)
    if method != "awq":
        raise NotImplementedError(f"load_autoawq_checkpoint: quant_method {method!r} is not AWQ")
    if bits != 4:
        raise NotImplementedError(f"load_autoawq_checkpoint: only 4-bit checkpoints are supported, got bits={bits}")
    if version != "gemm":
        raise NotImplementedError(
            f"load_autoawq_checkpoint: only AutoAWQ version 'gemm' (Format A) is supported, got {version!r}"
        )
    if not zero_point:
        raise NotImplementedError("load_autoawq_checkpoint: checkpoints without zero points are not supported")
    group_size = config.get("group_size", config.get("q_group_size"))
    return None if group_size is None else int(group_size)
