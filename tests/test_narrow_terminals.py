"""Names and numbers stay whole at any terminal width.

Each console view (the headline's tables and its "Why" tensors, fit's breakdowns, SDPA calls,
conversions and fused-attention lines, the sweep summary, the GPU catalogue) is rendered at 40,
60, 80, 100 and 200 columns. Every word and every number (a number with its unit, `285.21 MiB`,
is one token) that the 200-column rendering prints is printed whole at each narrower width, the
names the view is about (implementations, backends, modules, GPUs) each on one line, and nothing
is cut with rich's ellipsis. Where a table cannot fit, it is printed one record per row
(`name: value` lines) rather than with names folded."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from sa_profiler.cli import cli
from sa_profiler.report import console as views
from sa_profiler.report import layout

ROOT = Path(__file__).resolve().parents[1]
WIDE = 200
NARROW = (40, 60, 80, 100)
ENV = {"SA_PROFILER_CACHE": "off"}

UNIT = r"(?:B|KiB|MiB|GiB|TiB|s|ms|us|µs|ns)"
# a number, with its unit where it has one: one token ("285.21 MiB", "2.09 s*", "4096")
NUMBER = re.compile(rf"(?<![\w.])\d[\d.,]*(?: {UNIT}(?!\w)\*?)?")


def tokens(text: str) -> Counter:
    """The words of a rendering (punctuation at their ends aside) and its numbers with their units."""
    words = Counter(w.strip(".,;:()") for w in text.split() if re.search(r"\w", w))  # table rules aside
    numbers = Counter(m.group(0).rstrip(".,") for m in NUMBER.finditer(text))
    return words + numbers


def render(view, width: int) -> str:
    console = Console(width=width, file=io.StringIO())
    view(console)
    return console.file.getvalue()


def captured(args: list[str], name: str):
    """Run the CLI once and keep the object it hands to views.<name> (rendered here at each width)."""
    got = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setattr(views, name, lambda result, console: got.append(result))
        out = CliRunner().invoke(cli, args, env={**ENV, "COLUMNS": str(WIDE)})
    assert out.exit_code == 0, out.output
    assert len(got) == 1, out.output
    return got[0]


# ---- the views -------------------------------------------------------------------------------

HEADLINES = {
    "train t4": ["--gpu", "t4", "--shape", "128x256x256", "--mode", "train", "--dtype", "fp16"],
    "batch asked": ["--gpu-mem", "2G", "--shape", "32x16x16", "--mode", "forward", "--dtype", "fp16",
                    "--impl", "reference,sdpa,chunked", "--batch", "4639"],
}
FITS = {
    "sagan conversions": ["fit", "examples/sagan.py:Generator", "--input", "128", "--batch", "64", "--gpu", "t4"],
    "sdpa calls": ["fit", "examples/zoo/bert.py:bert_mini", "--input", "input_ids=128:int64", "--input",
                   "attention_mask=128:int64:pad=0.25", "--batch", "16", "--gpu", "t4"],
    "library bert": ["fit", "transformers:bert", "--arg", "num_hidden_layers=1", "--gpu", "t4"],
    "explicit attention": ["fit", "timm:swin_tiny_patch4_window7_224", "--arg", "img_size=56", "--arg", "embed_dim=24",
                           "--arg", "depths=(1,1)", "--arg", "num_heads=(1,2)", "--arg", "window_size=7",
                           "--input", "3x56x56", "--batch", "2", "--gpu", "t4"],
}
LIBRARY = {"library bert": "transformers", "explicit attention": "timm"}


def _names_of_advice(a) -> set[str]:
    names = {a.question.card.name}
    for r in a.rows:
        names |= {r.display, r.backend or "bmm", r.code()}
    return names


def _names_of_fit(result) -> set[str]:
    s = result.step
    names = {result.model, result.card, *s.breakdown, *s.modules, *result.conversions}
    names |= {c["module"] for c in getattr(s, "attention_calls", None) or []}
    return names


@pytest.fixture(scope="module")
def views_rendered(tmp_path_factory):
    """{view: (names, {width: text})}, each view computed once."""
    out = {}
    for key, args in HEADLINES.items():
        a = captured(args, "render_advice")
        out[f"headline {key}"] = (_names_of_advice(a), lambda c, a=a: views.render_advice(a, c))
    for key, args in FITS.items():
        if key in LIBRARY:
            try:
                __import__(LIBRARY[key])
            except ImportError:
                continue
        result = captured(args, "render_fit")
        out[f"fit {key}"] = (_names_of_fit(result), lambda c, r=result: views.render_fit(r, c))
    # the sweep summary of the README's sweep, rows as the sweep hands them over
    from sa_profiler.cli import sweep as sweep_cli

    rows = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_cli, "_sweep_summary", lambda r, console: rows.extend(r))
        res = CliRunner().invoke(cli, ["sweep", "--gpu", "t4", "--batch", "1,2", "--channels", "64", "--res", "32,64",
                                       "--impl", "sdpa,chunked", "--out", str(tmp_path_factory.mktemp("sweep"))],
                                 env=ENV)
    assert res.exit_code == 0, res.output
    labels = {"sdpa", "chunked", "chunked [checkpoint=True]"}
    out["sweep summary"] = (labels, lambda c: sweep_cli._sweep_summary(rows, c))
    from sa_profiler.targets import gpus

    out["gpus"] = ({g.name for g in gpus.CATALOGUE.values()} | set(gpus.CATALOGUE),
                   lambda c: views.render_gpus(gpus.CATALOGUE.values(), c))
    return {name: (names, {w: render(view, w) for w in (*NARROW, WIDE)}) for name, (names, view) in out.items()}


VIEWS = [f"headline {k}" for k in HEADLINES] + [f"fit {k}" for k in FITS] + ["sweep summary", "gpus"]


def _view(views_rendered, name):
    if name not in views_rendered:
        pytest.skip(f"{name}: its library is not installed")
    return views_rendered[name]


@pytest.mark.parametrize("width", NARROW)
@pytest.mark.parametrize("name", VIEWS)
def test_every_token_of_the_wide_rendering_is_whole(views_rendered, name, width):
    names, text = _view(views_rendered, name)
    wide, narrow = tokens(text[WIDE]), tokens(text[width])
    lost = {t: n for t, n in wide.items() if narrow[t] < n}
    assert not lost, f"{name} at {width} columns splits or drops {lost}:\n{text[width]}"
    assert "…" not in text[width], text[width]


@pytest.mark.parametrize("width", NARROW)
@pytest.mark.parametrize("name", VIEWS)
def test_names_stay_on_one_line(views_rendered, name, width):
    """Implementations, backends, GPUs, modules: each printed whole on one line somewhere (a name
    longer than the line itself, less its indentation, is the one exception)."""
    names, text = _view(views_rendered, name)
    lines = [" ".join(line.split()) for line in text[width].splitlines()]
    for n in names:
        n = " ".join(str(n).split())
        if n and any(n in line for line in text[WIDE].splitlines()) and len(n) <= width - 4:
            assert any(n in line for line in lines), f"{name} at {width} columns breaks {n!r}:\n{text[width]}"


@pytest.mark.parametrize("width", NARROW)
@pytest.mark.parametrize("name", VIEWS)
def test_lines_fit_the_width(views_rendered, name, width):
    """No line is wider than the terminal, unless it holds one word (after its `name:` label) too
    long for any line: that word is printed whole and left to the terminal."""
    _, text = _view(views_rendered, name)
    for line in text[width].splitlines():
        if len(line.rstrip()) > width:
            words = re.sub(r"^\s*[^:]*:\s", "", line).split()
            assert len(words) == 1 and len(words[0]) > width - 4, f"{name} at {width}: {line!r}\n{text[width]}"


def test_headline_names_whole_at_80_and_60(views_rendered):
    """The cases this was written for: `chunked/4096` is one word at 80 columns, `1.30 GiB` stays
    by its unit, and at 60 columns the impl and backend of every row are still printed."""
    _, train = views_rendered["headline train t4"]
    assert "chunked/4096" in train[80].split()
    _, asked = views_rendered["headline batch asked"]
    for width in NARROW:  # the phrase wraps as a whole, before it wraps inside
        assert any("1.30 GiB usable of 2.00 GiB" in line for line in asked[width].splitlines()), asked[width]
    for impl in ("reference", "sdpa (auto)", "chunked/1024"):
        assert f"impl: {impl}" in asked[60] or re.search(rf"^ {re.escape(impl)} ", asked[60], re.M), asked[60]
    for backend in ("bmm", "math", "flash"):
        assert re.search(rf"\b{backend}\b", asked[60]), asked[60]


def test_fit_keeps_the_conversion_label_and_module_names(views_rendered):
    _, sagan = views_rendered["fit sagan conversions"]
    for width in NARROW:
        assert "chunked[chunk=1024][checkpoint=True]" in sagan[width].split(), sagan[width]
    if "fit library bert" in views_rendered:
        _, bert = views_rendered["fit library bert"]
        for width in NARROW:
            assert "encoder.layer.0.attention.self" in bert[width].split(), bert[width]


def test_sweep_summary_numbers_whole_at_60(views_rendered):
    _, text = views_rendered["sweep summary"]
    wide = set(NUMBER.findall(text[WIDE]))
    assert any(t.endswith("MiB") for t in wide), text[WIDE]
    for t in wide:
        assert t in text[60], (t, text[60])


@pytest.mark.parametrize("width", [80, 60])
def test_the_cli_honours_columns_and_a_pipe_reads_as_80(width):
    """COLUMNS=W prints as a W-column console does; piped with no COLUMNS, as 80 columns."""
    args = HEADLINES["train t4"]
    env = {**ENV, "COLUMNS": str(width)} if width != 80 else {**ENV, "COLUMNS": None, "LINES": None}
    out = CliRunner().invoke(cli, args, env=env)
    assert out.exit_code == 0, out.output
    assert "…" not in out.output
    assert all(len(line) <= width for line in out.output.splitlines()), out.output
    assert "chunked/4096" in out.output.split() and "sdpa (auto)" in out.output, out.output


@pytest.mark.parametrize("width", range(8, 61, 4))
def test_wrap_never_breaks_a_number_from_its_unit(width):
    """The line breaker itself: numbers with their units, names joined with NB and phrases."""
    console = Console(width=width, file=io.StringIO())
    layout.say(console, "peak 285.21 MiB of 12.77 GiB usable on " + layout.nb("Tesla T4") + ", 2.09 s* per step, "
               "shape 128 x 256 x 256; GeForce RTX 3060 12GB: " + layout.phrase('convert(model, "sdpa")'))
    text = console.file.getvalue()
    for whole in ("285.21 MiB", "12.77 GiB", "Tesla T4", "2.09 s*", "128 x 256 x 256", "GeForce RTX 3060 12GB"):
        assert whole in text.splitlines() or any(whole in line for line in text.splitlines()), (whole, text)
    if width >= len('convert(model, "sdpa")'):
        assert 'convert(model, "sdpa")' in text, text
    assert "\u00a0" not in text and "\u202f" not in text  # copy-paste: plain spaces
