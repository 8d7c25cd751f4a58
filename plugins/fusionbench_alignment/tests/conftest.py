"""Fixtures of the alignment tests."""

from __future__ import annotations

import pytest
import torch

from fusionbench_alignment.testing import ToyPool

torch.set_num_threads(1)


@pytest.fixture
def toy_pool():
    """``toy_pool(models)`` builds a :class:`~fusionbench_alignment.testing.ToyPool`."""
    return ToyPool
