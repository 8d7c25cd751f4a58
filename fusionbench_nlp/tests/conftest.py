"""Fixtures of the NLP suite tests: one tiny hub per session, pointed at through the environment."""

from __future__ import annotations

import os

import pytest


os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory):
    """Tiny random GPT-2 / Flan-T5 models, LoRA adapters and GLUE under the real hub ids (built once)."""
    import torch

    torch.set_num_threads(1)
    from fusionbench_nlp.tiny_hub import build_tiny_hub

    return build_tiny_hub(tmp_path_factory.mktemp("nlp-hub"))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """A FusionBench cache shared by the tests of a session (tokenised sets are built once)."""
    return tmp_path_factory.mktemp("nlp-cache")


@pytest.fixture
def nlp_env(tiny_hub, shared_cache, monkeypatch, tmp_path_factory):
    """Point model root, data root and caches at the tiny hub, offline; returns the hub."""
    for key, value in tiny_hub.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(shared_cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(shared_cache / "hf-datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("FUSIONBENCH_PROGRESS", "0")
    return tiny_hub
