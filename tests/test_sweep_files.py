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


# -- the readers in one process: exact words (reachable by mutation testing) -------------------------
from sa_profiler.report import sweep_frame  # noqa: E402
from sa_profiler.sweeps import lock  # noqa: E402


def test_read_table_says_which_file_and_why(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text("a,b\n1,\n")
    table = sweep_frame.read_table(ok, ("a",), "x")
    assert list(table.columns) == ["a", "b"] and table.b.isna().all()  # an empty cell is missing, not ""
    cases = [
        (b"a\n1\n", ("a", "b"), f"cannot read {str(ok)!r}: it has no 'b' column; expected W"),
        (b"a\n1\n", ("b", "c"), f"cannot read {str(ok)!r}: it has no 'b', 'c' columns; expected W"),
        (b"", ("a",), f"cannot read {str(ok)!r}: not a CSV table (No columns to parse from file); expected W"),
    ]
    for data, columns, said in cases:
        ok.write_bytes(data)
        with pytest.raises(sweep_frame.SweepFileError) as err:
            sweep_frame.read_table(ok, columns, "W")
        assert str(err.value) == said
    folder = tmp_path / "results.csv"
    folder.mkdir()
    with pytest.raises(sweep_frame.SweepFileError) as err:
        sweep_frame.read_table(folder, ("a",), "W")
    assert str(err.value) == f"cannot read {str(folder)!r}: Is a directory; expected W"


def test_read_meta_says_which_file_and_why(tmp_path):
    assert sweep_frame.read_meta(tmp_path) == {}
    meta = tmp_path / "meta.json"
    tail = "; expected the meta.json a sweep writes (or remove it: the report is made without it)"
    for data, why in [(b"[1]", "a JSON list, not an object"), (b"3", "a JSON int, not an object"),
                      (b"{", "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")]:
        meta.write_bytes(data)
        with pytest.raises(sweep_frame.SweepFileError) as err:
            sweep_frame.read_meta(tmp_path)
        assert str(err.value) == f"cannot read {str(meta)!r}: {why}{tail}"
    meta.unlink()
    meta.mkdir()
    with pytest.raises(sweep_frame.SweepFileError) as err:
        sweep_frame.read_meta(tmp_path)
    assert str(err.value) == f"cannot read {str(meta)!r}: Is a directory{tail}"
    meta.rmdir()
    meta.write_text('{"torch_version": "2.4"}')
    assert sweep_frame.read_meta(tmp_path) == {"torch_version": "2.4"}


def test_the_missing_largest_and_results_name_their_remedy(folder):
    (folder / "largest.csv").write_text("impl\nsdpa\n")
    with pytest.raises(sweep_frame.SweepFileError, match=r"expected the largest\.csv a sweep writes \(or remove it: "
                                                         r"it is searched again from the results\)$"):
        sweep_frame.load_largest(folder)
    (folder / "results.csv").write_text("impl\nsdpa\n")
    with pytest.raises(sweep_frame.SweepFileError, match=r"expected the results\.csv of a sweep$"):
        sweep_frame.load(folder / "results.csv")


def test_repeated_rows_keep_the_columns_in_order(folder):
    path = folder / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[1:2]) + "\n")  # the first row again, as two writers would leave it
    frame = sweep_frame.load(path)
    assert list(frame.columns)[:3] == lines[0].split(",")[:3] and frame.attrs["notes"]
    assert len(frame) == len(lines) - 1


def test_the_lock_file_names_its_holder(tmp_path):
    assert lock.holder(tmp_path) is None
    (tmp_path / lock.LOCK).write_text("4242\n")
    assert lock.holder(tmp_path) == 4242
    (tmp_path / lock.LOCK).write_text("not a pid\n")
    assert lock.holder(tmp_path) is None


@pytest.mark.parametrize("name, data, why", [
    ("bad.npy", b"garbage\xff", "ValueError"), ("bad.txt", b"1 2 x\n", "could not convert string 'x'"),
    ("bad.pt", b"garbage\xff", "UnpicklingError"),
])
def test_an_input_file_it_cannot_read_is_named(tmp_path, name, data, why):
    path = tmp_path / name
    path.write_bytes(data)
    done = _invoke("fit", "examples/classifier.py:resnet_attn", "--input", f"3x32x32:file={path}")
    _one_line_error(done, f"cannot read the values of --input '3x32x32:file={path}' from {path}", why)
