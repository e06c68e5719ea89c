"""The files a sweep writes, read back: `report` rebuilds what the sweep answered, and a file it
cannot read is named, with why, in one line (exit 2)."""

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli

SWEEP = ["sweep", "--gpu", "h100", "--torch-version", "2.4", "--batch", "1,2", "--channels", "64", "--res", "64",
         "--impl", "sdpa", "--dtype", "fp16", "--mode", "train"]
AS_USER = (["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
           if os.geteuid() == 0 and shutil.which("setpriv") else [])


def _invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("s1")
    done = _invoke(*SWEEP, "--out", out)
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture
def folder(swept, tmp_path):
    copy = tmp_path / "s1"
    shutil.copytree(swept, copy)
    return copy


def _one_line_error(done, *words):
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, done.output
    assert "Traceback" not in done.output
    for word in words:
        assert word in done.output, done.output


def test_a_report_rebuilt_from_results_alone_answers_as_the_sweep(folder):
    """The sweep chose as torch 2.4 does; its meta.json says so, and the rebuilt largest.csv reads it."""
    kept = (folder / "largest.csv").read_bytes()
    assert b",efficient," in kept
    (folder / "largest.csv").unlink()
    done = _invoke("report", folder / "results.csv")
    assert done.exit_code == 0, done.output
    assert (folder / "largest.csv").read_bytes() == kept


def test_report_takes_the_folder_a_sweep_wrote(folder):
    (folder / "report.html").unlink()
    done = _invoke("report", folder)
    assert done.exit_code == 0, done.output
    assert (folder / "report.html").stat().st_size > 0


@pytest.mark.parametrize("name, damage, words", [
    ("meta.json", b"{not json", ["meta.json", "not JSON"]),
    ("meta.json", b"[1, 2]", ["meta.json", "not an object"]),
    ("meta.json", b"\xff\xfe garbage", ["meta.json", "not JSON"]),
    ("largest.csv", b"x\xff\n", ["largest.csv", "not a CSV"]),
    ("largest.csv", b"a,b\n1,2\n", ["largest.csv", "'per_image_bytes'"]),
    ("largest.csv", b"", ["largest.csv", "not a CSV"]),
    ("results.csv", b"impl,dtype\nsdpa,fp16\n", ["results.csv", "'mode'"]),
    ("results.csv", b"\x00\xff\xfe", ["results.csv"]),
])
def test_a_file_it_cannot_read_is_named(folder, name, damage, words):
    (folder / name).write_bytes(damage)
    done = _invoke("report", folder)
    _one_line_error(done, *words)
    others = {"meta.json", "largest.csv", "results.csv"} - {name}
    assert not any(f"{other}'" in done.output for other in others), done.output


def test_a_missing_results_file_is_named(tmp_path):
    _one_line_error(_invoke("report", tmp_path), "results.csv", "folder it is in")
    _one_line_error(_invoke("report", tmp_path / "nope.csv"), "nope.csv")


def test_resume_names_a_results_file_it_cannot_read(folder):
    (folder / "results.csv").write_bytes(b"key,status\n\xff\xfe\n")
    _one_line_error(_invoke(*SWEEP, "--out", folder, "--resume"), "results.csv")


@pytest.mark.skipif(os.geteuid() == 0 and not AS_USER, reason="root writes anywhere; setpriv is not here")
@pytest.mark.parametrize("inside", [False, True], ids=["the-folder", "a-new-folder-in-it"])
def test_a_sweep_into_a_folder_it_cannot_write(tmp_path, inside):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    out = locked / "new" if inside else locked
    try:
        done = subprocess.run([*AS_USER, sys.executable, "-m", "sa_profiler.cli", *SWEEP, "--out", str(out)],
                              capture_output=True, text=True)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(out) in done.stderr and "Permission denied" in done.stderr
