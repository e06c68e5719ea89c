"""Bad input gets one line naming the problem and the accepted form, exit code 2, no traceback,
and nothing written: a table of the inputs users were seen to type."""

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli

HEAD = ["--shape", "64x32x32", "--mode", "forward", "--dtype", "fp32", "--impl", "reference"]
FIT = ["fit", "examples/sagan.py:Generator", "--arg", "ch=8", "--arg", "image_size=32", "--input", "128"]
CASES = [
    (["--gpu-mem", "12", *HEAD], "has no unit"),
    (["--gpu-mem", "1K", *HEAD], "leaves no usable memory"),
    (["--gpu-mem", "512MiB", *HEAD], "leaves no usable memory"),
    (["--gpu-mem", "12Q", *HEAD], "cannot read memory size"),
    (["--gpu", "t4"], "--shape is missing"),
    (["--gpu", "t4", "--mode", "train"], "--shape is missing"),
    (["--gpu", "t4", *HEAD, "--html", "{tmp}/missing/page.html"], "cannot write --html"),
    (["--gpu", "t4", *HEAD, "--html", "{tmp}"], "is a directory"),
    ([*FIT, "--gpu", "t4", "--html", "{tmp}/missing/page.html"], "cannot write --html"),
    ([*FIT, "--gpu-mem", "12"], "has no unit"),
    (["sweep", "--gpu", "t4", "--out", "{tmp}/a-file.txt"], "is a file"),
    (["report", "{tmp}/a-file.txt"], "it has no 'impl', 'dtype', 'mode', 'height', 'width', 'peak_bytes' columns"),
    (["--gpu", "t4", *HEAD, "--torch-version", "2.3"], "from 2.4 to 2.14"),
]


@pytest.mark.parametrize("args,says", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2(args, says, tmp_path, monkeypatch):
    monkeypatch.setenv("SA_PROFILER_CACHE", "off")
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    (tmp_path / "a-file.txt").write_text("not a table\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert out.exit_code == 2, out.output
    assert out.output.count("\n") == 1 and out.output.startswith("sa-profile: error: "), out.output
    assert says in out.output and "Traceback" not in out.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "a-file.txt").read_text() == "not a table\n"


def test_no_option_at_all_shows_the_help():
    out = CliRunner().invoke(cli, [])
    assert out.exit_code == 0 and "Usage:" in out.output
