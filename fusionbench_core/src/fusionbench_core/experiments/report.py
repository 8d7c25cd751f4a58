"""``fb report``: one static, self-contained HTML page of the result store.

The page holds the leaderboards (as ``fb table -f html`` renders them), the figures of ``fb plot``
embedded as ``data:`` URIs (when matplotlib is installed; otherwise a note says so), and one
collapsible section per run with its hyperparameters, metrics per split, cost and versions. It
loads nothing from the network and runs one tiny inline script, which records each image's
``naturalWidth`` in a ``data-natural-width`` attribute (what the browser test reads). The same store
gives the same bytes (no timestamps).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

from ..errors import FusionBenchError
from .tables import Leaderboard, render

__all__ = ["find_browser", "render_report", "rendered_page"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; padding: 0 1rem; max-width: 72rem; color: #222; }
.wide { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.45rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td:last-child, th:last-child { text-align: left; }
td:last-child { white-space: normal; min-width: 12rem; overflow-wrap: anywhere; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3rem; white-space: normal;
          max-width: min(70rem, calc(100vw - 4rem)); }
figure { display: inline-block; margin: 0 1rem 1rem 0; max-width: 100%; vertical-align: top; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #444; max-width: 40rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
details { margin: 0.2rem 0; } summary { cursor: pointer; }
.note { color: #666; }
"""
"""Fits a 1,280 px window: wide tables scroll inside their own box, figures shrink, long words wrap."""

SCRIPT = """
window.addEventListener('load', function () {
  document.querySelectorAll('img').forEach(function (img) {
    img.setAttribute('data-natural-width', String(img.naturalWidth));
  });
  document.body.setAttribute('data-page-width', String(document.documentElement.scrollWidth));
  document.body.setAttribute('data-loaded', 'yes');
});
"""


def _figures_html(boards: Sequence[Leaderboard]) -> str:
    from .plots import figure_captions, figures

    try:
        pngs = figures(boards)
    except FusionBenchError as exc:
        return f'<p class="note">No figures: {html.escape(str(exc))}.</p>'
    captions = figure_captions(boards)
    parts = []
    for name, data in pngs.items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        caption = html.escape(captions.get(name, name))
        parts.append(f'<figure><img src="{uri}" alt="{caption}" data-name="{html.escape(name)}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts) or '<p class="note">No figures.</p>'


def _run_html(run: dict[str, Any], metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    hps = ", ".join(f"{k}={v}" for k, v in run["hyperparameters"].items()) or "–"
    test = run.get("test_accuracy")
    head = (f"#{run['id']} {html.escape(run['method'])} ({html.escape(hps)}) seed {run['seed']} — "
            f"test accuracy {'–' if test is None else f'{100 * test:.1f} %'}")
    lines = [f'<details class="run" data-run="{run["id"]}"><summary>{head}</summary>']
    for split, tasks in metrics.items():
        names: list[str] = []
        for values in tasks.values():
            names += [m for m in values if m not in names]
        lines.append(f'<div class="wide"><table><caption>{html.escape(split)} split</caption><thead><tr><th>task</th>'
                     + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr></thead><tbody>")
        for task, values in tasks.items():
            lines.append(f"<tr><td>{html.escape(task)}</td>"
                         + "".join(f"<td>{values[n]:.4f}</td>" if n in values else "<td>–</td>" for n in names)
                         + "</tr>")
        lines.append("</tbody></table></div>")
    info = {"key": run["key"], "kind": run["kind"], "sweep": run["sweep"], "modelpool": run["modelpool"],
            "taskpool": run["taskpool"], "cost": run["cost"]}
    lines.append(f"<pre>{html.escape(json.dumps(info, indent=2, sort_keys=True))}</pre></details>")
    return "\n".join(lines)


def render_report(store: Any, boards: Sequence[Leaderboard], *, title: str = "FusionBench results",
                  sweep: str | None = None) -> str:
    """The HTML page for ``boards`` and the runs they were built from."""
    ids = sorted({i for board in boards for row in board.rows for i in row.run_ids})
    all_runs = store.runs(sweep=sweep, kind=None)
    suites = {b.suite for b in boards}
    from .tables import suite_label

    runs = [r for r in all_runs if suite_label(r) in suites]
    metrics = store.metrics([r["id"] for r in runs])
    selected = set(ids)
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="note">{len(runs)} runs; hyperparameters selected on the '
            f'{html.escape(boards[0].select_on if boards else "validation")} split; the test split is reported.</p>',
            "<h2>Leaderboard</h2>", f'<div class="wide">{render(boards, "html")}</div>', "<h2>Figures</h2>",
            _figures_html(boards),
            "<h2>Runs</h2>", '<p class="note">★ marks the runs of the selected settings.</p>']
    for run in runs:
        section = _run_html(run, metrics[run["id"]])
        if run["id"] in selected:
            section = section.replace("<summary>", "<summary>★ ", 1)
        body.append(section)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def find_browser() -> str | None:
    """The headless browser that can render a report: Debian's ``chromium`` (or ``chromium-browser``)."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_page(page: Any, profile_dir: Any, *, browser: str | None = None, timeout_s: float = 60,
                  width: int = 1280) -> dict[str, Any]:
    """What a reader sees of a report page: rendered offline in headless Chromium.

    Returns ``{"dom", "rows", "image_widths", "page_width", "loaded", "stderr"}``: the DOM after the
    page's script ran, the leaderboard rows (``data-method`` of each ``<tr>``, in order), the natural
    width of every figure the browser decoded (0 for an image that failed), the page's scroll width in
    a window ``width`` pixels wide (more than ``width``: the reader scrolls sideways), whether the
    page's script finished, and the end of the browser's stderr (for a failure message). The browser
    runs with a throwaway profile in ``profile_dir`` and no network features.
    """
    import re
    import subprocess
    from pathlib import Path

    browser = browser or find_browser()
    if browser is None:
        raise FusionBenchError("no headless browser: install Debian's chromium (scripts/setup.sh does)")
    page = Path(page).resolve()
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile_dir}",
         f"--window-size={int(width)},900", "--hide-scrollbars", "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=timeout_s)
    dom = result.stdout
    return {"dom": dom, "rows": re.findall(r'<tr data-method="([^"]+)">', dom),
            "image_widths": [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)],
            "page_width": int((re.findall(r'data-page-width="(\d+)"', dom) or ["0"])[0]),
            "loaded": 'data-loaded="yes"' in dom, "stderr": result.stderr[-2000:]}
