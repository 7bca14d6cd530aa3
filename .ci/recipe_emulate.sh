#!/usr/bin/env bash
# Runs recipe/build.sh for real in the environment conda-build gives a build script, then the
# recipe's test commands against the result, on a machine without conda.
#
#   .ci/recipe_emulate.sh [PYTHON]
#
# PYTHON (default: python3) is an interpreter with torch (a CUDA build) and pip's CUDA toolkit
# (site-packages/nvidia/cu<N>; or set CUDA_TOOLKIT to a toolkit root with bin/ include/ lib/ nvvm/).
# Everything happens in a throwaway directory (KEEP=1 keeps it); the interpreter's own
# environment is not modified.
#
# The toolkit is laid out as conda's packages lay it out, so that the build proves build.sh and
# awq_kernels/build_env.py handle that layout:
#   $BUILD_PREFIX/bin/nvcc, $BUILD_PREFIX/nvvm, $BUILD_PREFIX/targets/<triple>/include   (cuda-nvcc,
#       with nvcc's own headers and cudart's, but not the math libraries' headers)
#   $PREFIX/targets/<triple>/{include,lib}   (host: cuda-cudart-dev, libcublas-dev, libcusparse-dev,
#       libcusolver-dev; libcudart.so as the unversioned link name that cuda-cudart-dev ships)
#   $PREFIX: a virtual environment of PYTHON whose site-packages also sees PYTHON's (torch, pip,
#       setuptools) as a path entry, so the package installs into $PREFIX alone.
# The variant is the toolkit's CUDA (cuda_compiler_version), as conda-build would pass it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev_python="${1:-python3}"
triple="x86_64-linux"

toolkit="${CUDA_TOOLKIT:-$("${dev_python}" -c '
import glob, sys
homes = [h for e in sys.path for h in sorted(glob.glob(e + "/nvidia/cu[0-9]*")) if glob.glob(h + "/bin/nvcc")]
print(homes[0] if homes else "")')}"
if [[ -z "${toolkit}" || ! -x "${toolkit}/bin/nvcc" ]]; then
    echo "error: no CUDA toolkit found; pip install cuda-toolkit into ${dev_python}'s environment or set CUDA_TOOLKIT" >&2
    exit 1
fi
cuda_version="$("${toolkit}/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"

work="$(mktemp -d "${TMPDIR:-/tmp}/awq-recipe-emulate.XXXXXX")"
if [[ "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "${work}"' EXIT
fi
build_prefix="${work}/build_env"
prefix="${work}/host_env"
src_dir="${work}/work"
test_dir="${work}/test_tmp"
echo "== emulating conda-build in ${work} (CUDA ${cuda_version} from ${toolkit})"

# -- build prefix: nvcc and the headers of cuda-nvcc's own dependencies --------------------------
mkdir -p "${build_prefix}/bin" "${build_prefix}/targets/${triple}/include"
for tool in "${toolkit}"/bin/*; do
    ln -s "${tool}" "${build_prefix}/bin/"
done
ln -s "${toolkit}/nvvm" "${build_prefix}/nvvm"
for header in "${toolkit}"/include/*; do
    case "$(basename "${header}")" in
        cublas* | cusparse* | cusolver* | curand* | cufft*) ;;  # host -dev packages, not cuda-nvcc's
        *) ln -s "${header}" "${build_prefix}/targets/${triple}/include/" ;;
    esac
done

# -- host prefix: the -dev packages and a Python that sees torch ---------------------------------
"${dev_python}" -m venv --without-pip "${prefix}"
python="${prefix}/bin/python"
sp_dir="$("${python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"${dev_python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "${sp_dir}/zz-emulate-dev-env.pth"
mkdir -p "${prefix}/targets/${triple}/include" "${prefix}/targets/${triple}/lib"
for header in "${toolkit}"/include/*; do
    ln -s "${header}" "${prefix}/targets/${triple}/include/"
done
for library in "${toolkit}"/lib/*; do
    ln -s "${library}" "${prefix}/targets/${triple}/lib/"
done
cudart="$(find "${toolkit}/lib" -maxdepth 1 -name 'libcudart.so.[0-9]*' -printf '%f\n' | sort | head -n 1)"
ln -sf "${cudart}" "${prefix}/targets/${triple}/lib/libcudart.so"

# -- source: the repository's files (tracked and new, not ignored ones such as built .so) -------
mkdir -p "${src_dir}"
(cd "${root}" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} find {} -maxdepth 0 -type f -print0 \
    | tar --null -T - -cf -) | tar -C "${src_dir}" -xf -

# -- the build script, in conda-build's environment ----------------------------------------------
conda_env=(
    env -i
    HOME="${HOME}" LANG=C.UTF-8 TMPDIR="${work}"
    PATH="${build_prefix}/bin:${prefix}/bin:/usr/local/bin:/usr/bin:/bin"
    CONDA_BUILD=1
    PREFIX="${prefix}" BUILD_PREFIX="${build_prefix}" SRC_DIR="${src_dir}" RECIPE_DIR="${src_dir}/recipe"
    PYTHON="${python}" SP_DIR="${sp_dir}" PY_VER="$("${python}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    CPU_COUNT="${CPU_COUNT:-$(nproc)}"
    PKG_NAME=awq-kernels PKG_VERSION="$("${python}" -c 'import tomllib; print(tomllib.load(open("'"${root}"'/pyproject.toml", "rb"))["project"]["version"])')"
    PKG_BUILDNUM=0
    target_platform=linux-64 build_platform=linux-64
    cuda_compiler=cuda-nvcc cuda_compiler_version="${cuda_version}"
)
echo "== recipe/build.sh (cuda_compiler_version=${cuda_version})"
build_start=${SECONDS}
(cd "${src_dir}" && "${conda_env[@]}" bash recipe/build.sh)
echo "== build.sh finished in $((SECONDS - build_start)) s"

# -- the test phase: requirements, files, imports, commands of the rendered test section ---------
test_section="$("${dev_python}" "${root}/.ci/render_recipe.py" test-section --cuda "${cuda_version}")"
field() {
    "${dev_python}" -c 'import json, sys; [print(x) for x in json.loads(sys.argv[1]).get(sys.argv[2], [])]' \
        "${test_section}" "$1"
}
mkdir -p "${test_dir}"
while IFS= read -r requirement; do
    if [[ "${requirement}" == pip ]]; then
        # PYTHON's pip (seen through the .pth) as $PREFIX/bin/pip, where conda's would be
        printf '#!/bin/sh\nexec "%s" -m pip "$@"\n' "${python}" > "${prefix}/bin/pip"
        chmod +x "${prefix}/bin/pip"
    else
        "${python}" -m pip install --quiet "${requirement}"
    fi
done < <(field requires)
while IFS= read -r file; do
    cp "${src_dir}/recipe/${file}" "${test_dir}/"
done < <(field files)

failures=()
run_test() {
    echo "== test: $1"
    if (cd "${test_dir}" && "${conda_env[@]}" bash -c "$1"); then
        echo "   passed: $1"
    else
        echo "   FAILED: $1"
        failures+=("$1")
    fi
}
while IFS= read -r module; do
    run_test "python -c 'import ${module}'"
done < <(field imports)
while IFS= read -r command; do
    run_test "${command}"
done < <(field commands)

echo "== done in ${SECONDS} s; ${#failures[@]} test command(s) failed"
for failure in "${failures[@]}"; do
    echo "   FAILED: ${failure}"
done
[[ ${#failures[@]} -eq 0 ]]
