"""Loading of the compiled extensions, once, with their shape functions registered."""

from __future__ import annotations

import functools
import importlib

import torch

from awq_kernels import _meta

EXTENSIONS = ("awq_inference_engine", "ft_attention")
# The shared objects behind each op namespace: awq_inference_engine's single_query_attention is
# implemented in the ft_attention extension (compiled once, registered under both namespaces).
_LIBRARIES = {"awq_inference_engine": ("_awq_inference_engine", "_ft_attention"), "ft_attention": ("_ft_attention",)}


@functools.cache
def load(namespace: str) -> torch._ops._OpNamespace:
    """Import `awq_kernels._<namespace>` (registering its ops) and return `torch.ops.<namespace>`."""
    if namespace not in EXTENSIONS:
        raise ValueError(f"unknown extension {namespace!r}; expected one of {EXTENSIONS}")
    for library in _LIBRARIES[namespace]:
        try:
            importlib.import_module(f"awq_kernels.{library}")
        except ImportError as exc:
            raise ImportError(
                f"the compiled extension awq_kernels.{library} could not be loaded ({exc}). "
                "Run `awq-kernels doctor` to see what is wrong with this installation."
            ) from exc
    _meta.register(namespace)
    return getattr(torch.ops, namespace)


def build_info(namespace: str) -> dict[str, str]:
    """What the extension was compiled with: cuda_runtime, archs, bf16, sm90a."""
    text = load(namespace).build_info()
    return dict(item.split("=", 1) for item in text.split(";"))


def sm90a_built() -> bool:
    """The extension has the Hopper wgmma kernels (9.0 in the arch list, built as sm_90a)."""
    return build_info("awq_inference_engine").get("sm90a") == "1"


def sm90a_runs(device: torch.device | int | None = None) -> bool:
    """The wgmma kernels can run on `device` (default: the current CUDA device): an sm_90a build on
    a compute capability 9.0 GPU."""
    return sm90a_built() and torch.cuda.is_available() and torch.cuda.get_device_capability(device) == (9, 0)
