"""Shared test setup: the `gpu` marker skips (with its reason) where no CUDA GPU is visible."""

from __future__ import annotations

import pytest
import torch

GPU_SKIP_REASON = "no CUDA GPU visible: GPU kernel test skipped (run on a machine with a GPU)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_seed(request: pytest.FixtureRequest) -> None:
    """A different but reproducible random stream per test (seeded from its id)."""
    torch.manual_seed(hash(request.node.nodeid) % (2**31))
