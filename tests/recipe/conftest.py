"""Shared loaders for the recipe tests: the recipe's files are scripts, loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def test_kernels() -> ModuleType:
    return load_script(ROOT / "recipe" / "test_kernels.py", "_recipe_test_kernels")


@pytest.fixture(scope="session")
def render() -> ModuleType:
    return load_script(ROOT / ".ci" / "render_recipe.py", "_render_recipe")
