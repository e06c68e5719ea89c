"""The HTML pages without a browser: what they say, where the numbers come from, bad paths."""

import subprocess
import sys

import pandas as pd
from click.testing import CliRunner

from sa_profiler.targets import gpus
from sa_profiler.cli import cli
from sa_profiler.advice.recommend import profile_row
from sa_profiler.question import make_question


def test_runner_sits_below_sweep_and_executors():
    """The dependency runs one way: sweep -> executors -> runner."""
    code = ("import sys, sa_profiler.sweeps.executors, sa_profiler.sweeps.rows; "
            "print('sa_profiler.sweeps.sweep' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from sa_profiler.sweeps import executors
    from sa_profiler.sweeps import rows as runner
    from sa_profiler.sweeps import sweep

    assert executors.run_workload is runner.run_workload is sweep.run_workload and sweep.LOST == runner.LOST


def test_largest_batch_is_the_engines_not_the_grids(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", "--batch", "1,2", "--channels", "128", "--res", "64", "--impl", "sdpa,reference", "--dtype", "fp16",
            "--mode", "train", "--gpu", "t4", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    largest = pd.read_csv(out / "largest.csv")
    target = make_question(gpus.lookup("t4"))
    for impl in ("sdpa", "reference"):
        row = largest[largest.impl == impl].iloc[0]
        engine = profile_row(target, impl, {}, "float16", "train", 128, 64, 64, None)
        assert row.max_batch == engine.max_batch > 2  # the headline's search, far beyond the grid's batch 2
    best = int(largest[largest.impl == "sdpa"].max_batch.iloc[0])
    page = (out / "report.html").read_text()
    assert f"batch <b>{best}</b>" in page and "convert(model, &quot;sdpa&quot;)" in page
    assert "usable memory = " in page and "(headroom" in page


def test_headline_html(tmp_path):
    path = tmp_path / "answer.html"
    result = CliRunner().invoke(cli, ["--gpu", "t4", "--shape", "64x32x32", "--dtype", "fp16", "--html", str(path)])
    assert result.exit_code == 0, result.output
    page = path.read_text()
    assert "Recommended: <b>" in page and "Why the classic layer runs out" in page
    assert "Plotly.newPlot('fig0'" in page and "<script src" not in page
    bad = CliRunner().invoke(cli, ["--gpu", "t4", "--shape", "64x32x32", "--html", str(tmp_path / "no" / "a.html")])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "cannot write --html" in bad.stderr


def test_fit_html_bad_path_is_one_line(tmp_path):
    bad = CliRunner().invoke(cli, ["fit", "examples/classifier.py:resnet_attn", "--input", "3x32x32", "--gpu", "t4",
                                   "--arg", "width=8", "--html", str(tmp_path / "no" / "f.html")])
    assert bad.exit_code == 2, bad.output
    assert len(bad.stderr.strip().splitlines()) == 1 and "cannot write --html" in bad.stderr


def test_binary_ticks():
    from sa_profiler.report.page import bytes_axis, short_bytes

    axis = bytes_axis(3 * 2**20, 40 * 2**30)
    assert all(v & (v - 1) == 0 for v in map(int, axis["tickvals"]))  # powers of two
    assert "1 GiB" in axis["ticktext"] and short_bytes(1536 * 2**20) == "1.5 GiB"
