"""Build-environment checks, one test per situation of the foundation issue's table.

Each test builds a fake toolkit (a shell-script nvcc that prints a chosen version, headers as
empty files, a cudart soname) and fake torch versions, and checks the message names the problem
and the fix.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from awq_kernels import build_env
from awq_kernels.build_env import BuildEnvError


def make_toolkit(root: Path, version: str = "13.0", headers: tuple[str, ...] = build_env.REQUIRED_HEADERS,
                 cudart: str = "lib64/libcudart.so") -> Path:
    """A fake CUDA toolkit whose nvcc reports `version`."""
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {version}, V{version}.1'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    (root / "include").mkdir()
    for header in headers:
        (root / "include" / header).write_text("")
    (root / cudart).parent.mkdir(parents=True, exist_ok=True)
    (root / cudart).write_text("")
    return root


def find(tmp_path: Path, environ: dict | None = None, which_result: str | None = None,
         search_path: tuple[str, ...] = ()) -> build_env.CudaToolkit:
    return build_env.find_cuda_toolkit(
        environ=environ or {}, which=lambda _: which_result, search_path=search_path,
        default_home=tmp_path / "no-default-cuda",
    )


def test_no_cuda_home_and_no_nvcc(tmp_path: Path) -> None:
    with pytest.raises(BuildEnvError, match="nvcc was not found") as exc:
        find(tmp_path)
    assert "CUDA_HOME" in str(exc.value) and "cuda-toolkit" in str(exc.value) and "cuda-nvcc" in str(exc.value)


def test_explicit_cuda_home_is_used(tmp_path: Path) -> None:
    home = make_toolkit(tmp_path / "cuda-12.4", "12.4")
    toolkit = find(tmp_path, environ={"CUDA_HOME": str(home)})
    assert toolkit.home == home and toolkit.version == (12, 4) and toolkit.found_by == "$CUDA_HOME"
    assert toolkit.link_args() == [f"-L{home / 'lib64'}", "-lcudart"]


def test_broken_explicit_cuda_home_names_missing_files(tmp_path: Path) -> None:
    home = make_toolkit(tmp_path / "cuda", headers=("cuda_runtime_api.h",))
    with pytest.raises(BuildEnvError, match=r"CUDA_HOME=.* is not a complete CUDA toolkit") as exc:
        find(tmp_path, environ={"CUDA_HOME": str(home)})
    assert "cublas_v2.h" in str(exc.value) and "unset it" in str(exc.value)


def test_wrapper_script_resolves_to_real_toolkit(tmp_path: Path) -> None:
    real = make_toolkit(tmp_path / "cuda-13.0")
    wrapper_dir = tmp_path / "usr-local" / "bin"
    wrapper_dir.mkdir(parents=True)
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    toolkit = find(tmp_path, which_result=str(wrapper))
    assert toolkit.home == real
    assert str(wrapper) in toolkit.found_by and str(real / "bin" / "nvcc") in toolkit.found_by


def test_wrapper_script_to_headerless_toolkit_names_the_header(tmp_path: Path) -> None:
    real = make_toolkit(tmp_path / "cuda-13.0", headers=())
    wrapper_dir = tmp_path / "usr-local" / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    with pytest.raises(BuildEnvError, match="no complete CUDA toolkit") as exc:
        find(tmp_path, which_result=str(wrapper_dir / "nvcc"))
    assert "include/cuda_runtime_api.h" in str(exc.value)


def test_toolkit_lacking_cublas_headers_is_skipped_for_pip_toolkit(tmp_path: Path) -> None:
    """This machine's case: /usr/local/cuda has no cuBLAS headers; PyPI's cuda-toolkit is complete."""
    partial = make_toolkit(tmp_path / "usr-local-cuda", headers=("cuda_runtime_api.h",))
    site = tmp_path / "site-packages"
    pip_home = make_toolkit(site / "nvidia" / "cu13", cudart="lib/libcudart.so.13")
    toolkit = find(tmp_path, which_result=str(partial / "bin" / "nvcc"), search_path=(str(site),))
    assert toolkit.home == pip_home and "pip cuda-toolkit" in toolkit.found_by
    # pip's toolkit has only the versioned soname and no lib64/
    assert "-l:libcudart.so.13" in toolkit.link_args()


def test_nvcc_older_than_11(tmp_path: Path) -> None:
    home = make_toolkit(tmp_path / "cuda-10.2", "10.2")
    toolkit = find(tmp_path, environ={"CUDA_HOME": str(home)})
    with pytest.raises(BuildEnvError, match="only supported on CUDA 11 and above"):
        build_env.check_cuda_version(toolkit.version)


def test_nvcc_that_does_not_run(tmp_path: Path) -> None:
    home = make_toolkit(tmp_path / "cuda")
    (home / "bin" / "nvcc").write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    with pytest.raises(BuildEnvError, match=r"did not report a version \(exit 3\)"):
        find(tmp_path, environ={"CUDA_HOME": str(home)})


def test_version_mismatch_names_both_versions_and_fix() -> None:
    with pytest.raises(BuildEnvError) as exc:
        build_env.check_torch_cuda((12, 4), "2.11.0+cu130", "13.0", environ={})
    message = str(exc.value)
    assert "CUDA 12.4" in message and "CUDA 13.0" in message and "CUDA_HOME" in message
    assert build_env.ALLOW_MISMATCH_VAR in message


def test_version_mismatch_opt_out_warns_loudly() -> None:
    warnings = build_env.check_torch_cuda((12, 4), "2.11.0", "13.0", environ={build_env.ALLOW_MISMATCH_VAR: "1"})
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "12.4" in warnings[0]


def test_matching_versions_pass() -> None:
    assert build_env.check_torch_cuda((13, 0), "2.11.0", "13.0", environ={}) == []


def test_cpu_only_torch() -> None:
    with pytest.raises(BuildEnvError, match="CPU-only build.*needs a CUDA build of PyTorch"):
        build_env.check_torch_cuda((13, 0), "2.11.0+cpu", None, environ={})


def test_arch_list_from_environment_is_honoured_exactly() -> None:
    archs, source = build_env.resolve_arch_list({"TORCH_CUDA_ARCH_LIST": "8.6 9.0a;8.0+PTX"}, (13, 0), [(9, 0)])
    assert archs == ["8.6", "9.0a", "8.0+PTX"] and "TORCH_CUDA_ARCH_LIST" in source
    assert build_env.gencode_flags(archs, (13, 0)) == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_80,code=compute_80",
    ]


@pytest.mark.parametrize(
    ("cuda", "sass", "sm90a"), [((13, 0), "sm_90a", True), ((12, 0), "sm_90a", True), ((11, 8), "sm_90", False)]
)
def test_plain_9_0_is_built_as_sm90a_for_wgmma(cuda: tuple[int, int], sass: str, sm90a: bool) -> None:
    flags = build_env.gencode_flags(["8.0", "9.0+PTX"], cuda)
    num = sass.removeprefix("sm_")
    assert flags[1:] == [f"-gencode=arch=compute_{num},code={sass}", "-gencode=arch=compute_90,code=compute_90"]
    assert build_env.builds_sm90a(["8.0", "9.0+PTX"], cuda) is sm90a
    assert build_env.builds_sm90a(["8.0", "8.6"], cuda) is False


@pytest.mark.parametrize("bad", ["Ampere", "8", "6.1", ""])
def test_invalid_arch_entries_are_rejected(bad: str) -> None:
    with pytest.raises(BuildEnvError, match="TORCH_CUDA_ARCH_LIST"):
        build_env.resolve_arch_list({"TORCH_CUDA_ARCH_LIST": bad}, (13, 0), [])


def test_visible_gpus_decide_when_no_arch_list() -> None:
    archs, source = build_env.resolve_arch_list({}, (13, 0), [(9, 0), (8, 0), (9, 0)])
    assert archs == ["8.0", "9.0"] and "visible GPUs" in source


@pytest.mark.parametrize(
    ("cuda", "expected"),
    [
        ((11, 0), ["7.0", "8.0+PTX"]),
        ((11, 1), ["7.0", "8.0", "8.6+PTX"]),
        ((11, 8), ["7.0", "8.0", "8.6", "8.9", "9.0+PTX"]),
        ((12, 4), ["7.0", "8.0", "8.6", "8.9", "9.0+PTX"]),
        ((12, 8), ["7.0", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0+PTX"]),
        ((12, 9), ["7.0", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0+PTX"]),
        ((13, 0), ["7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "11.0", "12.0+PTX"]),
    ],
)
def test_default_arch_list_when_cross_compiling(cuda: tuple[int, int], expected: list[str]) -> None:
    archs, source = build_env.resolve_arch_list({}, cuda, [])
    assert archs == expected and "cross-compiling" in source


def test_nvcc_threads_from_cuda_11_2_and_max_jobs(tmp_path: Path) -> None:
    assert build_env.nvcc_thread_count((11, 1), ["8.0", "9.0"], {}) == 1
    assert build_env.nvcc_thread_count((11, 2), ["8.0", "9.0"], {}) == 2
    assert build_env.nvcc_thread_count((13, 0), ["8.0"] * 8, {"NVCC_THREADS": "3"}) == 3
    home = make_toolkit(tmp_path / "cuda")
    plan = build_env.plan_build("2.11.0", "13.0", (), environ={"CUDA_HOME": str(home), "MAX_JOBS": "5",
                                                              "TORCH_CUDA_ARCH_LIST": "8.0;9.0"},
                                which=lambda _: None, search_path=())
    assert plan.nvcc_flags()[-2:] == ["--threads", "2"]
    assert "MAX_JOBS=5" in plan.describe()


def test_bf16_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    home = make_toolkit(tmp_path / "cuda")
    common = {"CUDA_HOME": str(home), "TORCH_CUDA_ARCH_LIST": "7.5;9.0"}
    kwargs = {"which": lambda _: None, "search_path": ()}
    on = build_env.plan_build("2.11.0", "13.0", (), environ=common, **kwargs)
    off = build_env.plan_build("2.11.0", "13.0", (), environ={**common, build_env.BF16_VAR: "0"}, **kwargs)
    assert "-DENABLE_BF16" in on.nvcc_flags() and "-DENABLE_BF16" in on.cxx_flags()
    assert "-DENABLE_BF16" not in off.nvcc_flags()
    with pytest.raises(BuildEnvError, match=build_env.BF16_VAR):
        build_env.bf16_enabled({build_env.BF16_VAR: "maybe"})


def test_conda_build_prefix_supplies_headers_and_cudart(tmp_path: Path) -> None:
    """conda: nvcc in $BUILD_PREFIX/bin, -dev headers and cudart in $PREFIX/targets/<triple>/."""
    build_prefix = make_toolkit(tmp_path / "build_env", headers=(), cudart="bin/.keep")
    target = tmp_path / "host_env" / "targets" / "x86_64-linux"
    (target / "include").mkdir(parents=True)
    for header in build_env.REQUIRED_HEADERS:
        (target / "include" / header).write_text("")
    (target / "lib").mkdir()
    (target / "lib" / "libcudart.so").write_text("")
    environ = {"CUDA_HOME": str(build_prefix), "CONDA_BUILD": "1", "PREFIX": str(tmp_path / "host_env")}
    toolkit = find(tmp_path, environ=environ)
    assert target / "include" in toolkit.include_dirs and toolkit.cudart_dir == target / "lib"


def test_setup_py_names_the_setuptools_floor() -> None:
    """pip --no-build-isolation builds with the environment's setuptools: one older than pyproject.toml's
    license metadata needs (77) stops setup.py with the fix, before anything else."""
    setup_py = Path(__file__).resolve().parents[1] / "setup.py"
    script = ("import runpy, setuptools, sys; setuptools.__version__ = '75.8.0'; sys.argv = ['setup.py', '--version'];"
              f"runpy.run_path({str(setup_py)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "needs setuptools >= 77" in result.stderr and "this environment has 75.8.0" in result.stderr
    assert "pip install -U 'setuptools>=77'" in result.stderr
