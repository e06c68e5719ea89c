"""The HTML report in a real browser: headless Chromium, driven by Playwright, network blocked."""

import os
import shutil

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli

CHROMIUM = os.environ.get("SA_PROFILER_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)),
    reason="needs Chromium (Debian package chromium); CI installs it")


def test_report_renders_every_plot_offline(tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "study"
    args = ["sweep", "--batch", "1,2", "--channels", "32", "--res", "16:64:x2", "--impl", "all", "--dtype", "fp32",
            "--mode", "both", "--gpu-mem", "2G", "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def block(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                requests.append(route.request.url)
                route.abort()

        page.route("**/*", block)
        page.goto((out / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=20000)
        plots = page.eval_on_selector_all(".js-plotly-plot", "els => els.map(e => (e.data || []).length)")
        rows = page.eval_on_selector_all("#rows tbody tr", "els => els.length")
        page.click("#rows th:nth-child(5)")  # sort by batch
        first = page.eval_on_selector("#rows tbody tr td:nth-child(5)", "e => e.textContent")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(plots) >= 3 and all(n > 0 for n in plots), plots
    assert rows == 2 * 3 * 3 * 2
    assert first == "1"
    assert errors == [] and requests == []


def test_atlas_report_renders_a_column_per_device(tmp_path):
    from playwright.sync_api import sync_playwright

    from sa_profiler import gpus
    from sa_profiler.recommend import make_target
    from sa_profiler.report.html import write_report
    from sa_profiler.sweep import Sweep, run

    out = tmp_path / "atlas"
    spec = Sweep([make_target(gpus.lookup("t4")), make_target(gpus.lookup("l4"))], [("reference", {}), ("sdpa", {})],
                 ["float16"], ["train"], [64], [(16, 16), (32, 32), (64, 64)], [1, 4])
    run(spec, out)
    write_report(out / "results.csv")
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
        page.goto((out / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=20000)
        heads = page.eval_on_selector_all("#atlas thead th", "els => els.map(e => e.textContent)")
        cells = page.eval_on_selector_all("#atlas tbody tr", "els => els.length")
        page.screenshot(path=str(tmp_path / "atlas.png"), full_page=True)
        browser.close()
    assert heads[-2:] == ["NVIDIA L4", "Tesla T4"]
    assert cells == 2 * 3 * 2
    assert errors == []
