"""Root pytest configuration: every test gets FusionBench's fixtures and a private cache."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")

pytest_plugins = ["fusionbench_core.testing"]

# pytest's importlib mode names test modules after their folders ('fusionbench_nlp.tests.test_x') and
# registers a placeholder package for a parent it cannot find, hiding the installed package of the same
# name. Importing the real packages first keeps them in place.
import importlib  # noqa: E402

for _package in ("fusionbench_core", "fusionbench_vision", "fusionbench_nlp"):
    try:
        importlib.import_module(_package)
    except ImportError:
        pass
