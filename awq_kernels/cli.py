"""The `awq-kernels` command line tool.

    awq-kernels doctor     # what this installation was built with, what it runs on, what is wrong

`doctor` exits non-zero when something would stop the kernels from working here, naming each
problem with its fix. Facts that matter only for building from source (no nvcc, an nvcc whose
version differs from torch's) are warnings, so a binary install on a GPU-less builder passes.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from collections.abc import Sequence

from awq_kernels import __version__, build_env


def arch_runs_on(archs: Sequence[str], capability: tuple[int, int]) -> bool:
    """Whether code compiled for `archs` (TORCH_CUDA_ARCH_LIST entries) runs on `capability`.

    SASS runs on the same major at an equal or higher minor (an "a"/"f" variant only on its own
    arch); PTX is JIT-compiled for any equal or newer GPU.
    """
    for entry in archs:
        match = re.match(r"^(\d+)\.(\d+)(a|f)?(\+PTX)?$", entry)
        if not match:
            continue
        arch = (int(match.group(1)), int(match.group(2)))
        if match.group(3):
            if arch == capability:
                return True
        elif arch[0] == capability[0] and arch[1] <= capability[1]:
            return True
        if match.group(4) and arch <= capability:
            return True
    return False


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def line(self, key: str, value: str) -> None:
        print(f"{key:<24} {value}")

    def warn(self, text: str) -> None:
        print(f"  warning: {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  PROBLEM: {text}")


def doctor() -> int:
    report = Report()
    report.line("awq-kernels", f"{__version__} (Python {platform.python_version()})")
    try:
        import torch
    except ImportError:
        report.problem("torch is not installed: pip install torch==2.11.0 (or conda install 'pytorch=*=cuda*')")
        return 1

    torch_cuda = torch.version.cuda
    report.line("torch", f"{torch.__version__} (CUDA {torch_cuda or 'none: CPU-only build'})")
    if not torch_cuda:
        report.problem("torch is a CPU-only build; install a CUDA build (pip install torch==2.11.0, "
                       "or conda install -c conda-forge 'pytorch=*=cuda*')")

    try:
        toolkit = build_env.find_cuda_toolkit()
        report.line("CUDA_HOME", f"{toolkit.home} ({toolkit.found_by})")
        report.line("nvcc", toolkit.version_str)
        if torch_cuda:
            for warning in _torch_cuda_warnings(toolkit.version, torch.__version__, torch_cuda):
                report.warn(warning)
    except build_env.BuildEnvError as exc:
        report.line("CUDA_HOME", "no usable CUDA toolkit")
        report.warn("only needed to build awq-kernels from source: " + str(exc).splitlines()[0])

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            capability = torch.cuda.get_device_capability(index)
            gpus.append(capability)
            report.line(f"GPU {index}", f"{torch.cuda.get_device_name(index)} (compute capability "
                                        f"{capability[0]}.{capability[1]})")
    else:
        report.line("GPUs", "none visible (kernels cannot run here; building and importing still work)")

    from awq_kernels import _extension

    for namespace in _extension.EXTENSIONS:
        try:
            info = _extension.build_info(namespace)
        except ImportError as exc:
            report.problem(f"extension {namespace} does not load: {exc}. Reinstall awq-kernels for this torch "
                           "(pip install --no-build-isolation --force-reinstall .)")
            continue
        archs = info.get("archs", "").split("/")
        report.line(f"{namespace}", f"built with CUDA {info.get('cuda_runtime')}, archs {' '.join(archs)}, "
                                    f"BF16 {'on' if info.get('bf16') == '1' else 'off'}")
        if torch_cuda and info.get("cuda_runtime") != ".".join(torch_cuda.split(".")[:2]):
            report.problem(f"{namespace} was built with CUDA {info.get('cuda_runtime')} but torch uses CUDA "
                           f"{torch_cuda}; rebuild awq-kernels against this torch")
        if info.get("bf16") != "1":
            report.warn(f"{namespace} was built without bfloat16 kernels (AWQ_KERNELS_ENABLE_BF16=0)")
        for index, capability in enumerate(gpus):
            if not arch_runs_on(archs, capability):
                report.problem(f"{namespace} has no code for GPU {index} (compute capability "
                               f"{capability[0]}.{capability[1]}); rebuild with "
                               f"TORCH_CUDA_ARCH_LIST=\"{capability[0]}.{capability[1]}\"")

    if report.problems:
        print(f"\n{len(report.problems)} problem(s) found.")
        return 1
    print("\nNo problems found.")
    return 0


def _torch_cuda_warnings(nvcc: tuple[int, int], torch_version: str, torch_cuda: str) -> list[str]:
    try:
        build_env.check_torch_cuda(nvcc, torch_version, torch_cuda, environ={})
    except build_env.BuildEnvError as exc:
        return ["building from source here would fail: " + str(exc).splitlines()[0]]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awq-kernels", description="awq-kernels tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check this installation and name every problem with its fix")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    return 2


if __name__ == "__main__":
    sys.exit(main())
