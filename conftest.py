"""Root pytest configuration: every test gets FusionBench's fixtures and a private cache."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("FUSIONBENCH_PROGRESS", "0")
# `fb run` and `fb sweep` record into the result store ($FUSIONBENCH_STORE, else the cache's): tests
# record into a private one, never the user's (a test that wants another sets the variable itself).
import tempfile  # noqa: E402

os.environ["FUSIONBENCH_STORE"] = os.path.join(tempfile.mkdtemp(prefix="fb-test-store-"), "results.sqlite3")

# The cache the user (or `make test`, which builds the quick mini suites there first) configured,
# read before any fixture points FUSIONBENCH_CACHE at a private directory.
CONFIGURED_CACHE = os.environ.get("FUSIONBENCH_CACHE")

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


# --------------------------------------------------------------------------- real-data tests
# Tests marked `realdata` skip (naming the missing package) when the offline data sources of
# scripts/install-offline-data.sh are absent. CI installs those sources, so there a skip means the
# set-up is broken: with `CI` set, this one hook turns the skip of a `realdata` test into a failure.
# A skip for a missing platform capability (`unshare -n` refused by the container) is not about
# data and stays a skip.
import pytest  # noqa: E402

REALDATA_PLATFORM_SKIPS = ("unshare",)


@pytest.fixture
def configured_cache(monkeypatch):
    """Point FUSIONBENCH_CACHE back at the configured cache for one test (session fixtures may have moved it).

    The real-data tests of the quick mini suites use it on purpose: they check the very models
    `fb run` uses, and cost a build only where none exists yet.
    """
    if CONFIGURED_CACHE is None:
        monkeypatch.delenv("FUSIONBENCH_CACHE", raising=False)
    else:
        monkeypatch.setenv("FUSIONBENCH_CACHE", CONFIGURED_CACHE)


def realdata_required() -> bool:
    """Whether real-data tests must run rather than skip: true under CI (the ``CI`` variable set, not "false"/"0")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and item.get_closest_marker("realdata") and realdata_required()):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(word in reason for word in REALDATA_PLATFORM_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = f"real-data test skipped under CI, where the offline data must be installed: {reason}"
