"""Sweeps: grid parsing, rows and report, SIGKILL + resume, OOM skipping, escaping."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli
from sa_profiler.sweeps.grid import parse_ints, parse_resolutions
from sa_profiler.report.html import write_report
from sa_profiler.units import ParseError


@pytest.mark.parametrize("text,expected", [
    ("1,2,4", [1, 2, 4]), ("32:256:x2", [32, 64, 128, 256]), ("32:128:+32", [32, 64, 96, 128]),
    ("1,1:4:x2", [1, 2, 4]), ("7", [7]), ("10:10:+1", [10]),
])
def test_parse_ints(text, expected):
    assert parse_ints(text) == expected


def test_parse_resolutions():
    assert parse_resolutions("32:128:x2") == [(32, 32), (64, 64), (128, 128)]
    assert parse_resolutions("64x128,96") == [(64, 128), (96, 96)]


@pytest.mark.parametrize("text", ["", "a", "1,,2", "0", "-4", "1:8:x1", "8:1:x2", "1:8:*2", "1:8", "4:8:+0"])
def test_bad_lists_are_named(text):
    with pytest.raises(ParseError, match="expected a comma list"):
        parse_ints(text, "batches")


@pytest.mark.parametrize("text", ["64y64", "0x32", "32x", "1:9:x1"])
def test_bad_resolutions_are_named(text):
    with pytest.raises(ParseError, match="resolutions"):
        parse_resolutions(text)


BAD = [
    (["--batch", "1,,2"], "cannot read batches '1,,2'"),
    (["--batch", "x"], "cannot read batches 'x'"),
    (["--res", "32:8:x2"], "needs 1 <= START <= STOP"),
    (["--res", "64y64"], "cannot read resolutions '64y64'"),
    (["--channels", "4"], "has a value below 8"),
    (["--channels", "0"], "has a value < 1"),
    (["--impl", "nope"], "unknown implementation 'nope'"),
    (["--dtype", "bf16"], "bfloat16 cannot run on this target"),
    (["--gpu", "t44"], "unknown GPU 't44'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["sweep", "--gpu", "t4", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o" / "results.csv").exists()


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


SMALL = ["sweep", "--batch", "1,2", "--channels", "16", "--res", "8,16", "--impl", "reference,sdpa",
         "--dtype", "fp32", "--mode", "both", "--gpu", "t4"]


def test_sweep_writes_rows_and_report(tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(cli, [*SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "results.csv")
    assert len(rows) == 2 * 1 * 2 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(rows) and data["meta"]["target"]["name"] == "Tesla T4"
    html = (out / "report.html").read_text()
    assert "Plotly.newPlot" in html and "<script src" not in html and "<link" not in html
    assert "Sweep summary" in result.output
    again = CliRunner().invoke(cli, [*SMALL, "--out", str(out)])
    assert again.exit_code == 2 and "add --resume" in again.stderr


def test_simulated_oom_continues_and_skips_larger_batches(tmp_path):
    out = tmp_path / "tiny"
    args = ["sweep", "--batch", "1,2,4,8", "--channels", "64", "--res", "32,128", "--impl", "reference",
            "--dtype", "fp32", "--mode", "train", "--gpu-mem", "1G", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = {(int(r["height"]), int(r["batch"])): r for r in _rows(out / "results.csv")}
    assert rows[(32, 1)]["status"] == "ok"
    oom = [b for (res, b), r in rows.items() if res == 128 and r["status"] == "oom"]
    assert oom == [1]  # batch 1 at 128 x 128 needs more than the card
    assert int(rows[(128, 1)]["peak_bytes"]) > 2**30  # and the row says how much it would need
    for b in (2, 4, 8):
        assert rows[(128, b)]["status"] == "skipped" and rows[(128, b)]["message"] == "skipped (oom at batch 1)"


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    grid = ["sweep", "--batch", "1,2,3,4", "--channels", "32,64", "--res", "16:64:x2", "--impl", "reference,sdpa,chunked",
            "--dtype", "fp32", "--mode", "both", "--gpu", "a100"]
    whole = tmp_path / "whole"
    assert CliRunner().invoke(cli, [*grid, "--out", str(whole)]).exit_code == 0
    expected = _rows(whole / "results.csv")

    part = tmp_path / "part"
    cmd = [sys.executable, "-m", "sa_profiler.cli", *grid, "--out", str(part)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = part / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and len(results.read_text().splitlines()) > 20:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from sa_profiler.sweeps.lock import holder

    assert holder(part) == proc.pid  # the lock file stays behind with the dead pid, the lock does not
    before = _rows(results)
    assert 0 < len(before) < len(expected), "the sweep was not interrupted partway"
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after = _rows(results)
    assert [r["key"] for r in after[: len(before)]] == [r["key"] for r in before]
    assert len({r["key"] for r in after}) == len(after) == len(expected)
    strip = lambda r: {k: v for k, v in r.items() if k != "host"}  # noqa: E731
    assert sorted(map(json.dumps, map(strip, after))) == sorted(map(json.dumps, map(strip, expected)))
    assert (part / "report.html").exists()


def test_hostile_strings_are_escaped(tmp_path):
    out = tmp_path / "<script>alert(1)</script>"
    result = CliRunner().invoke(cli, [*SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "results.csv")
    rows[0]["impl"] = "<script>alert(1)</script>"
    rows[0]["message"] = "</script><img src=x onerror=alert(2)>"
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_report(out / "results.csv")
    html = (out / "report.html").read_text()
    body = html.split("<body>", 1)[1]
    assert "<script>alert(1)</script>" not in body and "onerror=alert(2)>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "\\u003cscript\\u003ealert(1)" in body  # inside figure data, too


def test_report_command(tmp_path):
    out = tmp_path / "s"
    assert CliRunner().invoke(cli, [*SMALL, "--out", str(out)]).exit_code == 0
    (out / "report.html").unlink()
    result = CliRunner().invoke(cli, ["report", str(out / "results.csv")])
    assert result.exit_code == 0 and (out / "report.html").exists()
    missing = CliRunner().invoke(cli, ["report", str(out / "nope.csv")])
    assert missing.exit_code == 2 and "no such results file" in missing.stderr


def test_cpu_target_measured_equals_simulated(tmp_path):
    """`--gpu cpu`: measured by default; on the CPU the simulator is byte-exact, so both agree."""
    import pandas as pd

    args = ["sweep", "--gpu", "cpu", "--batch", "1,2", "--channels", "16", "--res", "8,8x16", "--impl", "all",
            "--mode", "both"]
    for engine in ("auto", "simulate"):
        result = CliRunner().invoke(cli, [*args, "--engine", engine, "--out", str(tmp_path / engine)])
        assert result.exit_code == 0, result.output
    measured, simulated = (pd.read_csv(tmp_path / e / "results.csv").set_index("key") for e in ("auto", "simulate"))
    assert set(measured.source) == {"measured"} and set(simulated.source) == {"simulated"}
    assert len(measured) == 24 and set(measured.status) == {"ok"}
    assert (measured.peak_bytes == simulated.loc[measured.index].peak_bytes).all()


def test_atlas_report_has_a_column_per_device(tmp_path):
    import pandas as pd

    from sa_profiler.engine import Workload
    from sa_profiler.engine.workload import Record
    from sa_profiler.report.html import write_html

    rows = []
    for target, name, scale in (("cuda:T4", "Tesla T4", 1.0), ("cuda:H100", "NVIDIA H100 80GB HBM3", 0.2)):
        for b in (1, 2):
            rec = Record(Workload("reference", b, 64, 32, 32, "float32", "train", target), peak_bytes=b * 2**20,
                         baseline_bytes=1024, time_s=scale * b * 1e-3, source="measured", device_name=name)
            row = rec.to_row()
            row["total_bytes"], row["usable_bytes"] = rec.peak_bytes + 1024, 2**33
            rows.append(row)
    path = write_html(pd.DataFrame(rows), tmp_path / "r.html", {"targets": [{"name": "Tesla T4"}, {"name": "H100"}]})
    text = path.read_text()
    assert "Atlas: 2 devices" in text and "<th>Tesla T4</th>" in text and "<th>NVIDIA H100 80GB HBM3</th>" in text
    assert "2.00 MiB / 0.400 ms" in text


@pytest.mark.slow
def test_second_sweep_into_a_folder_refuses_and_the_first_finishes(tmp_path):
    grid = ["sweep", "--batch", "1,2,3,4", "--channels", "32,64", "--res", "16:64:x2", "--impl", "reference,sdpa,chunked",
            "--dtype", "fp32", "--mode", "both", "--gpu", "a100"]
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "sa_profiler.cli", *grid, "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results = out / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) > 5:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the first sweep ended before the second could start"
    second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and f"process {first.pid}" in lines[0], second.stderr
    rows = _rows(results)
    assert len(rows) == 4 * 2 * 3 * 3 * 2 and len({r["key"] for r in rows}) == len(rows)


def test_duplicate_rows_last_wins_and_are_reported(tmp_path):
    out = tmp_path / "dup"
    assert CliRunner().invoke(cli, [*SMALL, "--out", str(out)]).exit_code == 0
    rows = _rows(out / "results.csv")
    twice = dict(rows[0], time_s="123.0")  # a second writer's row for the same workload, written last
    with open(out / "results.csv", "a", newline="") as fh:
        csv.DictWriter(fh, list(rows[0])).writerow(twice)
    report = CliRunner().invoke(cli, ["report", str(out / "results.csv")])
    assert report.exit_code == 0 and "1 duplicate row" in report.stderr, report.output
    assert "last row of each workload is used" in (out / "report.html").read_text()
    from sa_profiler.report.html import load

    frame = load(out / "results.csv")
    assert len(frame) == len(rows) and frame.set_index("key").loc[rows[0]["key"], "time_s"] == 123.0
    resumed = CliRunner().invoke(cli, [*SMALL, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0 and "1 duplicate row" in resumed.stderr
    after = _rows(out / "results.csv")  # rewritten with one row per workload
    assert len(after) == len(rows) and len({r["key"] for r in after}) == len(rows)
    assert next(r for r in after if r["key"] == rows[0]["key"])["time_s"] == "123.0"
