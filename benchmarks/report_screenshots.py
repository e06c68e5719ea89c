"""Regenerate the example reports under reports/ and their screenshots (1280 px wide).

    python benchmarks/report_screenshots.py            # sweeps, fit report, screenshots
    python benchmarks/report_screenshots.py --shots    # screenshots of the reports as they are

The two forum studies are the README's sweep commands (each folder is emptied and swept
again); the fit report is `sa-profile fit examples/sagan.py:Generator ... --html`. Screenshots
come from headless Chromium (Debian's `chromium`, driven by Playwright, network blocked): the
sweep reports from the top to the table of all rows (the answer, the fits map and the plots),
the fit report whole.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("SA_PROFILER_CHROMIUM", "/usr/bin/chromium")
GRID = ["--batch", "1,2,4,8,16", "--channels", "128", "--res", "32:256:x2", "--impl", "all", "--dtype", "fp32,fp16",
        "--mode", "both"]
SWEEPS = {"reports/forum-t4": ["--gpu", "t4"], "reports/forum-12gib": ["--gpu-mem", "12G"]}
FIT = "reports/fit-sagan-generator"
FIT_ARGS = ["fit", "examples/sagan.py:Generator", "--input", "128", "--batch", "64", "--gpu", "t4", "--amp", "fp16"]
OUTPUTS = ("results.csv", "results.json", "largest.csv", "meta.json", "report.html")


def sa_profile(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sa_profiler.cli", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def regenerate() -> None:
    for folder, target in SWEEPS.items():
        for name in OUTPUTS:
            (ROOT / folder / name).unlink(missing_ok=True)
        sa_profile("sweep", *GRID, *target, "--out", folder)
        print(f"swept {folder}")
    (ROOT / FIT).mkdir(parents=True, exist_ok=True)
    sa_profile(*FIT_ARGS, "--html", f"{FIT}/report.html")
    print(f"wrote {FIT}/report.html")


def screenshots() -> None:
    from playwright.sync_api import sync_playwright

    pages = [(f"{f}/report.html", f"{f}/report.png", "#table") for f in SWEEPS] + [
        (f"{FIT}/report.html", f"{FIT}/report.png", None)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for src, dst, stop in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
            page.goto((ROOT / src).as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0", timeout=30000)
            page.wait_for_timeout(500)
            if errors:
                raise SystemExit(f"{src}: {errors[0]}")
            height = page.evaluate(f"document.querySelector('{stop}').getBoundingClientRect().top + window.scrollY"
                                   if stop else "document.body.scrollHeight")
            tmp = ROOT / (dst + ".tmp.png")
            page.screenshot(path=str(tmp), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": height})
            os.replace(tmp, ROOT / dst)
            page.close()
            print(f"wrote {dst} (1280 x {int(height)})")
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", action="store_true", help="only the screenshots, of the reports as they are")
    args = ap.parse_args()
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        raise SystemExit(f"needs Chromium at {CHROMIUM} (Debian package chromium; or set SA_PROFILER_CHROMIUM)")
    if not args.shots:
        regenerate()
    screenshots()


if __name__ == "__main__":
    main()
