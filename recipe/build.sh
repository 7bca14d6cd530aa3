#!/usr/bin/env bash
# conda-build runs this in $SRC_DIR (a copy of the repository) with the host environment in
# $PREFIX and the build tools (compilers, nvcc) in $BUILD_PREFIX. Every environment check is the
# package's own (awq_kernels/build_env.py, which setup.py runs too): none is repeated here.
set -euxo pipefail

: "${cuda_compiler_version:?is not set: build with 'conda build recipe/' (variants from conda_build_config.yaml)}"
build_env="${SRC_DIR}/awq_kernels/build_env.py"

# conda's nvcc is $BUILD_PREFIX/bin/nvcc; the CUDA headers and libraries it compiles and links
# against are the host's -dev packages in $PREFIX/targets/<triple>/{include,lib}, which
# build_env.py adds to the toolkit when CONDA_BUILD is set (conda-build sets it).
export CUDA_HOME="${BUILD_PREFIX}"

# No GPU on builders: compile for every architecture this CUDA release supports, by the package's
# per-CUDA rules (12.x up to 9.0, plus 10.0 and 12.0 from 12.8; 13.x from 7.5 upward). An unknown
# CUDA release fails here, with a message.
TORCH_CUDA_ARCH_LIST="$("${PYTHON}" "${build_env}" default-arch-list "${cuda_compiler_version}")"
export TORCH_CUDA_ARCH_LIST

# bfloat16 kernels are part of the interface: on, whatever the calling environment says; and never
# build against a pytorch of another CUDA.
export AWQ_KERNELS_ENABLE_BF16=1
unset AWQ_KERNELS_ALLOW_CUDA_MISMATCH

# One compile job per CPU, at most 4: each nvcc also runs up to 4 threads (one per arch) and needs
# 1-2 GB per thread, and more parallel jobs run CI builders out of memory.
max_jobs="${CPU_COUNT:-1}"
if (( max_jobs > 4 )); then
    max_jobs=4
fi
export MAX_JOBS="${max_jobs}"

# Fail in seconds with the fix, not after minutes of compiling: a complete toolkit, nvcc's CUDA
# equal to pytorch's and to this variant's cuda_compiler_version.
"${PYTHON}" "${build_env}" check --expect-cuda "${cuda_compiler_version}"

"${PYTHON}" -m pip install . -vv --no-deps --no-build-isolation
