"""A card given as an object is the card answered for: its rates change the estimated times, and
a card that is not in the catalogue is answered, in the headline, a sweep and fit alike."""

from dataclasses import replace

import pytest

from sa_profiler.advice.advise import advise
from sa_profiler.question import make_question
from sa_profiler.models.fit import fit
from sa_profiler.sweeps import sweep as sweeping
from sa_profiler.targets import gpus

T4 = gpus.lookup("t4")
SLOW_T4 = replace(T4, fp32_flops=T4.fp32_flops / 100, fp16_flops=T4.fp16_flops / 100, bandwidth=T4.bandwidth / 100)
MY_CARD = replace(T4, key="my-card-16gb", name="My Card 16GB", aliases=())
ASK = dict(dtypes=["fp16"], modes=("train",), impls=["reference", "sdpa"])


def _rows(card):
    return {r.label: r for r in advise(make_question(card), 128, 64, 64, **ASK).rows}


def test_the_headline_uses_the_rates_of_the_card_given():
    usual, slow = _rows(T4), _rows(SLOW_T4)
    assert usual.keys() == slow.keys()
    for label, row in usual.items():
        assert slow[label].max_batch == row.max_batch  # the same memory
        ratio = slow[label].per_image.time_s / row.per_image.time_s
        assert 5 < ratio <= 100.5, (label, ratio)  # launch costs do not scale with the rates


def test_a_card_not_in_the_catalogue_is_answered():
    with pytest.raises(gpus.UnknownGPU):
        gpus.lookup(MY_CARD.key)
    mine, t4 = _rows(MY_CARD), _rows(T4)
    assert {k: r.max_batch for k, r in mine.items()} == {k: r.max_batch for k, r in t4.items()}
    assert all(r.per_image.device_name == "My Card 16GB" for r in mine.values())


def test_fit_answers_for_the_card_given():
    mine = fit("examples/sagan.py:Generator", ["128"], 2, make_question(MY_CARD), conversions=(), timeline=False)
    t4 = fit("examples/sagan.py:Generator", ["128"], 2, make_question(T4), conversions=(), timeline=False)
    assert mine.card == "My Card 16GB" and mine.step.peak_total == t4.step.peak_total


def test_a_sweep_runs_on_the_card_given(tmp_path):
    def rows(card, out):
        spec = sweeping.Sweep(make_question(card), [("sdpa", {})], ["float16"], ["train"], [64], [(32, 32)], [1, 2])
        return sweeping.run(spec, out)

    mine, slow, t4 = rows(MY_CARD, tmp_path / "a"), rows(SLOW_T4, tmp_path / "b"), rows(T4, tmp_path / "c")
    assert [r["status"] for r in mine] == ["ok", "ok"] and {r["device_name"] for r in mine} == {"My Card 16GB"}
    assert [r["peak_bytes"] for r in mine] == [r["peak_bytes"] for r in t4]
    assert all(float(s["time_s"]) > 3 * float(r["time_s"]) for s, r in zip(slow, t4))  # small steps: launch costs
