"""Fixtures of the mixing tests: one thread, a private cache."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache."""
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
