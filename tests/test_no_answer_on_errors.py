"""An answer is never built on errors: a row that could not be computed says why (console and
JSON), and a question whose deciding rows failed exits 2 with the reason instead of
recommending nothing or something worse."""

import json

import pytest
from click.testing import CliRunner

from sa_profiler.attention import routing
from sa_profiler.cli import cli


@pytest.fixture
def broken_sdpa(monkeypatch):
    """Every routed SDPA call fails, as a missing meta kernel did on torch 2.4."""
    monkeypatch.setenv("SA_PROFILER_CACHE", "off")

    def route(self, *args, **kwargs):
        raise RuntimeError("attempted to run this operator with Meta tensors, but there was no fake impl")

    monkeypatch.setattr(routing.AttentionRouting, "route", route)


def test_error_rows_say_why_on_the_console(broken_sdpa):
    out = CliRunner().invoke(cli, ["--gpu", "t4", "--shape", "128x64x64", "--mode", "train", "--dtype", "fp16"],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    lines = [ln for ln in out.output.splitlines() if ln.startswith("error sdpa")]
    assert lines and all("no fake impl" in ln for ln in lines)
    assert "not compared (could not be computed): sdpa" in out.output or "Recommended for train" in out.output


def test_error_rows_say_why_in_the_json(broken_sdpa):
    out = CliRunner().invoke(cli, ["--gpu", "t4", "--shape", "128x64x64", "--mode", "train", "--dtype", "fp16", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    errors = [r for r in doc["rows"] if r["status"] == "error"]
    assert errors and all("no fake impl" in r["message"] for r in errors)
    assert "not compared (could not be computed)" in doc["recommendation"]["reason"]


@pytest.mark.parametrize("impls", ["sdpa", "reference,sdpa"])
def test_no_computable_answer_exits_2_with_the_reason(broken_sdpa, impls):
    """The forum case: the classic layer does not fit, and sdpa, which would, failed: 'nothing
    fits' would be a wrong answer."""
    out = CliRunner().invoke(cli, ["--gpu-mem", "12G", "--shape", "128x256x256", "--mode", "train",
                                   "--impl", impls, "--dtype", "fp16"])
    assert out.exit_code == 2
    assert out.output.count("\n") == 1 and "no answer for train" in out.output and "no fake impl" in out.output
    assert "Traceback" not in out.output
