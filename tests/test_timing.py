"""The time model (sa_profiler/engine/timing.py) against the committed H100 measurements, and
where its estimates are shown and used."""

import dataclasses
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from click.testing import CliRunner

from sa_profiler.targets import gpus

from sa_profiler.validation import timing_fit
from sa_profiler.cli import cli
from sa_profiler.engine import Record, Workload, simulate, timing
from sa_profiler.engine import timing_constants as fitted
from sa_profiler.advice.recommend import Row, profile_row, recommend
from sa_profiler.question import make_question

README = Path(__file__).resolve().parent.parent / "docs" / "how-the-numbers-are-made.md"  # its "Time estimates"


@pytest.fixture(scope="module")
def heldout():
    return timing_fit.load(timing_fit.HELDOUT)


@pytest.fixture(scope="module")
def main_grid():
    return timing_fit.load(timing_fit.MAIN)


@pytest.fixture(scope="module")
def heldout_figures(heldout):
    return timing_fit.check(heldout)


# -- accuracy on the held-out grid ----------------------------------------------------------
def test_heldout_grid_is_the_committed_one(heldout):
    assert len(heldout) == fitted.HELDOUT["rows"] >= 300
    assert {s.w.impl for s in heldout} == {"reference", "sdpa", "chunked"}


def test_heldout_ratio_median_and_p90(heldout_figures):
    """Issue goal: median of measured / estimated within 0.77-1.3; the p90 of the error factor
    max(ratio, 1/ratio) at most 2."""
    assert 0.77 <= heldout_figures["median_ratio"] <= 1.3, heldout_figures
    assert heldout_figures["p90_factor"] <= 2.0, heldout_figures


def test_heldout_order_of_implementations(heldout_figures):
    """Within one configuration, the estimate orders two implementations as measured: in at
    least 85 % of the pairs measured more than 20 % apart, and 90 % of those more than 50 % apart."""
    assert heldout_figures["order_pairs"] >= 500
    assert heldout_figures["order_agreement"] >= 0.85, heldout_figures
    assert heldout_figures["order_agreement_50pct"] >= 0.90, heldout_figures


@pytest.mark.xfail(strict=True, reason="not met: the measured times are noisier than 20 % (identical steps, "
                                       "same ops, are measured more than 20 % apart in most pairs; README)")
def test_heldout_order_at_20_percent_reaches_90_percent(heldout_figures):
    assert heldout_figures["order_agreement"] >= 0.90


def test_identical_steps_show_the_measurement_noise(heldout_figures):
    """The reason for the xfail above, held against the data: most pairs of identical steps
    (same ops and host calls, different option spelling) were measured more than 20 % apart."""
    assert heldout_figures["identical_pairs"] >= 20
    assert heldout_figures["noise_pairs"] / heldout_figures["identical_pairs"] > 0.5


def test_committed_figures_are_todays(heldout_figures):
    """timing_constants.HELDOUT is what the check gives with today's simulator (rerun
    `python -m sa_profiler.validation.timing_fit` when the simulator's ops change)."""
    for key in ("median_ratio", "typical_factor", "p90_factor", "order_agreement"):
        assert heldout_figures[key] == pytest.approx(fitted.HELDOUT[key], abs=0.02), key


def test_constants_come_from_the_fit(main_grid):
    """The committed constants are what the fit on the main grid gives (within 5 %)."""
    c = timing_fit.fit(main_grid)
    committed = timing.Constants.fitted()
    assert c.efficiency.keys() == committed.efficiency.keys()
    for got, want in [(c.efficiency, committed.efficiency), (c.launch_s, committed.launch_s),
                      (c.step_s, committed.step_s), (c.host_s, committed.host_s),
                      (c.bandwidth_efficiency, committed.bandwidth_efficiency)]:
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=0.05), key


def test_readme_shows_the_check_command_output(heldout):
    out = io.StringIO()
    with redirect_stdout(out):
        assert timing_fit.main(["--check"]) == 0
    text = README.read_text()
    assert "python -m sa_profiler.validation.timing_fit --check" in text
    for line in out.getvalue().splitlines():
        assert line in text, f"docs/how-the-numbers-are-made.md's 'Time estimates' is stale; paste the output of the command:\n{line}"


def test_fit_command_usage_error():
    assert timing_fit.main(["--bogus"]) == 2


# -- the model ------------------------------------------------------------------------------
def _ops(w: Workload) -> list[timing.Op]:
    timer = timing.StepTimer(gpus.lookup(w.target))
    assert simulate(w, timer=timer).status == "ok"
    return timer.ops


def test_op_kinds_and_directions():
    ops = _ops(Workload("sdpa", 1, 64, 16, 16, "float16", "train", "h100", {"backend": "efficient"}))
    kinds = {(op.kind, op.backward) for op in ops}
    assert ("efficient forward half", False) in kinds and ("efficient backward half", True) in kinds
    assert ("gemm fp16", False) in kinds and ("view", False) in kinds
    ref = _ops(Workload("reference", 1, 64, 16, 16, "float32", "forward", "h100"))
    assert {"gemm fp32", "softmax", "pointwise", "view"} <= {op.kind for op in ref}
    assert all(op.flops > 0 for op in ref if op.kind == "gemm fp32")


def test_launch_costs_dominate_small_steps():
    """A 16 x 16 map is a few microseconds of arithmetic; the estimate is hundreds (launches)."""
    rec = simulate(Workload("reference", 1, 64, 16, 16, "float32", "forward", "h100"))
    assert 1e-4 < rec.time_s < 2e-3


def test_other_cards_scale_by_peak_rates():
    """A card with half the peak rates and bandwidth takes twice the arithmetic time (the host
    costs stay); a large step is slower on an A100 than on an H100."""
    w = Workload("reference", 1, 128, 128, 128, "float16", "train", "h100")
    ops = _ops(w)
    h100 = gpus.lookup("h100")
    half = dataclasses.replace(h100, name="half an H100", fp16_flops=h100.fp16_flops / 2,
                               fp32_flops=h100.fp32_flops / 2, bandwidth=h100.bandwidth / 2)
    c = timing.Constants.fitted()
    fixed = timing.step_seconds([], w, h100, c) + sum(c.launch_s[op.launch_group] for op in ops)
    full_h = timing.step_seconds(ops, w, h100, c)
    full_half = timing.step_seconds(ops, w, half, c)
    assert full_h > 1.5 * fixed  # the arithmetic matters at this size
    assert full_half - fixed == pytest.approx(2 * (full_h - fixed), rel=1e-9)
    a100 = simulate(Workload("reference", 1, 128, 128, 128, "float16", "train", "a100-80gb"))
    assert a100.time_s > full_h


def test_time_method_says_estimated_and_unmeasured_elsewhere():
    h100 = simulate(Workload("sdpa", 1, 64, 32, 32, "float16", "train", "h100"))
    t4 = simulate(Workload("sdpa", 1, 64, 32, 32, "float16", "train", "t4"))
    factor = f"x{timing.typical_factor():.2f}"
    assert h100.time_method.startswith("estimate") and factor in h100.time_method
    assert "unmeasured" not in h100.time_method
    assert "unmeasured" in t4.time_method and "Tesla T4" in t4.time_method
    assert "no measurement has checked" in timing.assumption(gpus.lookup("t4"))
    assert "no measurement" not in timing.assumption(gpus.lookup("h100"))


def test_host_calls():
    assert timing.host_calls(Workload("sdpa", 1, 64, 8, 8, options={"backend": "flash"})) == {"forced sdpa backend": 1}
    w = Workload("chunked", 1, 64, 64, 64, mode="train", options={"chunk": 1024, "checkpoint": True})
    assert timing.host_calls(w) == {"checkpointed chunk": 4}
    assert timing.host_calls(Workload("chunked", 1, 64, 64, 64, options={"chunk": 1024, "checkpoint": True})) == {}


def test_time_at_a_batch_is_simulated_not_scaled():
    """Launch costs do not grow with the batch: the time shown at the largest batch is a timed
    simulation at that batch, not batch 1 times the batch."""
    target = make_question(gpus.lookup("h100"))
    row = profile_row(target, "sdpa", {}, "float16", "train", 64, 32, 32, 64)
    direct = simulate(Workload("sdpa", 64, 64, 32, 32, "float16", "train", "h100"))
    assert row.at_batch.time_s == pytest.approx(direct.time_s)
    assert row.at_batch.time_s < 64 * row.per_image.time_s


# -- the recommendation ---------------------------------------------------------------------
def _row(impl, options, seconds, peak, batch=8):
    w = Workload(impl, batch, 64, 32, 32, "float16", "train", "h100", options)
    rec = Record(w, peak_bytes=peak * batch, baseline_bytes=0, time_s=seconds * batch, source="simulated")
    one = Record(w.with_batch(1), peak_bytes=peak, baseline_bytes=0, time_s=seconds, source="simulated")
    return Row(impl, options, "float16", "train", per_image=one, at_batch=rec, batch=batch, max_batch=batch, fits=True)


def test_recommendation_ties_go_to_more_headroom():
    factor = timing.typical_factor()
    fast_big = _row("sdpa", {}, 1.0e-3, 2**30)
    near_small = _row("chunked", {"chunk": 1024}, 1.0e-3 * (1 + (factor - 1) / 2), 2**20)
    rec = recommend([fast_big, near_small], "train", None)
    assert rec.row is near_small and "typical error" in rec.reason


def test_recommendation_outside_the_error_goes_to_the_faster():
    factor = timing.typical_factor()
    fast_big = _row("sdpa", {}, 1.0e-3, 2**30)
    slow_small = _row("chunked", {"chunk": 1024}, 1.0e-3 * factor * 1.5, 2**20)
    rec = recommend([fast_big, slow_small], "train", None)
    assert rec.row is fast_big and "fastest" in rec.reason


def test_measured_times_are_not_tied():
    a, b = _row("sdpa", {}, 1.0e-3, 2**30), _row("chunked", {"chunk": 1024}, 1.05e-3, 2**20)
    for r in (a, b):
        r.at_batch.source = r.per_image.source = "measured"
    assert recommend([a, b], "train", None).row is a


# -- display ---------------------------------------------------------------------------------
def test_json_says_estimated_with_error():
    result = CliRunner().invoke(cli, ["--gpu", "h100", "--shape", "64x32x32", "--dtype", "fp16", "--mode", "train",
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    timed = [r for r in data["rows"] if r["time_s"] is not None]
    assert timed and all(r["time_source"] == "estimated" for r in timed)
    assert all(r["time_error_factor"] == pytest.approx(timing.typical_factor()) for r in timed)
    assert any("times are estimates" in a for a in data["assumptions"])


def test_table_marks_estimates():
    result = CliRunner().invoke(cli, ["--gpu", "t4", "--shape", "64x32x32", "--dtype", "fp16", "--mode", "train"])
    assert result.exit_code == 0, result.output
    out = re.sub(r"\s+", " ", result.output)
    assert re.search(r"[0-9.]+ [mµu]?s\*", out), out
    assert f"* estimated (typical error x{timing.typical_factor():.2f}" in out
    assert "no measurement has checked" in out
