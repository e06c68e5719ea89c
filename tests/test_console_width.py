"""Tables read in any terminal: at 80 and 100 columns, and piped, no number is cut (rich's
ellipsis never appears; a table too wide for its names and numbers is printed one record per row
instead: see test_narrow_terminals.py)."""

import pytest
from click.testing import CliRunner

from sa_profiler.cli import cli

COMMANDS = [
    ["--gpu", "t4", "--shape", "128x256x256"],
    ["--gpu-mem", "12G", "--shape", "128x64x64", "--batch", "64"],
    ["gpus"],
    ["fit", "examples/sagan.py:Generator", "--arg", "ch=8", "--arg", "image_size=32", "--input", "128", "--batch", "4",
     "--gpu", "t4", "--amp", "fp16", "--find-max-batch"],
    # the SDPA calls table: shapes are numbers too
    ["fit", "examples/zoo/bert.py:bert_mini", "--input", "input_ids=128:int64", "--input",
     "attention_mask=128:int64:pad=0.25", "--batch", "16", "--gpu", "t4"],
]


@pytest.mark.slow
@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a)[:40])
def test_no_number_is_cut(args, width, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = CliRunner().invoke(cli, args, env={"COLUMNS": str(width), "SA_PROFILER_CACHE": "off"})
    assert out.exit_code == 0, out.output
    assert "…" not in out.output
    assert max(len(line) for line in out.output.splitlines()) <= width
    if args[0] == "fit":  # every shape of an SDPA call printed whole
        import json

        doc = json.loads(CliRunner().invoke(cli, [*args, "--json"], env={"SA_PROFILER_CACHE": "off"}).stdout)
        words = {w.strip(",;:()") for w in out.output.split()}
        for call in doc["attention_calls"]:
            for key in ("query", "key", "mask"):
                if call[key]:
                    assert "x".join(map(str, call[key])) in words, (key, call[key], out.output)
