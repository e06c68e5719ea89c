"""The HTML reports in a real browser: headless Chromium driven by Playwright, network blocked.

For the sweep, fit and headline pages: no console error, no request beyond the file itself,
every plot drawn with data, no legend over a plot area, the recommendation on the page, and
hostile user strings (a model name and paths with <script>, quotes and non-ASCII) shown as
text with none of their scripts run."""

import csv
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli

CHROMIUM = os.environ.get("SA_PROFILER_CHROMIUM", "/usr/bin/chromium")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.environ.get("CI") and not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)),
    reason="needs Chromium (Debian package chromium); CI installs it")]  # a real browser

HOSTILE = "<script>alert(1)</script>\"'é"  # a name as it would be typed
HOSTILE_DIR = "<script>alert(1)<"  # a folder; with the next part, the path reads <script>alert(1)</script>
PLOTS = """els => els.map(e => ({
  traces: (e.data || []).length,
  points: (e.data || []).reduce((n, t) => n + ((t.x || []).filter(v => v !== null).length), 0),
  overlaps: (() => {
    const legend = e.querySelector('.legend');
    if (!legend) return 0;
    const l = legend.getBoundingClientRect();
    return Array.from(e.querySelectorAll('.nsewdrag')).filter(d => {
      const r = d.getBoundingClientRect();
      return Math.min(l.right, r.right) - Math.max(l.left, r.left) > 1 &&
             Math.min(l.bottom, r.bottom) - Math.max(l.top, r.top) > 1;
    }).length;
  })()
}))"""


def open_report(path, shot=None, min_plots=1, before=None):
    """Load `path` offline; returns what the page did and shows."""
    from playwright.sync_api import sync_playwright

    errors, requests, dialogs = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.add_init_script("window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")

        def block(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                requests.append(route.request.url)
                route.abort()

        page.route("**/*", block)
        page.goto(path.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {min_plots}", timeout=30000)
        page.wait_for_timeout(300)
        out = {"plots": page.eval_on_selector_all(".js-plotly-plot", PLOTS), "text": page.inner_text("body"),
               "alerts": page.evaluate("window.__alerts")}
        if before:
            out.update(before(page))
        if shot:
            page.screenshot(path=str(shot), full_page=True)
        browser.close()
    out.update(errors=errors, requests=requests, dialogs=dialogs)
    return out


def check_page(seen, min_plots):
    assert seen["errors"] == [] and seen["requests"] == [], (seen["errors"], seen["requests"])
    assert seen["alerts"] == [] and seen["dialogs"] == []
    plots = seen["plots"]
    assert len(plots) >= min_plots, plots
    assert all(p["traces"] > 0 and p["points"] > 0 for p in plots), plots
    assert all(p["overlaps"] == 0 for p in plots), plots


def test_sweep_report_is_a_decision_page(tmp_path):
    out = tmp_path / HOSTILE_DIR / "script>é'\""
    args = ["sweep", "--batch", "1,2,4", "--channels", "32", "--res", "16:128:x2", "--impl", "all", "--dtype",
            "fp32,fp16", "--mode", "both", "--gpu-mem", "2G", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["message"] = HOSTILE + " and a second line\nof detail"
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from sa_profiler.report.html import write_report

    write_report(out / "results.csv")

    def interact(page):
        found = {"answer": page.inner_text("#answer"),
                 "rows": page.eval_on_selector_all("#rows tbody tr:not(.gh)", "els => els.length"),
                 "cells": page.eval_on_selector_all(".map td", "els => els.length"),
                 "oom": page.eval_on_selector_all(".map td.oom", "els => els.length"),
                 "title": page.eval_on_selector("#rows td.msg[title]", "e => e.getAttribute('title')")}
        page.fill("#rows-q", "sdpa float16 train")
        found["shown"] = page.inner_text("#rows-n")
        page.select_option("#rows-st", "oom")
        found["shown_oom"] = page.inner_text("#rows-n")
        page.fill("#rows-q", "")
        page.select_option("#rows-st", "")
        page.click("#rows thead th:nth-child(1)")
        page.click("#rows thead th:nth-child(1)")  # batch, descending within each configuration
        found["first_batch"] = page.eval_on_selector("#rows tbody tr:not(.gh) td", "e => e.textContent")
        return found

    seen = open_report(out / "report.html", tmp_path / "sweep.png", min_plots=3, before=interact)
    check_page(seen, 3)
    assert "Training (forward + backward) at 32 x 128 x 128" in seen["answer"], seen["answer"]
    assert 'convert(model, "sdpa")' in seen["answer"] and "usable memory =" in seen["answer"]
    assert seen["rows"] == 3 * 4 * 2 * 2 * 3  # batches x resolutions x dtypes x modes x implementations
    assert seen["cells"] > seen["rows"] and seen["oom"] >= 1
    assert seen["title"].startswith(HOSTILE) and "second line" in seen["title"]
    assert seen["shown"] == str(4 * 3)  # sdpa, float16, train: one configuration per resolution, 3 batches
    assert int(seen["shown_oom"]) >= 1
    assert seen["first_batch"] == "4"
    assert HOSTILE in seen["text"] and str(out) in seen["text"]  # as text, and the command with the hostile path


def test_headline_report(tmp_path):
    folder = tmp_path / HOSTILE_DIR
    folder.mkdir()
    path = folder / "script>é'\".html"
    proc = subprocess.run([sys.executable, "-m", "sa_profiler.cli", "--gpu", "t4", "--shape", "128x256x256", "--html",
                           str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    seen = open_report(path, tmp_path / "headline.png", min_plots=2)
    check_page(seen, 2)
    assert "Recommended: sdpa (auto) (efficient) in float16" in seen["text"]
    assert 'convert(model, "sdpa")' in seen["text"]
    assert shlex.quote(str(path)) in seen["text"]  # the command, as text


def test_fit_report(tmp_path):
    folder = tmp_path / HOSTILE_DIR / "script>é'\""
    folder.mkdir(parents=True)
    (folder / "net.py").write_text(textwrap.dedent("""
        from torch import nn
        from sa_profiler import build

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 32, 3, padding=1)
                self.attn = build("reference", 32)
                self.head = nn.Linear(32, 10)

            def forward(self, x):
                y = self.stem(x)
                y = self.attn(y)[0]
                return self.head(y.mean((2, 3)))
    """))
    model = f"{folder / 'net.py'}:Net"
    path = tmp_path / "fit.html"
    result = CliRunner().invoke(cli, ["fit", model, "--input", "3x64x64", "--batch", "8", "--gpu-mem", "2G", "--amp",
                                      "fp16", "--html", str(path)])
    assert result.exit_code == 0, result.output
    seen = open_report(path, tmp_path / "fit.png", min_plots=3,
                       before=lambda page: {"tensors": page.eval_on_selector_all("#peak-tensors tbody tr",
                                                                                 "els => els.length"),
                                            "timeline": page.evaluate(
                                                "document.querySelector('.js-plotly-plot').data.map(t => t.name)")})
    check_page(seen, 3)
    assert model in seen["text"]  # the hostile path, as text
    assert "Attention layers (1" in seen["text"] and "of the peak" in seen["text"]
    assert seen["tensors"] > 0 and "_softmax" in seen["text"]
    assert "as is (AMP fp16)" in seen["timeline"] and "as is (float32)" in seen["timeline"]
    for phase in ("forward", "backward", "optimizer"):
        assert phase in seen["text"]
    assert 'convert(model, "sdpa")' in seen["text"]


def test_atlas_report_renders_a_column_per_device(tmp_path):
    from sa_profiler.targets import gpus
    from sa_profiler.question import make_question
    from sa_profiler.report.html import write_report
    from sa_profiler.sweeps.largest import ensure
    from sa_profiler.sweeps.sweep import Sweep, run

    out = tmp_path / "atlas"
    spec = Sweep([make_question(gpus.lookup("t4")), make_question(gpus.lookup("l4"))], [("reference", {}), ("sdpa", {})],
                 ["float16"], ["train"], [64], [(16, 16), (32, 32), (64, 64)], [1, 4])
    run(spec, out)
    ensure(out)  # the largest batches, as `sa-profile sweep` searches them after the grid
    write_report(out / "results.csv")
    seen = open_report(out / "report.html", tmp_path / "atlas.png", min_plots=3,
                       before=lambda page: {"heads": page.eval_on_selector_all("#atlas thead th",
                                                                               "els => els.map(e => e.textContent)"),
                                            "cells": page.eval_on_selector_all("#atlas tbody tr", "els => els.length")})
    check_page(seen, 3)
    assert seen["heads"][-2:] == ["NVIDIA L4", "Tesla T4"]
    assert seen["cells"] == 2 * 3 * 2
    assert "on NVIDIA L4" in seen["text"] and "on Tesla T4" in seen["text"]  # an answer per card


def test_notebook_outputs_draw_beside_each_other_under_an_amd_loader(tmp_path):
    """Two `_repr_html_` outputs in one page (as in classic Jupyter, which has require.js)."""
    from sa_profiler.targets import gpus
    from sa_profiler.advice.advise import advise
    from sa_profiler.question import make_question

    from sa_profiler.report import page

    first = advise(make_question(gpus.lookup("t4")), 64, 32, 32, dtypes=["fp16"])
    second = advise(make_question(gpus.lookup("l4")), 64, 64, 64, dtypes=["fp16"])
    page.inline_plotly_again()  # a new notebook: its first output carries plotly.js, the second uses it
    amd = "<script>window.define = function () {}; window.define.amd = true;</script>"
    path = tmp_path / "notebook.html"
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>{amd}</head><body>"
                    f"{first._repr_html_()}{second._repr_html_()}</body></html>", encoding="utf-8")
    seen = open_report(path, min_plots=4)
    check_page(seen, 4)
    assert "on Tesla T4" in seen["text"] and "on NVIDIA L4" in seen["text"]
