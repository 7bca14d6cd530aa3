"""Build of awq-kernels: two CUDA extensions, checked before anything compiles.

`awq_kernels/build_env.py` decides everything environment-dependent (which CUDA toolkit, that its
version equals torch's, which archs, nvcc flags) and says how to fix what it rejects. It is loaded
by path because the package itself is not importable before it is built.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import setuptools
from setuptools import setup

ROOT = Path(__file__).resolve().parent

# pyproject.toml's license metadata (PEP 639) needs setuptools >= 77; with --no-build-isolation pip
# uses this environment's setuptools, whose error would not say so.
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(
        f"error: awq-kernels needs setuptools >= 77 to build, this environment has {setuptools.__version__}.\n"
        "With --no-build-isolation pip builds with the environment's setuptools: upgrade it first:\n"
        "  pip install -U 'setuptools>=77' wheel ninja"
    )


def _load_build_env():
    spec = importlib.util.spec_from_file_location("_awq_kernels_build_env", ROOT / "awq_kernels" / "build_env.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


build_env = _load_build_env()

try:
    import torch
except ImportError:
    sys.exit(
        "error: awq-kernels compiles against the torch installed in this environment, and none was found.\n"
        "Install torch first (pip install torch==2.11.0), then build without isolation:\n"
        "  pip install --no-build-isolation .\n"
        "(With build isolation pip would compile against a different, freshly downloaded torch.)"
    )


def _visible_capabilities() -> list[tuple[int, int]]:
    try:
        if torch.cuda.is_available():
            return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    except RuntimeError:
        pass
    return []


try:
    plan = build_env.plan_build(torch.__version__, torch.version.cuda, _visible_capabilities())
except build_env.BuildEnvError as exc:
    sys.exit(f"error: {exc}")
print(plan.describe(), flush=True)

# torch.utils.cpp_extension resolves CUDA_HOME when it is imported; give it ours first.
os.environ["CUDA_HOME"] = str(plan.toolkit.home)
from torch.utils import cpp_extension  # noqa: E402

cpp_extension.CUDA_HOME = str(plan.toolkit.home)


def _sources(*families: str) -> list[str]:
    """Every .cu/.cpp of the given csrc/ families (each kernel family is one directory)."""
    files: list[str] = []
    for family in families:
        for pattern in ("*.cu", "*.cpp"):
            files += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / family).glob(pattern))
    return files


def _extension(name: str, families: tuple[str, ...]) -> cpp_extension.CUDAExtension:
    ext = cpp_extension.CUDAExtension(
        name=name,
        sources=_sources(*families),
        include_dirs=[str(ROOT / "csrc"), *map(str, plan.toolkit.include_dirs)],
        extra_compile_args={"cxx": plan.cxx_flags(), "nvcc": plan.nvcc_flags()},
        extra_link_args=plan.toolkit.link_args(),
        py_limited_api=True,  # torch then defines Py_LIMITED_API (3.10, its own floor)
    )
    # torch adds `-lcudart` and CUDA_HOME/lib64; pip's toolkit has neither an unversioned
    # libcudart.so nor lib64, so cudart is linked through the toolkit's own link_args instead.
    ext.libraries = [lib for lib in ext.libraries if lib != "cudart"]
    return ext


AWQ_FAMILIES = ("awq_inference_engine", "layernorm", "w4a16", "rotary", "activation", "w8a8")
# The attention kernels are compiled once, into the ft_attention extension, which also registers
# them as awq_inference_engine.single_query_attention.
FT_ATTENTION_FAMILIES = ("ft_attention", "attention")

torch_major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])

setup(
    ext_modules=[
        _extension("awq_kernels._awq_inference_engine", AWQ_FAMILIES),
        _extension("awq_kernels._ft_attention", FT_ATTENTION_FAMILIES),
    ],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    # The binaries are tied to the torch they were compiled against (C++ ABI, CUDA version).
    install_requires=[f"torch=={torch_major_minor}.*"],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
