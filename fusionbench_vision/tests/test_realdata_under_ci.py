"""The root conftest's real-data rule: a `realdata` test that skips for missing data fails when `CI` is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''
import pytest

@pytest.mark.realdata
def test_needs_data():
    pytest.skip("offline data sources are not installed (scripts/install-offline-data.sh)")

@pytest.mark.realdata
def test_needs_a_network_namespace():
    pytest.skip("unshare -n is not permitted here")

def test_plain_skip():
    pytest.skip("not real data")
'''


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    realdata: needs offline data\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-rfs",
                           str(tmp_path / "test_sample.py")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


@pytest.mark.parametrize(("ci", "failed"), [(None, 0), ("false", 0), ("true", 1), ("1", 1)])
def test_realdata_skips_fail_only_under_ci(tmp_path, ci, failed):
    done = _run(tmp_path, ci)
    summary = done.stdout.strip().splitlines()[-1]
    if failed:
        assert done.returncode == 1, done.stdout
        assert "1 failed" in summary and "2 skipped" in summary, summary
        assert "real-data test skipped under CI" in done.stdout and "offline data sources" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "3 skipped" in summary and "failed" not in summary, summary
