"""A step that does not fit says why, in every view: never an empty reason."""

import io
import json

from click.testing import CliRunner
from rich.console import Console

from sa_profiler.cli import cli
from sa_profiler.models.fit import fit
from sa_profiler.report.console import render_fit

GENERATOR = ["fit", "examples/sagan.py:Generator", "--input", "128", "--gpu", "t4"]


def test_over_the_usable_memory_says_by_how_much():
    result = fit("examples/sagan.py:Generator", ["128"], 64, "t4")
    s = result.step
    assert not result.fits and s.ok and s.fits_cap is False
    assert s.message.endswith("over the usable memory") and s.message[0].isdigit()
    out = io.StringIO()
    render_fit(result, Console(file=out, width=200))
    assert "does not fit (" + s.message + ")" in out.getvalue() and "()" not in out.getvalue()
    assert result.to_json()["message"] == s.message


def test_the_cli_gives_the_reason_and_a_fitting_batch_gives_none():
    over = CliRunner().invoke(cli, GENERATOR + ["--batch", "64", "--json"])
    doc = json.loads(over.output)
    assert doc["fits"] is False and "over the usable memory" in doc["message"]
    fits = CliRunner().invoke(cli, GENERATOR + ["--batch", "1", "--json"])
    doc = json.loads(fits.output)
    assert doc["fits"] is True and doc["message"] == ""
