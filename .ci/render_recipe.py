"""Render recipe/meta.yaml the way conda-build does, without conda-build (not installed here).

Used by tests/recipe (render every variant, then check it) and by .ci/recipe_emulate.sh (which
needs the rendered test section). The steps are conda-build's, in its order:

1. variants: conda_build_config.yaml, its own `# [selector]` lines applied, expanded into one dict
   per variant (keys in one zip_keys group advance together; other list keys multiply);
2. jinja2 over meta.yaml with the functions the recipe uses: compiler(), stdlib(), pin_compatible(),
   pin_subpackage() and the variables PKG_HASH, PKG_BUILDNUM, SP_DIR, PYTHON, environ;
3. selectors: a line ending in `# [expr]` is kept only if expr is true, evaluated with the
   platform names (linux, osx, win, unix, linux64, x86_64, ...) and the variant's keys; a name
   that is defined nowhere counts as False, as in conda-build;
4. YAML; then, as conda-build does, each host requirement that is a bare name with a variant key
   of the same name (`-` read as `_`) gets the variant's version appended.

CLI: `python .ci/render_recipe.py test-section --cuda 13.0 [--pytorch 2.11]` prints the rendered
test section of that variant as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[1]
META = ROOT / "recipe" / "meta.yaml"
CONFIG = ROOT / "conda_build_config.yaml"
SELECTOR = re.compile(r"^(?P<line>.*?)\s*#\s*\[(?P<expr>.*)\]\s*$")


def platform_names(target_platform: str) -> dict[str, Any]:
    system, arch = target_platform.split("-")
    return {
        "linux": system == "linux",
        "osx": system == "osx",
        "win": system == "win",
        "unix": system in ("linux", "osx"),
        "linux64": target_platform == "linux-64",
        "x86_64": arch == "64",
        "x86": arch in ("32", "64"),
        "aarch64": arch == "aarch64",
        "arm64": arch == "arm64",
        "ppc64le": arch == "ppc64le",
        "target_platform": target_platform,
        "build_platform": target_platform,
    }


def eval_selector(expr: str, namespace: dict[str, Any]) -> bool:
    """conda-build's rule: a name defined nowhere is replaced by False and the expression retried."""
    while True:
        try:
            return bool(eval(expr, {"__builtins__": {}}, dict(namespace)))  # noqa: S307 - our own recipe text
        except NameError as exc:
            missing = re.search(r"name '(\w+)' is not defined", str(exc)).group(1)
            expr = re.sub(rf"\b{missing}\b", "False", expr)


def select_lines(text: str, namespace: dict[str, Any]) -> str:
    kept = []
    for line in text.splitlines():
        match = SELECTOR.match(line)
        if match is None or line.lstrip().startswith("#"):
            kept.append(line)
        elif eval_selector(match.group("expr"), namespace):
            kept.append(match.group("line"))
    return "\n".join(kept) + "\n"


def load_variants(config: Path = CONFIG, target_platform: str = "linux-64") -> list[dict[str, Any]]:
    data = yaml.safe_load(select_lines(config.read_text(), platform_names(target_platform)))
    zip_keys = [list(group) for group in data.pop("zip_keys", [])]
    for group in zip_keys:
        lengths = {key: len(data[key]) for key in group}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"zip_keys group {group} has lists of different lengths: {lengths}")
    zipped = {key for group in zip_keys for key in group}
    dimensions = [
        [dict(zip(group, values, strict=True)) for values in zip(*(data[k] for k in group), strict=True)]
        for group in zip_keys
    ]
    dimensions += [[{key: value} for value in values] for key, values in data.items() if key not in zipped]
    variants = []
    for combination in itertools.product(*dimensions):
        variant: dict[str, Any] = {"target_platform": target_platform}
        for part in combination:
            variant.update(part)
        variants.append(variant)
    return variants


def _jinja_context(variant: dict[str, Any]) -> dict[str, Any]:
    platform = variant["target_platform"]

    def compiler(language: str) -> str:
        name = variant.get(f"{language}_compiler", {"c": "gcc", "cxx": "gxx", "cuda": "cuda-nvcc"}[language])
        version = variant.get(f"{language}_compiler_version")
        return f"{name}_{platform}" + (f" {version}" if version else "")

    def stdlib(language: str) -> str:
        version = variant.get(f"{language}_stdlib_version")
        return f"{variant.get(f'{language}_stdlib', 'sysroot')}_{platform}" + (f" {version}" if version else "")

    python = str(variant.get("python", "3.11")).split(".*")[0]
    return {
        **variant,
        "compiler": compiler,
        "stdlib": stdlib,
        "pin_compatible": lambda name, **_: name,
        "pin_subpackage": lambda name, **_: name,
        "PKG_HASH": "1234567",
        "PKG_BUILDNUM": "0",
        "SP_DIR": f"/opt/prefix/lib/python{python}/site-packages",
        "PYTHON": "/opt/prefix/bin/python",
        "environ": {},
    }


def render(variant: dict[str, Any], meta: Path = META) -> dict[str, Any]:
    """meta.yaml rendered for one variant (see the module docstring)."""
    text = jinja2.Environment(undefined=jinja2.Undefined).from_string(meta.read_text()).render(_jinja_context(variant))
    namespace = {**platform_names(variant["target_platform"]), **variant}
    python = re.match(r"(\d+)\.(\d+)", str(variant.get("python", "")))
    if python:
        namespace["py"] = int(python.group(1) + python.group(2))
    recipe = yaml.safe_load(select_lines(text, namespace)) or {}
    host = recipe.get("requirements", {}).get("host") or []
    for i, spec in enumerate(host):
        key = spec.replace("-", "_")
        if " " not in spec and key in variant:
            host[i] = f"{spec} {variant[key]}"
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    test = commands.add_parser("test-section", help="print the rendered test section of one variant as JSON")
    test.add_argument("--cuda", required=True, help="cuda_compiler_version of the variant")
    test.add_argument("--pytorch", help="pytorch of the variant (default: the first with that CUDA)")
    args = parser.parse_args(argv)
    for variant in load_variants():
        if variant["cuda_compiler_version"] == args.cuda and args.pytorch in (None, variant["pytorch"]):
            print(json.dumps(render(variant).get("test", {})))
            return 0
    print(f"error: no variant with CUDA {args.cuda} and pytorch {args.pytorch} in {CONFIG}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
