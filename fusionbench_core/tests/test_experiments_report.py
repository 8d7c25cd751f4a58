"""`fb plot` and `fb report` on a hand-made store; the page rendered in headless Chromium (no torch needed)."""

from __future__ import annotations

import os
import re

import pytest

from fusionbench_core.experiments.store import open_store

pytest.importorskip("matplotlib")


def report(method, lam, seed, test, val):
    """A two-task run report with test and validation accuracies per task."""
    def split(values):
        return {"tasks": {"a": {"accuracy": values[0]}, "b": {"accuracy": values[1]}},
                "average": {"accuracy": sum(values) / 2}}

    return {"method": method, "hyperparameters": {"scaling_factor": lam} if lam is not None else {},
            "modelpool": {"name": "toy"}, "taskpool": {"name": "toy"}, "tasks": split(test)["tasks"],
            "average": split(test)["average"], "cost": {"wall_s": 0.5}, "seed": seed, "versions": {},
            "split": "test", "splits": {"test": split(test), "validation": split(val)}}


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "r.sqlite3"
    with open_store(path) as store:
        for i, lam in enumerate((0.2, 0.5, 0.8)):
            for seed in (0, 1):
                store.add(f"ta-{lam}-{seed}", report("ta", lam, seed, test=(0.5 + 0.1 * i, 0.6), val=(0.6 + 0.05 * i, 0.6)))
        store.add("avg", report("avg", None, 0, test=(0.55, 0.55), val=(0.5, 0.5)))
        store.add("ind", report("_individual_", None, 0, test=(0.9, 0.95), val=(0.9, 0.95)), kind="individual")
    return path


def test_plot_writes_deterministic_pngs_and_refuses_to_overwrite(store_path, tmp_path, fb_cli):
    out = fb_cli("plot", "--store", str(store_path), "-o", str(tmp_path / "fig"), "--json")
    assert out.exit_code == 0, out.stderr
    names = sorted(os.path.basename(p) for p in out.json)
    assert names == ["heatmap-toy.png", "lambda-toy.png"]  # avg has one setting: no curve of its own
    first = {n: (tmp_path / "fig" / n).read_bytes() for n in names}
    assert all(data.startswith(b"\x89PNG") for data in first.values())
    again = fb_cli("plot", "--store", str(store_path), "-o", str(tmp_path / "fig"))
    assert again.exit_code == 1 and "exists; pass --overwrite" in again.stderr
    assert fb_cli("plot", "--store", str(store_path), "-o", str(tmp_path / "fig"), "--overwrite").exit_code == 0
    assert {n: (tmp_path / "fig" / n).read_bytes() for n in names} == first  # same store, same bytes


def test_report_is_self_contained(store_path, tmp_path, fb_cli):
    page = tmp_path / "page.html"
    out = fb_cli("report", "--store", str(store_path), "-o", str(page))
    assert out.exit_code == 0, out.stderr
    text = page.read_text()
    assert text.count('<tr data-method="') == 3 and "selected on the validation split" in text
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 2
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch
    assert text.count('<details class="run"') == 8
    assert fb_cli("report", "--store", str(store_path), "-o", str(page)).exit_code == 1  # no silent overwrite


def test_report_renders_in_headless_chromium(store_path, tmp_path, fb_cli):
    from fusionbench_core.experiments.report import find_browser, rendered_page

    if find_browser() is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("chromium is not installed; scripts/setup.sh installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    page = tmp_path / "page.html"
    assert fb_cli("report", "--store", str(store_path), "-o", str(page)).exit_code == 0
    seen = rendered_page(page, tmp_path / "profile")
    assert seen["loaded"], seen["stderr"]
    assert seen["rows"] == ["ta", "avg", "_individual_"]  # ta selected λ=0.8 (best validation) scores 65 % on test
    assert re.search(r'<tr data-method="ta"><td>ta</td><td>70\.0 ± 0\.0</td><td>60\.0 ± 0\.0</td><td>65\.0 ± 0\.0</td>',
                     seen["dom"])
    widths = seen["image_widths"]
    assert len(widths) == 2 and all(w > 100 for w in widths)  # both figures decoded and loaded


EIGHT = ("sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")


@pytest.fixture
def eight_task_store(tmp_path):
    """An 8-task suite with long hyperparameter settings, as mini-vision's every-method sweep stores."""
    def split(values):
        return {"tasks": {t: {"accuracy": v} for t, v in zip(EIGHT, values)},
                "average": {"accuracy": sum(values) / len(values)}}

    path = tmp_path / "eight.sqlite3"
    with open_store(path) as store:
        for i, lam in enumerate((0.1, 0.3, 0.5)):
            for seed in (0, 1):
                values = [0.4 + 0.05 * i + 0.01 * k for k in range(8)]
                hps = {"scaling_factor": lam, "init_value": 0.3, "entropy_steps": 500, "learning_rate": 0.001}
                store.add(f"lw-{lam}-{seed}", {
                    "method": "layer_wise_adamerging", "hyperparameters": hps, "modelpool": {"name": "clip-vit-b32-ta8"},
                    "taskpool": {"name": "clip-vit-b32-ta8"}, "tasks": split(values)["tasks"],
                    "average": split(values)["average"], "cost": {"wall_s": 12.5}, "seed": seed, "versions": {},
                    "split": "test", "splits": {"test": split(values), "validation": split(values)}})
        ind = [0.9] * 8
        store.add("ind8", {"method": "_individual_", "hyperparameters": {}, "modelpool": {"name": "clip-vit-b32-ta8"},
                           "taskpool": {"name": "clip-vit-b32-ta8"}, "tasks": split(ind)["tasks"],
                           "average": split(ind)["average"], "cost": {}, "seed": 0, "versions": {}, "split": "test"},
                  kind="individual")
    return path


def test_report_figures_have_captions_in_words(eight_task_store, tmp_path, fb_cli):
    page = tmp_path / "page.html"
    assert fb_cli("report", "--store", str(eight_task_store), "-o", str(page)).exit_code == 0
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page.read_text())
    assert len(captions) == 2
    assert not any(c.endswith(".png") for c in captions)
    assert any("scaling_factor" in c and "validation" in c and "clip-vit-b32-ta8" in c for c in captions)
    assert any("per task" in c and "clip-vit-b32-ta8" in c for c in captions)


def test_report_of_an_eight_task_suite_fits_1280_pixels(eight_task_store, tmp_path, fb_cli):
    from fusionbench_core.experiments.report import find_browser, rendered_page

    if find_browser() is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("chromium is not installed; scripts/setup.sh installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    page = tmp_path / "page.html"
    assert fb_cli("report", "--store", str(eight_task_store), "-o", str(page)).exit_code == 0
    seen = rendered_page(page, tmp_path / "profile", width=1280)
    assert seen["loaded"], seen["stderr"]
    assert seen["rows"] == ["layer_wise_adamerging", "_individual_"]
    assert 0 < seen["page_width"] <= 1280  # nothing sticks out of a 1,280 px window: no sideways scrolling
