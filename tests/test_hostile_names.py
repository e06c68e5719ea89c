"""Names a user controls are text in every view: the headline, `fit` and a sweep's report, each
on the console, as JSON and as HTML. A name is never markup (HTML or rich), never cut or
changed in the JSON, and never crashes a view."""

import html
import io
import json
import shutil
import sys

import pandas as pd
import pytest
import torch.nn.functional as F
from click.testing import CliRunner
from rich.console import Console
from torch import nn

from sa_profiler.cli import cli

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
MARKUP = "[bold red]x[/]"
NEWLINE = "line\nbreak"
QUOTES = "q\"uo'te"
ENTITY = "&amp;"
LONG = "<i>" + "x" * 197  # 200 characters

CLASS_NAME = SCRIPT + MARKUP
INPUT_NAMES = [SCRIPT, MARKUP, NEWLINE + QUOTES, ENTITY, LONG]  # keyword inputs by the Python API
CLI_INPUT_NAMES = ["i" * 200, "名前_ünï"]  # --input NAME= takes argument names only
# module names cannot hold "." (torch) and here hold no "/" either: see
# test_module_names_with_a_slash_or_named_attention_keep_their_row
MODULE_NAMES = [IMG, "[bold red]x", NEWLINE, QUOTES, ENTITY, LONG]
MODEL_FILE = f'''
import torch.nn.functional as F
from torch import nn

MODULE_NAMES = {MODULE_NAMES!r}


class Attend(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        q = self.proj(x).view(x.shape[0], x.shape[1], 2, 8).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(x.shape)


def _init(self):
    nn.Module.__init__(self)
    for name in MODULE_NAMES:
        self.add_module(name, Attend())


def _forward(self, **inputs):
    x = sum(inputs.values())
    for name in MODULE_NAMES:
        x = getattr(self, name)(x)
    return x


Hostile = type({CLASS_NAME!r}, (nn.Module,), {{"__init__": _init, "forward": _forward}})
globals()[{CLASS_NAME!r}] = Hostile
'''


def _namespace(tmp_path):
    path = tmp_path / "hostile_model.py"
    path.write_text(MODEL_FILE)
    space = {}
    exec(compile(MODEL_FILE, str(path), "exec"), space)
    return path, space["Hostile"]


def _safe_html(page: str) -> None:
    """No markup from a name: only the page's own <script> elements, no <img>, and each
    hostile name there only as escaped text."""
    assert "<img" not in page and "alert(1)</script>" not in page and "<i>xxx" not in page
    assert page.count("<script") == page.count("</script>")


def _module_tables(text: str) -> tuple[str, str]:
    """fit's console tables that name modules: activations by module, and the SDPA calls."""
    by_module = text.split("Activations at the peak by top-level module", 1)[1]
    by_module, calls = by_module.split("scaled_dot_product_attention calls", 1)
    return by_module, calls


def _check_fit_json(doc: dict, model: str, input_names) -> None:
    assert doc["model"] == model
    for name in input_names:
        assert f"{name}=8x16" in doc["inputs"]
    assert [c["module"] for c in doc["attention_calls"]] == MODULE_NAMES
    assert set(MODULE_NAMES) <= set(doc["modules"])


def test_every_view_prints_hostile_names_as_text(tmp_path, monkeypatch):
    from sa_profiler.fit import fit
    from sa_profiler.report.console import render_fit
    from sa_profiler.report.fit_html import fit_html_fragment, render

    monkeypatch.setenv("COLUMNS", "1000")  # no line is folded: the names are read whole
    monkeypatch.setenv("SA_PROFILER_CACHE", "off")
    runner = CliRunner()
    page_name = f"{IMG} [bold red]x {QUOTES} {ENTITY}.html"  # a file name holds no "/"

    # -- the headline: the command is recorded on the page, the page's path is the user's ---------
    argv = ["sa-profile", "--shape", "16x8x8", "--gpu", "t4", "--html", str(tmp_path / page_name), SCRIPT, MARKUP,
            NEWLINE]
    monkeypatch.setattr(sys, "argv", argv)
    args = ["--shape", "16x8x8", "--gpu", "t4", "--dtype", "fp32", "--mode", "forward", "--impl", "reference,sdpa"]
    out = runner.invoke(cli, [*args, "--html", str(tmp_path / page_name)])
    assert out.exit_code == 0 and out.exception is None, out.output
    assert "Recommended" in out.stdout
    out = runner.invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["rows"]
    page = (tmp_path / page_name).read_text()
    _safe_html(page)
    assert html.escape(SCRIPT, quote=True) in page and html.escape(MARKUP) in page

    # -- fit on the command line: the model's name (FILE.py:NAME), its modules and its inputs -------
    model_file, hostile = _namespace(tmp_path)
    spec = f"{model_file}:{CLASS_NAME}"
    fit_args = ["fit", spec, *[f"--input={n}=8x16" for n in CLI_INPUT_NAMES], "--batch", "2", "--gpu", "t4"]
    out = runner.invoke(cli, [*fit_args, "--html", str(tmp_path / ("fit " + page_name))])
    assert out.exit_code == 0 and out.exception is None, out.output
    text = out.stdout
    assert CLASS_NAME in text.split("At the peak")[0]  # rich markup printed as written, not interpreted
    for table in _module_tables(text):
        for name in ("[bold red]x", QUOTES, ENTITY, LONG, IMG, "line", "break"):
            assert name in table, (name, table)
    page = (tmp_path / ("fit " + page_name)).read_text()
    _safe_html(page)
    assert html.escape(CLASS_NAME) in page and html.escape(IMG) in page
    out = runner.invoke(cli, [*fit_args, "--json"])
    assert out.exit_code == 0, out.output
    _check_fit_json(json.loads(out.stdout), spec, CLI_INPUT_NAMES)

    # -- fit by the Python API: the class's own name, keyword inputs by any name ----------------------
    result = fit(hostile, {name: "8x16" for name in INPUT_NAMES}, 2, "t4", conversions=())
    assert result.model == CLASS_NAME
    console = io.StringIO()
    render_fit(result, Console(file=console, width=1000))
    text = console.getvalue()
    head = text.split("At the peak")[0]
    assert CLASS_NAME in head and f"{MARKUP}=8x16" in head and f"{SCRIPT}=8x16" in head and f"{LONG}=8x16" in head
    for table in _module_tables(text):
        assert "[bold red]x" in table and IMG in table and LONG in table
    assert CLASS_NAME in repr(result)
    _check_fit_json(json.loads(json.dumps(result.to_json())), CLASS_NAME, INPUT_NAMES)
    for page in (render(result), fit_html_fragment(result), result._repr_html_()):
        _safe_html(page)
        assert html.escape(CLASS_NAME) in page and html.escape(f"{SCRIPT}=8x16") in page

    # -- a sweep's report: implementation, options and device names from its results.csv ------------
    sweep = tmp_path / "sweep"
    out = runner.invoke(cli, ["sweep", "--batch", "1", "--channels", "16", "--res", "8", "--impl", "reference,sdpa",
                              "--dtype", "fp32", "--mode", "forward", "--gpu", "t4", "--out", str(sweep)])
    assert out.exit_code == 0, out.output
    hostile_sweep = tmp_path / "hostile sweep"
    hostile_sweep.mkdir()
    frame = pd.read_csv(sweep / "results.csv")
    assert len(frame) == 2
    frame["impl"] = [SCRIPT, MARKUP]
    frame["options"] = [json.dumps({"backend": SCRIPT}), json.dumps({"chunk": IMG + QUOTES})]
    frame["device_name"] = [f"{IMG} {ENTITY} {NEWLINE}", LONG]
    frame.to_csv(hostile_sweep / "results.csv", index=False)
    shutil.copy(sweep / "largest.csv", hostile_sweep / "largest.csv")
    out = runner.invoke(cli, ["report", str(hostile_sweep / "results.csv"), "--out", str(hostile_sweep / page_name)])
    assert out.exit_code == 0 and out.exception is None, out.output
    page = (hostile_sweep / page_name).read_text()
    _safe_html(page)
    assert html.escape(SCRIPT) in page and html.escape(IMG) in page and html.escape(ENTITY) in page


def test_module_names_with_a_slash_or_named_attention_keep_their_row():
    from sa_profiler.fit import fit

    def block():
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = block()  # a plain block that happens to be named so
            for name in (SCRIPT, MARKUP, "a/b"):
                self.add_module(name, block())

        def forward(self, x):
            x = self.attention(x)
            for name in (SCRIPT, MARKUP, "a/b"):
                x = getattr(self, name)(x)
            return x

    step = fit(Named, "16x8", 2, "cpu", conversions=(), timeline=False).step
    assert step.attention_layers == 0 and step.attention_bytes == 0
    assert {"attention", SCRIPT, MARKUP, "a/b"} <= set(step.modules)


def test_hostile_input_name_on_the_command_line_is_one_line_exit_2(tmp_path):
    model_file, _ = _namespace(tmp_path)
    out = CliRunner().invoke(cli, ["fit", f"{model_file}:{CLASS_NAME}", "--input", f"{IMG}=8x16", "--gpu", "t4"])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not an argument name" in lines[0]
