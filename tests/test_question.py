"""The question as one value: built once, frozen, written whole into every output and read back,
so an answer rebuilt from files is the answer first given, whichever torch rebuilds it."""

import contextvars
import dataclasses
import filecmp
import importlib
import json
import pkgutil
import shutil
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

import sa_profiler
from sa_profiler.cli import cli
from sa_profiler.question import Parallel, Question, make_question
from sa_profiler.sweeps import largest
from sa_profiler.sweeps import sweep as sweeping
from sa_profiler.targets import gpus

T4 = gpus.lookup("t4")
SLOW_T4 = replace(T4, fp32_flops=T4.fp32_flops / 100, fp16_flops=T4.fp16_flops / 100, bandwidth=T4.bandwidth / 100)
MY_CARD = replace(T4, key="my-card-16gb", name="My Card 16GB", aliases=("mine",))


@pytest.mark.parametrize("card", [T4, SLOW_T4, MY_CARD, gpus.host(), gpus.custom(12 * 2**30),
                                  gpus.resized(gpus.lookup("h100"), 12 * 2**30)])
def test_a_question_reads_back_as_written(card):
    q = make_question(card, 0.25, torch_version="2.4", amp="bf16", optimizer="sgd",
                      parallel=Parallel(4, "fsdp"))
    doc = json.loads(json.dumps(q.to_json()))  # through text, as a file holds it
    back = Question.from_json(doc)
    assert back == q and back.card == card and back.canonical() == q.canonical()
    assert doc["usable_bytes"] == q.usable == card.total_memory - card.context_bytes - int(card.total_memory * 0.25)


def test_a_question_is_frozen_and_hashable():
    q = make_question("t4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.headroom = 0
    assert hash(q) == hash(make_question("t4")) and q == make_question("t4")


def test_every_part_changes_the_key():
    base = make_question(T4, 0.1, torch_version="2.8")
    others = [make_question(SLOW_T4, 0.1, torch_version="2.8"), make_question(T4, 0.2, torch_version="2.8"),
              make_question(T4, 0.1, torch_version="2.9"), make_question(T4, 0.1, torch_version="2.8", amp="fp16"),
              make_question(T4, 0.1, torch_version="2.8", optimizer="sgd"),
              replace(base, engine="measure"),
              make_question(T4, 0.1, torch_version="2.8", parallel=Parallel(2, "ddp"))]
    keys = {q.canonical() for q in others}
    assert base.canonical() not in keys and len(keys) == len(others)


def test_the_installed_torch_by_default():
    from importlib.metadata import version

    assert make_question("t4").torch_version == version("torch")
    assert make_question("t4", torch_version=" 2.6 ").torch_version == "2.6"
    assert make_question("cpu").on_cpu and make_question("cpu").gpu is None and make_question("t4").gpu == T4


@pytest.mark.parametrize("kwargs,error", [
    (dict(torch_version="9.9"), "--torch-version '9.9': expected X.Y or X.Y.Z"),
    (dict(torch_version="2.3"), "--torch-version '2.3': expected X.Y or X.Y.Z"),
    (dict(torch_version="2.4", engine="measure"), "measuring runs the installed one"),
    (dict(engine="guess"), "unknown engine 'guess'"),
    (dict(amp="fp8"), "unknown amp 'fp8'"),
])
def test_a_bad_question_is_one_line(kwargs, error):
    with pytest.raises(ValueError, match=error) as err:
        make_question("t4", **kwargs)
    assert "\n" not in str(err.value)


def test_the_torch_range_is_inclusive():
    from sa_profiler.torch_compat import SUPPORTED

    for edge in SUPPORTED:
        assert make_question("t4", torch_version=edge).torch_version == edge


@pytest.mark.parametrize("world,strategy,error", [
    (0, "ddp", "world size must be a positive integer"), (-1, "fsdp", "positive"), (True, "ddp", "positive"),
    (2.0, "ddp", "positive"), (2, "zero", "unknown parallel strategy 'zero'"), (2, "single", "needs a strategy"),
])
def test_a_bad_parallel_setting_is_refused(world, strategy, error):
    with pytest.raises(ValueError, match=error):
        Parallel(world, strategy)


def test_parallel_boundaries():
    assert Parallel() == Parallel(1, "single") and Parallel(1, "ddp").world_size == 1
    assert Parallel(64, "fsdp").strategy == "fsdp"


@pytest.mark.parametrize("doc", [{}, {"card": {}}, {"card": "t4", "torch_version": "2.4", "headroom_bytes": 0},
                                 {"card": dataclasses.asdict(T4), "torch_version": "2.4"}, [], "t4"])
def test_what_is_not_a_question_is_one_line(doc):
    with pytest.raises(ValueError, match="^not a question: ") as err:
        Question.from_json(doc)
    assert "\n" not in str(err.value)


def test_a_question_needs_a_card_object():
    with pytest.raises(TypeError, match="a question's card is a targets.gpus.GPU, not str"):
        Question("t4", "2.4")


def test_no_module_holds_a_torch_version():
    """The torch whose rules apply travels in the question: no context variable, no global."""
    found = []
    for info in pkgutil.walk_packages(sa_profiler.__path__, "sa_profiler."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, contextvars.ContextVar) and "torch" in value.name.lower():
                found.append(f"{info.name}.{name}")
    assert found == []
    from sa_profiler.attention import backends

    assert not hasattr(backends, "assume_torch") and not hasattr(backends, "assumed_torch")


# -- the card given is the card answered for --------------------------------------------------
def test_the_largest_batch_search_of_a_sweep_uses_the_card_given(tmp_path):
    def searched(card, out):
        spec = sweeping.Sweep(make_question(card), [("sdpa", {})], ["float16"], ["train"], [64], [(32, 32)], [1, 2])
        return largest.search(sweeping.run(spec, out), spec.questions)[0]

    slow, usual, mine = searched(SLOW_T4, tmp_path / "a"), searched(T4, tmp_path / "b"), searched(MY_CARD, tmp_path / "c")
    assert slow["max_batch"] == usual["max_batch"] == mine["max_batch"] > 2
    assert float(slow["time_s"]) > 3 * float(usual["time_s"]) and mine["status"] == "ok"
    assert mine["device_name"] == "My Card 16GB"


def test_a_folder_searched_again_reads_the_card_from_meta(tmp_path):
    spec = sweeping.Sweep(make_question(SLOW_T4), [("sdpa", {})], ["float16"], ["train"], [64], [(32, 32)], [1, 2])
    rows = sweeping.run(spec, tmp_path)
    largest.write(largest.search(rows, spec.questions), tmp_path)
    first = (tmp_path / "largest.csv").read_bytes()
    (tmp_path / "largest.csv").unlink()
    largest.ensure(tmp_path)
    assert (tmp_path / "largest.csv").read_bytes() == first  # the slow card's times, read from meta.json


def test_fit_finds_the_largest_batch_on_a_card_not_in_the_catalogue():
    mine = fit_on(MY_CARD)
    t4 = fit_on(T4)
    assert mine.max_batch == t4.max_batch > 1 and mine.question.card == MY_CARD
    assert mine.to_json()["question"]["card"]["name"] == "My Card 16GB"


def fit_on(card):
    from sa_profiler.models.fit import fit

    return fit("examples/sagan.py:Generator", ["128"], 2, make_question(card), conversions=(), timeline=False,
               find_max_batch=True)


def test_fit_with_a_question_takes_the_options_given_over_it():
    from sa_profiler.models.fit import FitError, fit

    q = make_question("a100", torch_version="2.8", optimizer="sgd")
    r = fit("examples/sagan.py:Generator", ["128"], 2, q, amp="bf16", conversions=(), timeline=False)
    assert (r.question.optimizer, r.question.amp, r.torch_version, r.optimizer) == ("sgd", "bf16", "2.8", "sgd")
    with pytest.raises(FitError, match="--torch-version '1.0'"):
        fit("examples/sagan.py:Generator", ["128"], 2, q, torch_version="1.0", conversions=(), timeline=False)


# -- a report rebuilt from files answers as the sweep did ---------------------------------------
SWEEP = ["sweep", "--gpu", "h100", "--torch-version", "2.4", "--batch", "1,2", "--channels", "64", "--res", "64",
         "--impl", "sdpa", "--dtype", "fp16", "--mode", "train"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "s1"
    result = CliRunner().invoke(cli, [*SWEEP, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("keep_meta", [True, False])
def test_a_report_rebuilt_from_results_alone_equals_the_sweeps_own_largest(swept, tmp_path, keep_meta):
    assert torch.__version__.split("+")[0] != "2.4"  # asked under another torch than the one running
    lines = (swept / "largest.csv").read_text().splitlines()
    assert "efficient" in lines[1] and lines[1].endswith(",2.4")  # 2.4 had cuDNN last: memory-efficient
    copy = tmp_path / "copy"
    shutil.copytree(swept, copy)
    (copy / "largest.csv").unlink()
    if not keep_meta:
        for name in ("meta.json", "results.json", "report.html"):
            (copy / name).unlink()
    result = CliRunner().invoke(cli, ["report", str(copy / "results.csv")])
    assert result.exit_code == 0, result.output
    assert filecmp.cmp(copy / "largest.csv", swept / "largest.csv", shallow=False)


def test_the_sweeps_files_hold_its_question_whole(swept):
    meta = json.loads((swept / "meta.json").read_text())
    question = Question.from_json(meta["questions"][0])
    assert question.torch_version == "2.4" and question.card == gpus.lookup("h100")
    assert question.usable == meta["target"]["usable_bytes"]
    rows = sweeping.read_rows(swept / "results.csv")
    assert {r["torch_version"] for r in rows} == {"2.4"} and {int(r["usable_bytes"]) for r in rows} == {question.usable}


def test_the_headline_json_holds_its_question_whole():
    result = CliRunner().invoke(cli, ["--gpu", "t4", "--shape", "64x16x16", "--mode", "train", "--dtype", "fp16",
                                      "--torch-version", "2.5", "--headroom", "1G", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    q = Question.from_json(doc["question"])
    assert (q.card, q.torch_version, q.headroom, q.engine) == (T4, "2.5", 2**30, "simulate")
    assert q.usable == doc["target"]["usable_bytes"]


@pytest.mark.parametrize("argv", [
    ["--gpu", "t4", "--shape", "64x16x16"],
    ["--gpu=colab", "--shape", "64x16x16", "--headroom", "512M", "--torch-version=2.6"],
    ["--gpu-mem", "12G", "--shape", "64x16x16", "--headroom", "0%"],
    ["--shape", "64x16x16", "--gpu-mem", "8GiB", "--gpu-mem", "12G"],  # the last one given counts, as in click
])
def test_the_answer_cache_keys_on_the_question_the_command_answers(argv):
    from sa_profiler.advice import answer_cache

    result = CliRunner().invoke(cli, [*argv, "--mode", "train", "--dtype", "fp16", "--impl", "sdpa", "--json"])
    assert result.exit_code == 0, result.output
    answered = Question.from_json(json.loads(result.stdout)["question"])
    assert answer_cache.question([*argv, "--json"]) == answered.canonical()


def test_the_cache_key_moves_with_every_part_of_the_question(monkeypatch):
    from sa_profiler.advice import answer_cache

    argv = ["--gpu", "t4", "--shape", "64x16x16"]
    base = answer_cache.key(argv)
    monkeypatch.setattr(gpus, "lookup", lambda name: SLOW_T4)  # the same words, another card behind them
    assert answer_cache.key(argv) != base


def test_a_layers_step_and_a_models_step_are_one_kind_of_outcome():
    """The largest-batch search takes either: both say their status, baseline and peak over it."""
    from sa_profiler.engine import Workload, simulate
    from sa_profiler.engine.workload import Outcome
    from sa_profiler.models.fit import StepResult, load, run_step

    layer = simulate(Workload("sdpa", 1, 64, 8, 8, "float16", "train", "t4"), make_question("t4"))
    model = run_step(load("examples/sagan.py:Generator"), ["128"], 1, make_question("t4"))
    assert isinstance(layer, Outcome) and isinstance(model, Outcome)
    assert model.peak_bytes + model.baseline_bytes == model.peak_total and model.peak_bytes > 0
    assert StepResult(None, 7, status="oom").peak_bytes is None


def test_a_question_is_changed_with_replace_not_rebuilt():
    q = make_question("t4")
    with pytest.raises(TypeError, match="takes a card, not a Question"):
        make_question(q, torch_version="2.4")
    with pytest.raises(TypeError, match="not int"):
        make_question(4)
    from sa_profiler.models.fit import FitError, fit

    with pytest.raises(FitError, match="not int"):
        fit("examples/sagan.py:Generator", ["128"], 2, 4, conversions=(), timeline=False)


# -- each part as written and read -----------------------------------------------------------
def test_the_json_of_a_question_field_by_field():
    q = make_question(T4, 2**30, torch_version="2.8", amp="fp16", optimizer="sgd", parallel=Parallel(2, "ddp"))
    doc = q.to_json()
    assert set(doc) == {"card", "torch_version", "headroom_bytes", "usable_bytes", "amp", "optimizer", "engine",
                        "parallel"}
    assert (doc["torch_version"], doc["headroom_bytes"], doc["amp"], doc["optimizer"], doc["engine"]) == \
        ("2.8", 2**30, "fp16", "sgd", "simulate")
    assert doc["usable_bytes"] == T4.total_memory - T4.context_bytes - 2**30
    assert doc["parallel"] == {"world_size": 2, "strategy": "ddp", "reshard_after_forward": True,
                               "find_unused_parameters": False}
    assert doc["card"]["capability"] == [7, 5] and doc["card"]["aliases"] == list(T4.aliases)
    assert doc["card"]["key"] == "t4" and doc["card"]["fp16_flops"] == T4.fp16_flops
    text = q.canonical()
    assert text == json.dumps(doc, sort_keys=True, separators=(",", ":")) and '"key":"t4"' in text
    assert text.startswith('{"amp":"fp16","card":{"aliases":')


def test_what_a_written_question_may_leave_out():
    doc = make_question(T4, 0, torch_version="2.8").to_json()
    for key in ("amp", "optimizer", "engine", "parallel", "usable_bytes"):
        del doc[key]
    del doc["card"]["aliases"]
    doc["card"]["a_later_field"] = 1  # a card field this version does not know is left out
    q = Question.from_json(doc)
    assert (q.amp, q.optimizer, q.engine, q.parallel) == (None, "adam", "simulate", Parallel())
    assert q.card == replace(T4, aliases=()) and q.headroom == 0


@pytest.mark.parametrize("text,value", [("10%", 0.1), ("0%", 0.0), ("99.5%", 0.995), (" 25% ", 0.25),
                                        ("512M", 512 * 2**20), ("1G", 2**30)])
def test_headroom_as_written(text, value):
    from sa_profiler.question import parse_headroom

    assert parse_headroom(text) == value and type(parse_headroom(text)) is type(value)


@pytest.mark.parametrize("text,error", [
    ("100%", "--headroom 100% is out of range: expected a percentage from 0% up to (not including) 100%"),
    ("-1%", "--headroom -1% is out of range"), ("nan%", "--headroom nan% is out of range"),
    ("abc%", "cannot read --headroom 'abc%': expected a percentage from 0% up to (not including) 100%, such as "
             "10%, or a size such as 512M"),
    ("lots", "cannot read --headroom 'lots': expected"),
])
def test_headroom_refused(text, error):
    from sa_profiler.question import parse_headroom

    with pytest.raises(ValueError) as err:
        parse_headroom(text)
    assert str(err.value).startswith(error)


def test_headroom_in_bytes_or_a_fraction():
    from sa_profiler.question import headroom_bytes

    assert headroom_bytes(T4, 0.25) == int(T4.total_memory * 0.25)
    assert headroom_bytes(T4, 1.0) == 1 and headroom_bytes(T4, 1) == 1  # 1 is a byte, not the whole card
    assert headroom_bytes(T4, 0.999) == int(T4.total_memory * 0.999) and headroom_bytes(T4, 2.0) == 2


def test_options_as_the_command_line_gives_them():
    from sa_profiler.question import from_options

    q = from_options(None, "12G", "1G", "2.6")
    assert (q.card, q.headroom, q.torch_version) == (gpus.custom(12 * 2**30), 2**30, "2.6")
    assert from_options("t4", None).card == T4 and from_options("t4", None).headroom == int(T4.total_memory * 0.1)
    assert from_options("t4", "8G").card.total_memory == 8 * 2**30  # a size wins: the CLI refuses both earlier
    with pytest.raises(ValueError, match="^no card: give --gpu NAME or --gpu-mem SIZE$"):
        from_options(None, None)
    with pytest.raises(ValueError, match="12Q"):
        from_options(None, "12Q")
    with pytest.raises(gpus.UnknownGPU):
        from_options("t5", None)


def test_the_selection_facts_follow_the_question():
    from sa_profiler.attention import backends

    assert make_question("cpu").caps() is backends.CPU
    caps = make_question("h100", torch_version="2.9").caps()
    assert caps == gpus.lookup("h100").caps("2.9") and caps.torch_version == "2.9" and caps.cudnn_preferred


def test_a_bad_value_says_its_name_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"^unknown engine 'guess'; expected one of simulate, measure$"):
        Question(T4, "2.8", engine="guess")
    with pytest.raises(ValueError, match=r"^unknown amp 'fp8'; expected one of fp16, bf16$"):
        Question(T4, "2.8", amp="fp8")
    with pytest.raises(ValueError, match=r"^world size must be a positive integer, got 0$"):
        Parallel(0, "ddp")
    with pytest.raises(ValueError, match=r"^unknown parallel strategy 'zero'; expected one of single, ddp, fsdp$"):
        Parallel(2, "zero")
    with pytest.raises(ValueError, match=r"^world size 2 needs a strategy: ddp or fsdp$"):
        Parallel(2)


def test_without_torch_metadata_the_version_is_named_unknown(monkeypatch):
    from sa_profiler.torch_compat import versions

    monkeypatch.setattr(versions, "installed_version", lambda: None)
    import sa_profiler.torch_compat as tc

    monkeypatch.setattr(tc, "installed_version", lambda: None)
    assert make_question("t4").torch_version == "unknown"
    assert make_question("t4").parallel == Parallel() and make_question("t4").engine == "simulate"
