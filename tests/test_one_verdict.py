"""One question, one answer: `fit` says "fits" at batch b exactly when b is at most its largest
batch, in the Python API, the JSON, the console, the HTML page and `assert_fits`. The verdict is
the step run with the usable memory as the allocator's cap, as the batch search runs each batch."""

import json

import pytest
from click.testing import CliRunner

from sa_profiler.targets import gpus
from sa_profiler.cli import cli
from sa_profiler.models.fit import fit, load
from sa_profiler.question import make_question
from sa_profiler.report.fit_html import _answer
from sa_profiler.testing import assert_fits

CASES = [  # model, its arguments, input, target, AMP
    ("examples/sagan.py:Generator", {"ch": 8, "image_size": 32}, ["128"], 2**30, None),
    ("examples/sagan.py:Generator", {"ch": 16, "image_size": 32}, ["128"], 3 * 2**30 // 2, "fp16"),
    ("examples/classifier.py:resnet_attn", {"width": 16, "num_classes": 10}, ["3x64x64"], 2**30, "fp16"),
]


@pytest.mark.slow
@pytest.mark.parametrize("model,args,inputs,memory,amp", CASES, ids=lambda v: str(v)[:24])
def test_fits_exactly_up_to_the_largest_batch(model, args, inputs, memory, amp):
    target = make_question(gpus.custom(memory))
    largest = fit(load(model, args), inputs, 1, target, amp=amp, conversions=(), find_max_batch=True,
                  timeline=False).max_batch
    assert largest and largest > 1
    for batch in (largest - 1, largest, largest + 1):
        result = fit(load(model, args), inputs, batch, target, amp=amp, conversions=(), timeline=False)
        expected = batch <= largest
        assert result.fits == expected, (batch, largest, result.step.peak_total, result.usable, result.step.message)
        assert result.to_json()["fits"] == expected
        assert (">does not fit<" in _answer(result).replace("<b>", ">").replace("</b>", "<")) == (not expected)
        if expected:
            assert_fits(load(model, args), inputs, batch, target, amp=amp, conversions=(), timeline=False)
        else:
            with pytest.raises(AssertionError):
                assert_fits(load(model, args), inputs, batch, target, amp=amp, conversions=(), timeline=False)


@pytest.mark.slow
def test_the_console_and_the_json_say_the_same_with_the_largest_batch(monkeypatch):
    monkeypatch.setenv("SA_PROFILER_CACHE", "off")
    args = ["fit", "examples/sagan.py:Generator", "--arg", "ch=8", "--arg", "image_size=32", "--input", "128",
            "--gpu-mem", "1G", "--find-max-batch"]
    largest = json.loads(CliRunner().invoke(cli, [*args, "--batch", "1", "--json"]).stdout)["max_batch"]
    for batch in (largest, largest + 1):
        doc = json.loads(CliRunner().invoke(cli, [*args, "--batch", str(batch), "--json"]).stdout)
        text = CliRunner().invoke(cli, [*args, "--batch", str(batch)], env={"COLUMNS": "200"}).output
        assert doc["max_batch"] == largest and doc["fits"] == (batch <= largest)
        assert (": does not fit" in text) == (batch > largest) and f"Largest batch that fits: {largest}" in text


@pytest.mark.parametrize("batch", [3, 4, 5, 107, 108, 109])
def test_headline_rows_fit_exactly_up_to_their_largest_batch(batch, monkeypatch):
    """The forum case on a T4 with --batch: every row says yes exactly up to its own largest
    batch (asked without --batch), in the JSON and the table; a row that does not fit shows no peak."""
    monkeypatch.setenv("SA_PROFILER_CACHE", "off")
    base = ["--gpu", "t4", "--shape", "128x256x256", "--mode", "train", "--dtype", "fp16", "--json"]
    largest = {r["label"]: r["max_batch"] for r in json.loads(CliRunner().invoke(cli, base).stdout)["rows"]}
    doc = json.loads(CliRunner().invoke(cli, [*base, "--batch", str(batch)]).stdout)
    for row in doc["rows"]:
        assert row["fits"] == (batch <= largest[row["label"]]), (row["label"], batch)
        assert (row["peak_bytes_at_batch"] is None) == (not row["fits"])
    rec = doc["recommendation"]
    assert (rec["impl"] is None) == (batch > max(largest.values()))
    text = CliRunner().invoke(cli, base[:-1] + ["--batch", str(batch)], env={"COLUMNS": "120"}).output
    for line in text.splitlines():
        if line.startswith((" sdpa (auto)", " chunked")):
            fits = line.split()[-1] == "yes"
            assert fits == ("out of memory" not in line)


@pytest.mark.parametrize("model,args,inputs", [
    ("examples/classifier.py:resnet_attn", {"width": 16, "num_classes": 10}, ["3x32x32"]),
    ("examples/zoo/mha.py:cnn_mha", {"width": 16, "heads": 2}, ["3x32x32"]),
    ("examples/sagan.py:Generator", {"ch": 8, "image_size": 32}, ["128"]),
])
def test_activations_by_module_add_up_to_the_activations(model, args, inputs):
    for target in ("t4", "cpu"):
        s = fit(load(model, args), inputs, 4, target, conversions=(), timeline=False).step
        assert sum(s.modules.values()) == s.breakdown["activations"]


def test_a_row_over_the_usable_memory_at_the_batch_asked_shows_no_peak_anywhere():
    """The chunked row at 4639 completes under the cap but is 20,684 bytes over the usable memory:
    it does not fit, so the console says "out of memory" like the rows that ran out, and the
    JSON has no peak for it."""
    import json as json_

    from click.testing import CliRunner

    from sa_profiler.cli import cli

    ask = ["--gpu-mem", "2G", "--shape", "32x16x16", "--mode", "forward", "--dtype", "fp16",
           "--impl", "reference,sdpa,chunked", "--batch", "4639"]
    rows = {r["label"]: r for r in json_.loads(CliRunner().invoke(cli, ask + ["--json"]).output)["rows"]}
    chunked = rows["chunked[chunk=1024]"]
    assert chunked["max_batch"] == 4638 and chunked["fits"] is False and chunked["peak_bytes_at_batch"] is None
    for r in rows.values():
        assert (r["peak_bytes_at_batch"] is None) == (not r["fits"])
    table = CliRunner().invoke(cli, ask, env={"COLUMNS": "200"}).output
    line = next(x for x in table.splitlines() if "chunked" in x and "4638" in x)
    assert "out of memory" in line and line.rstrip().endswith("no")


def test_a_forced_backend_set_aside_is_not_denied_in_the_reason():
    """On a 12 GiB card at batch 97 the cuDNN row fits; it is not recommended (its memory on sm86
    is assumed), and the reason says so instead of "no exact implementation fits batch 97"."""
    from sa_profiler.advice.advise import advise
    from sa_profiler.question import make_question
    from sa_profiler.targets import gpus

    answer = advise(make_question(gpus.custom(12 * 2**30)), 128, 256, 256, batch=97, dtypes=["fp16"], modes=("train",))
    cudnn = next(r for r in answer.rows if r.options.get("backend") == "cudnn")
    rec = answer.recommendations["train"]
    assert cudnn.fits and cudnn.exact and rec.row is None and rec.alternative is cudnn
    assert rec.reason.startswith("no exact implementation known to run on this card fits batch 97;")
    assert "sdpa (cudnn) would rank first, but is not forced here" in rec.reason
    everything = advise(make_question(gpus.custom(12 * 2**30)), 128, 256, 256, batch=97, dtypes=["fp16"],
                        modes=("train",), impls=["reference", "chunked"])
    assert everything.recommendations["train"].reason.startswith("no exact implementation fits batch 97;")


def test_the_why_figure_is_said_with_the_one_image_figure():
    from sa_profiler.advice.advise import advise
    from sa_profiler.advice.recommend import total_bytes
    from sa_profiler.question import make_question
    from sa_profiler.report.why import why_peak
    from sa_profiler.targets import gpus
    from sa_profiler.units import format_bytes

    answer = advise(make_question(gpus.lookup("t4")), 64, 32, 32, dtypes=["fp16"], modes=("train",))
    w = answer.why
    row = next(r for r in answer.rows if r.impl == "reference")
    assert w["total_bytes"] == total_bytes(row.per_image) == w["peak_bytes"] + w["baseline_bytes"]
    said = why_peak(w)
    assert said == (f"peak {format_bytes(w['peak_bytes'])} above the baseline of {format_bytes(w['baseline_bytes'])} "
                    f"(parameters, input, library workspaces): {format_bytes(w['total_bytes'])} in all, the \"1 image\" "
                    "figure above")
