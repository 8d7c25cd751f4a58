"""Root pytest configuration: every test gets FusionBench's fixtures and a private cache."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")

pytest_plugins = ["fusionbench_core.testing"]
