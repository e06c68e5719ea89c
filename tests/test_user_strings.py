"""User strings print as text (never as rich markup), and a repeated implementation is one row."""

import json

from click.testing import CliRunner
from rich.console import Console

from sa_profiler.cli import _sweep_summary, cli
from sa_profiler.targets import gpus
from sa_profiler.advice.recommend import candidates

MODEL = '''
import torch.nn as nn


def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten())
'''


def test_model_name_with_markup_prints_as_text(tmp_path, monkeypatch):
    folder = tmp_path / "x["
    folder.mkdir()
    (folder / "b]y.py").write_text(MODEL)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["fit", "x[/b]y.py:tiny", "--input", "3x8x8", "--batch", "2", "--gpu", "t4"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "x[/b]y.py:tiny" in result.stdout


def test_sweep_summary_keeps_the_backend_label():
    rows = [{"impl": "sdpa", "options": '{"backend": "flash"}', "dtype": "float16", "mode": "train", "status": "ok",
             "tokens": 64, "total_bytes": 2**20}]
    console = Console(record=True, width=200)
    _sweep_summary(rows, console)
    assert "sdpa [backend=flash]" in console.export_text()


def test_flash_listed_twice_is_one_row():
    result = CliRunner().invoke(cli, ["--gpu-mem", "12G", "--shape", "128x256x256", "--mode", "train", "--dtype",
                                      "fp16", "--impl", "reference,sdpa,sdpa:flash,chunked,pooled", "--json"])
    assert result.exit_code == 0, result.output
    rows = [(r["impl"], json.dumps(r["options"], sort_keys=True)) for r in json.loads(result.stdout)["rows"]]
    assert len(rows) == len(set(rows))
    assert ("sdpa", '{"backend": "flash"}') in rows


def test_candidates_are_unique():
    got = candidates(gpus.lookup("t4"), "float16", "train", 128, ["sdpa", "sdpa:efficient", "sdpa", "chunked", "chunked"])
    assert len(got) == len({(n, json.dumps(o, sort_keys=True)) for n, o in got})
    assert ("sdpa", {}) in got
