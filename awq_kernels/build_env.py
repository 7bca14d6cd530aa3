"""Build-environment checks for awq-kernels.

Pure Python on purpose: ``setup.py`` loads this file by path before the package (or even torch's
extension helpers) is importable, and ``awq-kernels doctor`` reuses it at run time. Every probe of
the outside world (environment variables, ``PATH`` lookup, running ``nvcc``, torch's version) is a
parameter, so the tests drive each failure with fake ``nvcc`` scripts and fake torch versions.

Every failure is a :class:`BuildEnvError` whose message says what is wrong and how to fix it: a
CUDA extension build should fail on the first line of its log, not after ten minutes of compiler
errors about a missing ``cublas_v2.h``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIN_CUDA = (11, 0)
# Set to 1 to build although nvcc's CUDA differs from the CUDA torch was built with.
ALLOW_MISMATCH_VAR = "AWQ_KERNELS_ALLOW_CUDA_MISMATCH"
# Set to 0 to compile without bfloat16 kernels (bf16 calls then raise a clear error).
BF16_VAR = "AWQ_KERNELS_ENABLE_BF16"
# Lowest compute capability our kernels are written for (warp shuffles with masks, fp16 math).
MIN_ARCH = (7, 0)

# Headers that torch's own CUDA headers (ATen/cuda/CUDAContext.h) pull in. A toolkit missing any
# of them cannot build a torch CUDA extension, whatever our own sources include.
REQUIRED_HEADERS = ("cuda_runtime_api.h", "cublas_v2.h", "cusparse.h", "cusolverDn.h")

INSTALL_HINT = (
    "Provide a complete CUDA toolkit whose version equals torch.version.cuda, then point CUDA_HOME at it:\n"
    "  * pip:   pip install 'cuda-toolkit[nvcc,cudart,cublas,cusparse,cusolver,curand,nvrtc,nvtx,cccl,crt,nvvm]==13.0.2'\n"
    "           (found automatically under site-packages/nvidia/cu13; match the version to your torch)\n"
    "  * conda: conda install -c conda-forge cuda-nvcc cuda-cudart-dev libcublas-dev libcusparse-dev "
    "libcusolver-dev cuda-version=<torch's CUDA>\n"
    "  * system: export CUDA_HOME=/usr/local/cuda-<version> (the directory holding bin/nvcc and include/)"
)


class BuildEnvError(RuntimeError):
    """A problem with the build environment; the message names the fix."""


@dataclass(frozen=True)
class CudaToolkit:
    """A CUDA toolkit that can build a torch extension."""

    home: Path
    nvcc: Path
    version: tuple[int, int]
    include_dirs: tuple[Path, ...]
    cudart_dir: Path
    cudart_file: str  # "libcudart.so", or a versioned soname such as "libcudart.so.13"
    found_by: str

    @property
    def version_str(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def link_args(self) -> list[str]:
        """Linker flags for cudart; pip's toolkit ships only the versioned soname."""
        if self.cudart_file == "libcudart.so":
            return [f"-L{self.cudart_dir}", "-lcudart"]
        return [f"-L{self.cudart_dir}", f"-l:{self.cudart_file}", f"-Wl,-rpath-link,{self.cudart_dir}"]


# --------------------------------------------------------------------------------------------
# Locating the toolkit
# --------------------------------------------------------------------------------------------


def _target_include_dirs(root: Path) -> list[Path]:
    """``include/`` plus conda's ``targets/<triple>/include`` layout."""
    dirs = [root / "include"]
    dirs += [Path(p) for p in sorted(glob.glob(str(root / "targets" / "*" / "include")))]
    return [d for d in dirs if d.is_dir()]


def _find_cudart(roots: Iterable[Path]) -> tuple[Path, str] | None:
    for root in roots:
        for libdir in (root / "lib64", root / "lib", *map(Path, sorted(glob.glob(str(root / "targets" / "*" / "lib"))))):
            if (libdir / "libcudart.so").exists():
                return libdir, "libcudart.so"
            versioned = sorted(libdir.glob("libcudart.so.[0-9]*"), key=lambda p: len(p.name))
            if versioned:
                return libdir, versioned[0].name
    return None


def nvcc_targets_of_script(nvcc: Path) -> list[Path]:
    """Absolute ``.../nvcc`` paths named inside a wrapper script (``exec /opt/cuda/bin/nvcc "$@"``)."""
    try:
        head = nvcc.read_bytes()[:4096]
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    text = head.decode("utf-8", "replace")
    return [Path(m) for m in re.findall(r"(/[^\s'\";|&]+/nvcc)\b", text) if Path(m) != nvcc]


def resolve_nvcc(nvcc: Path, depth: int = 5) -> Path:
    """Follow symlinks and wrapper scripts to the real ``nvcc`` binary."""
    real = Path(os.path.realpath(nvcc))
    if depth > 0:
        for target in nvcc_targets_of_script(real):
            if target.exists():
                return resolve_nvcc(target, depth - 1)
    return real


def pip_toolkit_homes(search_path: Sequence[str]) -> list[Path]:
    """``site-packages/nvidia/cu<major>`` trees installed by PyPI's ``cuda-toolkit``."""
    homes = []
    for entry in search_path:
        for home in sorted(glob.glob(os.path.join(entry, "nvidia", "cu[0-9]*"))):
            if (Path(home) / "bin" / "nvcc").exists():
                homes.append(Path(home))
    return homes


def _check_home(home: Path, extra_roots: Sequence[Path]) -> tuple[list[Path], tuple[Path, str] | None, list[str]]:
    """Include dirs, cudart and the list of missing files for a candidate CUDA_HOME.

    The extra roots come first: under conda-build they are the host prefix, whose ``-dev`` packages
    (``targets/<triple>/{include,lib}``) are what the package is built and run against, while
    ``home`` is the build prefix holding nvcc.
    """
    roots = [*extra_roots, home]
    include_dirs = [d for root in roots for d in _target_include_dirs(root)]
    missing = []
    if not (home / "bin" / "nvcc").exists():
        missing.append(str(home / "bin" / "nvcc"))
    for header in REQUIRED_HEADERS:
        if not any((d / header).exists() for d in include_dirs):
            missing.append(f"{home / 'include' / header}")
    cudart = _find_cudart(roots)
    if cudart is None:
        missing.append(f"{home / 'lib64'}/libcudart.so (or lib/libcudart.so.<major>)")
    return include_dirs, cudart, missing


def find_cuda_toolkit(
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    search_path: Sequence[str] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    default_home: Path = Path("/usr/local/cuda"),
) -> CudaToolkit:
    """Find a CUDA toolkit complete enough to build a torch extension.

    Order: ``CUDA_HOME`` / ``CUDA_PATH`` (taken as given: an explicit choice that is broken is an
    error, never silently replaced), then PyPI's ``cuda-toolkit`` in this Python's site-packages,
    then the ``nvcc`` on ``PATH`` (resolved through symlinks and wrapper scripts), then
    ``/usr/local/cuda``. Under conda-build, ``$PREFIX`` also supplies headers and libraries (the
    host environment's ``-dev`` packages live there, nvcc in ``$BUILD_PREFIX``).
    """
    environ = os.environ if environ is None else environ
    search_path = sys.path if search_path is None else search_path
    extra_roots = [Path(environ["PREFIX"])] if environ.get("CONDA_BUILD") and environ.get("PREFIX") else []

    explicit = [(var, environ[var]) for var in ("CUDA_HOME", "CUDA_PATH") if environ.get(var)]
    if explicit:
        var, value = explicit[0]
        home = Path(value)
        include_dirs, cudart, missing = _check_home(home, extra_roots)
        if missing:
            raise BuildEnvError(
                f"{var}={value} is not a complete CUDA toolkit; missing:\n  " + "\n  ".join(missing)
                + f"\nFix {var} (or unset it to let awq-kernels search), or complete that toolkit.\n" + INSTALL_HINT
            )
        return _make_toolkit(home, include_dirs, cudart, f"${var}", run)

    candidates: list[tuple[Path, str]] = [(h, "pip cuda-toolkit in site-packages") for h in pip_toolkit_homes(search_path)]
    path_nvcc = which("nvcc")
    if path_nvcc:
        real = resolve_nvcc(Path(path_nvcc))
        how = f"nvcc on PATH ({path_nvcc}" + (f" -> {real})" if str(real) != path_nvcc else ")")
        candidates.append((real.parent.parent, how))
    candidates.append((default_home, "default location"))

    rejected = []
    seen = set()
    for home, how in candidates:
        key = os.path.realpath(home)
        if key in seen or not home.exists():
            continue
        seen.add(key)
        include_dirs, cudart, missing = _check_home(home, extra_roots)
        if not missing:
            return _make_toolkit(home, include_dirs, cudart, how, run)
        rejected.append(f"{home} (from {how}) lacks: " + ", ".join(os.path.relpath(m, home) for m in missing))
    if not rejected:
        raise BuildEnvError(
            "nvcc was not found: CUDA_HOME is unset, no nvcc is on PATH, no pip cuda-toolkit is installed "
            f"and {default_home} does not exist.\n" + INSTALL_HINT
        )
    raise BuildEnvError(
        "nvcc was found, but no complete CUDA toolkit: torch's CUDA headers need "
        + ", ".join(REQUIRED_HEADERS) + ".\n  " + "\n  ".join(rejected) + "\n" + INSTALL_HINT
    )


def _make_toolkit(home: Path, include_dirs: list[Path], cudart: tuple[Path, str] | None, how: str, run: Callable[..., subprocess.CompletedProcess]) -> CudaToolkit:
    assert cudart is not None
    nvcc = home / "bin" / "nvcc"
    return CudaToolkit(
        home=home,
        nvcc=nvcc,
        version=nvcc_version(nvcc, run),
        include_dirs=tuple(include_dirs),
        cudart_dir=cudart[0],
        cudart_file=cudart[1],
        found_by=how,
    )


def nvcc_version(nvcc: Path, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> tuple[int, int]:
    """``(major, minor)`` from ``nvcc --version``."""
    try:
        proc = run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildEnvError(f"nvcc at {nvcc} could not be run: {exc}\n{INSTALL_HINT}") from exc
    match = re.search(r"release (\d+)\.(\d+)", proc.stdout or "")
    if proc.returncode != 0 or not match:
        raise BuildEnvError(
            f"nvcc at {nvcc} did not report a version (exit {proc.returncode}): "
            f"{(proc.stdout or '').strip()[:200]} {(proc.stderr or '').strip()[:200]}\n{INSTALL_HINT}"
        )
    return int(match.group(1)), int(match.group(2))


# --------------------------------------------------------------------------------------------
# Version agreement between nvcc and torch
# --------------------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    if not match:
        raise BuildEnvError(f"cannot parse a CUDA version from {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_cuda_version(version: tuple[int, int]) -> None:
    if version < MIN_CUDA:
        raise BuildEnvError(
            f"awq-kernels is only supported on CUDA 11 and above; this nvcc is CUDA {version[0]}.{version[1]}.\n"
            + INSTALL_HINT
        )


def check_torch_cuda(
    nvcc: tuple[int, int], torch_version: str, torch_cuda: str | None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Raise unless torch is a CUDA build whose CUDA major.minor equals nvcc's; returns warnings."""
    environ = os.environ if environ is None else environ
    if not torch_cuda:
        raise BuildEnvError(
            f"torch {torch_version} is a CPU-only build; awq-kernels needs a CUDA build of PyTorch.\n"
            "  * pip:   pip install torch==2.11.0   (the PyPI default for 2.11.0 is the CUDA 13.0 build)\n"
            "  * conda: conda install -c conda-forge 'pytorch=*=cuda*'"
        )
    torch_mm = parse_version(torch_cuda)
    if torch_mm == nvcc:
        return []
    message = (
        f"nvcc is CUDA {nvcc[0]}.{nvcc[1]} but torch {torch_version} was built with CUDA {torch_cuda}. "
        "Extensions built by one CUDA and loaded into a torch built by another fail at import or "
        f"misbehave at run time.\nFix: use a CUDA {torch_mm[0]}.{torch_mm[1]} toolkit (set CUDA_HOME), or "
        f"install a torch built for CUDA {nvcc[0]}.{nvcc[1]}.\n{INSTALL_HINT}"
    )
    if environ.get(ALLOW_MISMATCH_VAR) == "1":
        return [
            "!" * 78 + f"\nWARNING: {ALLOW_MISMATCH_VAR}=1 set, building anyway although:\n{message}\n" + "!" * 78
        ]
    raise BuildEnvError(message + f"\n(To build anyway, at your own risk: {ALLOW_MISMATCH_VAR}=1.)")


# --------------------------------------------------------------------------------------------
# Target architectures and flags
# --------------------------------------------------------------------------------------------


# CUDA majors whose GPU architectures default_arch_list knows; another major may have dropped or
# added some, so it needs an explicit TORCH_CUDA_ARCH_LIST.
KNOWN_CUDA_MAJORS = (11, 12, 13)


def default_arch_list(cuda: tuple[int, int]) -> list[str]:
    """Archs built when no GPU is visible (cross-compiling), newest with PTX for future GPUs.

    The conda recipe builds exactly these (``recipe/build.sh`` asks for them through the
    ``default-arch-list`` command below): 12.x up to 9.0, plus 10.0 and 12.0 from 12.8; 13.x from
    7.5 upward.
    """
    if cuda[0] not in KNOWN_CUDA_MAJORS:
        raise BuildEnvError(
            f"awq-kernels does not know which GPU architectures CUDA {cuda[0]}.{cuda[1]} supports "
            f"(known: {', '.join(f'{m}.x' for m in KNOWN_CUDA_MAJORS)}); set TORCH_CUDA_ARCH_LIST, "
            "for example TORCH_CUDA_ARCH_LIST='8.0;9.0+PTX'"
        )
    archs = ["7.0", "8.0"]
    if cuda >= (11, 1):
        archs.append("8.6")
    if cuda >= (11, 8):
        archs += ["8.9", "9.0"]
    if cuda >= (12, 8):
        archs += ["10.0", "12.0"]
    if cuda >= (13, 0):
        # CUDA 13 dropped Volta; Turing is the floor and Thor (11.0) joined.
        archs = ["7.5"] + [a for a in archs if a != "7.0"] + ["11.0"]
        archs.sort(key=lambda a: parse_version(a))
    archs[-1] += "+PTX"
    return archs


_ARCH_RE = re.compile(r"^(\d+)\.(\d+)(a|f)?(\+PTX)?$")


def parse_arch_list(text: str) -> list[str]:
    """``TORCH_CUDA_ARCH_LIST`` entries (``;`` or space separated), validated, order kept."""
    entries = [e for e in re.split(r"[;\s]+", text.strip()) if e]
    if not entries:
        raise BuildEnvError("TORCH_CUDA_ARCH_LIST is set but empty; unset it or list archs such as '8.0;9.0'")
    for entry in entries:
        match = _ARCH_RE.match(entry)
        if not match:
            raise BuildEnvError(
                f"TORCH_CUDA_ARCH_LIST entry {entry!r} is not of the form 8.0, 9.0a or 9.0+PTX "
                "(named archs such as 'Ampere' are not accepted: write the numbers)"
            )
        if (int(match.group(1)), int(match.group(2))) < MIN_ARCH:
            raise BuildEnvError(
                f"TORCH_CUDA_ARCH_LIST entry {entry!r}: awq-kernels needs compute capability "
                f"{MIN_ARCH[0]}.{MIN_ARCH[1]} or newer"
            )
    return entries


def resolve_arch_list(
    environ: Mapping[str, str], cuda: tuple[int, int], visible_capabilities: Sequence[tuple[int, int]]
) -> tuple[list[str], str]:
    """The arch list and a sentence saying where it came from."""
    text = environ.get("TORCH_CUDA_ARCH_LIST")
    if text is not None:
        return parse_arch_list(text), "from TORCH_CUDA_ARCH_LIST"
    if visible_capabilities:
        caps = sorted(set(visible_capabilities))
        archs = [f"{major}.{minor}" for major, minor in caps]
        return archs, "for the visible GPUs (set TORCH_CUDA_ARCH_LIST to build for others)"
    return default_arch_list(cuda), f"default for CUDA {cuda[0]}.{cuda[1]} (no GPU visible: cross-compiling)"


# Hopper's warpgroup MMA (wgmma) and setmaxnreg exist only in the arch-specific sm_90a target (CUDA
# >= 12.0). Its SASS runs on every compute capability 9.0 GPU (H100, H200, GH200), which are all the
# GPUs that plain sm_90 SASS runs on, so a "9.0" entry is built as sm_90a: nothing is lost, and the
# wgmma kernels can be chosen at run time. PTX ("+PTX") stays portable compute_90.
SM90A_MIN_CUDA = (12, 0)


def sass_arch(entry: str, cuda: tuple[int, int]) -> str:
    """The ``sm_`` number that an arch-list entry is compiled to, e.g. ``"90a"``."""
    match = _ARCH_RE.match(entry)
    assert match, entry
    num = f"{match.group(1)}{match.group(2)}{match.group(3) or ''}"
    return "90a" if num == "90" and cuda >= SM90A_MIN_CUDA else num


def gencode_flags(arch_list: Sequence[str], cuda: tuple[int, int]) -> list[str]:
    """``-gencode`` flags: SASS for each entry, plus PTX where it says ``+PTX``."""
    flags = []
    for entry in arch_list:
        match = _ARCH_RE.match(entry)
        assert match, entry
        sass = sass_arch(entry, cuda)
        flags.append(f"-gencode=arch=compute_{sass},code=sm_{sass}")
        if match.group(4):
            num = f"{match.group(1)}{match.group(2)}{match.group(3) or ''}"
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def builds_sm90a(arch_list: Sequence[str], cuda: tuple[int, int]) -> bool:
    return any(sass_arch(entry, cuda) == "90a" for entry in arch_list)


def nvcc_thread_count(cuda: tuple[int, int], arch_list: Sequence[str], environ: Mapping[str, str]) -> int:
    """``nvcc --threads`` (CUDA >= 11.2 compiles the archs of one file in parallel); 1 = off."""
    if cuda < (11, 2):
        return 1
    if environ.get("NVCC_THREADS"):
        return max(1, int(environ["NVCC_THREADS"]))
    return max(1, min(len(arch_list), 4))


def bf16_enabled(environ: Mapping[str, str]) -> bool:
    value = environ.get(BF16_VAR, "1").strip().lower()
    if value not in ("0", "1", "true", "false", "on", "off"):
        raise BuildEnvError(f"{BF16_VAR}={value!r}: expected 1 or 0")
    return value in ("1", "true", "on")


@dataclass
class BuildPlan:
    toolkit: CudaToolkit
    torch_version: str
    torch_cuda: str
    arch_list: list[str]
    arch_source: str
    nvcc_threads: int
    max_jobs: str
    bf16: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def defines(self) -> list[str]:
        """Macros for both compilers; the extension reports them back through ``build_info``.

        No commas or quotes in values: nvcc splits ``-D`` values at commas.
        """
        defines = [
            f"-DAWQ_KERNELS_ARCH_LIST={'/'.join(self.arch_list)}",
            f"-DAWQ_KERNELS_NVCC_VERSION={self.toolkit.version_str}",
        ]
        if self.bf16:
            defines.append("-DENABLE_BF16")
        if builds_sm90a(self.arch_list, self.toolkit.version):
            defines.append("-DAWQ_KERNELS_SM90A")
        return defines

    def nvcc_flags(self) -> list[str]:
        flags = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", *self.defines]
        # torch adds -D__CUDA_NO_HALF_OPERATORS__ and friends; our kernels use the intrinsics.
        flags += ["-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                  "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__"]
        flags += gencode_flags(self.arch_list, self.toolkit.version)
        if self.nvcc_threads > 1:
            flags += ["--threads", str(self.nvcc_threads)]
        return flags

    def cxx_flags(self) -> list[str]:
        return ["-O3", "-std=c++17", *self.defines]

    def describe(self) -> str:
        lines = [
            f"awq-kernels build: CUDA_HOME={self.toolkit.home} ({self.toolkit.found_by})",
            f"  nvcc {self.toolkit.version_str}; torch {self.torch_version} (CUDA {self.torch_cuda})",
            f"  TORCH_CUDA_ARCH_LIST={';'.join(self.arch_list)} [{self.arch_source}]",
            f"  nvcc --threads {self.nvcc_threads}; MAX_JOBS={self.max_jobs}; BF16 {'on' if self.bf16 else 'off'}",
            f"  cudart: {self.toolkit.cudart_dir / self.toolkit.cudart_file}",
        ]
        return "\n".join(lines + self.warnings)


def plan_build(
    torch_version: str,
    torch_cuda: str | None,
    visible_capabilities: Sequence[tuple[int, int]] = (),
    environ: Mapping[str, str] | None = None,
    **find_kwargs,
) -> BuildPlan:
    """Every check, in the order a user should see failures; returns what setup.py needs."""
    environ = os.environ if environ is None else environ
    toolkit = find_cuda_toolkit(environ=environ, **find_kwargs)
    check_cuda_version(toolkit.version)
    warnings = check_torch_cuda(toolkit.version, torch_version, torch_cuda, environ)
    arch_list, arch_source = resolve_arch_list(environ, toolkit.version, visible_capabilities)
    return BuildPlan(
        toolkit=toolkit,
        torch_version=torch_version,
        torch_cuda=str(torch_cuda),
        arch_list=arch_list,
        arch_source=arch_source,
        nvcc_threads=nvcc_thread_count(toolkit.version, arch_list, environ),
        max_jobs=environ.get("MAX_JOBS", "unset (torch uses all cores)"),
        bf16=bf16_enabled(environ),
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------------
# Command line (used by recipe/build.sh, so the recipe applies these rules rather than a copy)
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python awq_kernels/build_env.py", description="awq-kernels build-environment checks"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    arch = commands.add_parser(
        "default-arch-list", help="print the ';'-joined archs built for a CUDA version when no GPU is visible"
    )
    arch.add_argument("cuda_version", help="major.minor, e.g. 13.0")
    check = commands.add_parser(
        "check", help="run every build check against this Python's torch and print the build plan"
    )
    check.add_argument("--expect-cuda", metavar="X.Y", help="also fail unless nvcc is this CUDA major.minor")
    args = parser.parse_args(argv)
    try:
        if args.command == "default-arch-list":
            print(";".join(default_arch_list(parse_version(args.cuda_version))))
            return 0
        import torch  # only here: the rest of this module must not need torch

        plan = plan_build(torch.__version__, torch.version.cuda)
        if args.expect_cuda and plan.toolkit.version != parse_version(args.expect_cuda):
            raise BuildEnvError(
                f"nvcc at {plan.toolkit.nvcc} is CUDA {plan.toolkit.version_str}, but CUDA {args.expect_cuda} "
                "was asked for (cuda_compiler_version); the build environment has the wrong cuda-nvcc"
            )
        print(plan.describe())
    except BuildEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
