"""A whole model's estimated time per training step (`StepResult.time_s`) is sane.

The numbers are the time model's estimates (engine/timing.py), computed from the simulated
step's ops, not wall-clock times: these tests run no clock.

The relation to a layer's time: a model made of one SAGAN layer runs the layer's forward and
backward as `simulate()` costs it, less the gradient of its input (a model's input takes
none; the layer's own step makes its input require grad, as inside a network), plus the loss's
mean and the optimizer's foreach update. In float32 the two land within a few percent of each
other on a T4 (ratios 1.00 to 1.03 over three shapes) and within 15 % on an H100 (1.11 to
1.14: the optimizer's fixed launches weigh more on the faster card). Under AMP the model runs
float32 parameters through autocast (casts, a float32 softmax), the layer runs in float16
throughout: not the same workload, so only float32 is compared.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from sa_profiler.attention import build
from sa_profiler.cli import cli
from sa_profiler.engine import Workload, runner, simulate, timing
from sa_profiler.fit import fit
from sa_profiler.models.loading import load
from sa_profiler.models.step import run_step
from sa_profiler.targets import gpus
from sa_profiler.units import format_seconds

T4, H100 = gpus.lookup("t4"), gpus.lookup("h100")
GENERATOR = load("examples/sagan.py:Generator", {"ch": 8, "image_size": 32})


@pytest.mark.parametrize("card", ["t4", "h100"])
@pytest.mark.parametrize("impl", ["reference", "sdpa"])
@pytest.mark.parametrize("batch,channels,side", [(8, 128, 32), (2, 64, 64)])
def test_one_layer_model_is_close_to_the_layers_time(card, impl, batch, channels, side):
    layer = simulate(Workload(impl, batch, channels, side, side, "float32", "train", card))
    model = run_step(lambda: build(impl, channels), f"{channels}x{side}x{side}", batch, gpus.lookup(card),
                     optimizer="adam")
    assert layer.time_s and model.time_s
    assert 0.95 < model.time_s / layer.time_s < 1.25, (model.time_s, layer.time_s)


def test_the_time_is_the_last_steps_alone():
    """Plain SGD keeps no state, so both steps run the same ops: the time of two steps run is
    the time of one."""
    def step(n: int) -> float:
        layer = build("reference", 64).to("meta")
        x = torch.empty(2, 64, 16, 16, device="meta")
        opt = torch.optim.SGD(layer.parameters(), lr=0.01, foreach=True)
        timer = timing.StepTimer(T4)
        tracker = runner.tracker_for(T4, "meta", timer=timer)
        runner.run(lambda: runner.Step(layer, [x], loss=lambda out: out[0].mean(), optimizer=opt, steps=n),
                   tracker, T4.caps())
        return timer.total()

    one, two = step(1), step(2)
    assert one > 0 and two == pytest.approx(one, rel=1e-9)


def test_adam_costs_more_than_sgd():
    sgd = run_step(GENERATOR, 128, 4, T4, optimizer="sgd")
    adam = run_step(GENERATOR, 128, 4, T4, optimizer="adam")
    assert adam.time_s > sgd.time_s


def test_time_grows_with_batch():
    times = [run_step(GENERATOR, 128, b, T4).time_s for b in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(times, times[1:])), times


def test_a_slower_card_is_slower():
    slow = dataclasses.replace(T4, fp32_flops=T4.fp32_flops / 10, fp16_flops=T4.fp16_flops / 10,
                               bandwidth=T4.bandwidth / 10)
    fast = run_step(GENERATOR, 128, 16, T4).time_s
    slower = run_step(GENERATOR, 128, 16, slow).time_s
    assert slower > 2 * fast  # the launch costs stay; the kernels take 10x


def test_amp_fp16_is_faster_than_fp32_for_a_conv_heavy_model_on_a_t4():
    """ResNet-50 at 224 x 224: its convolutions run on the T4's fp16 tensor cores under AMP
    (0.54 of fp32's time here). At the zoo's test size (resnet_tiny_test at 32 x 32) a step is
    launch-bound and AMP's casts make it slower, as they would on the card."""
    resnet50 = load("examples/zoo/resnet.py:resnet50")
    fp32 = run_step(resnet50, "3x224x224", 8, T4).time_s
    fp16 = run_step(resnet50, "3x224x224", 8, T4, amp="fp16").time_s
    assert fp16 < 0.8 * fp32, (fp16, fp32)


def test_cpu_target_and_measured_steps_have_no_time():
    assert run_step(GENERATOR, 128, 2, None).time_s is None
    measured = run_step(GENERATOR, 128, 2, None, device="cpu")
    assert measured.ok and measured.time_s is None and measured.time_method == ""
    doc = fit(GENERATOR, 128, 2, "cpu", conversions=()).to_json()
    assert doc["time_s"] is None and doc["samples_per_second"] is None
    assert doc["time_error_factor"] is None and doc["time_model"] is None


def test_json_and_console_read_the_same_numbers():
    result = fit(GENERATOR, 128, 8, "t4")
    doc = result.to_json()
    s = result.step
    assert s.time_s and s.time_method == timing.method(T4)
    assert doc["time_s"] == s.time_s and doc["samples_per_second"] == pytest.approx(8 / s.time_s)
    assert doc["time_error_factor"] == timing.typical_factor() and doc["time_model"] == timing.assumption(T4)
    assert set(doc["conversions"]) == set(result.conversions)
    for label, c in result.conversions.items():
        assert c.time_s and doc["conversions"][label]["time_s"] == c.time_s
        assert doc["conversions"][label]["samples_per_second"] == result.samples_per_second(c)

    out = CliRunner().invoke(cli, ["fit", "examples/sagan.py:Generator", "--arg", "ch=8", "--arg", "image_size=32",
                                   "--input", "128", "--batch", "8", "--gpu", "t4"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    as_json = CliRunner().invoke(cli, ["fit", "examples/sagan.py:Generator", "--arg", "ch=8", "--arg",
                                       "image_size=32", "--input", "128", "--batch", "8", "--gpu", "t4", "--json"])
    cli_doc = json.loads(as_json.output)
    assert cli_doc["time_s"] == doc["time_s"]
    text = " ".join(out.output.split())
    assert (f"Time per step: {format_seconds(cli_doc['time_s'])}, {cli_doc['samples_per_second']:,.1f} samples/s "
            f"(estimated, typical error x{cli_doc['time_error_factor']:.2f}") in text
    for c in cli_doc["conversions"].values():
        assert format_seconds(c["time_s"]) in text


def test_amp_answer_times_its_fp32_step_too():
    result = fit(GENERATOR, 128, 8, "t4", amp="fp16", compare_fp32=True, conversions=())
    doc = result.to_json()
    assert doc["fp32"]["time_s"] == result.fp32_step.time_s and result.fp32_step.time_s > 0
    assert doc["time_s"] == result.step.time_s


def test_the_fit_page_shows_the_time_the_json_has(tmp_path):
    from sa_profiler.models.fit import fit
    from sa_profiler.report.fit_html import write_html
    from sa_profiler.units import format_seconds

    result = fit("examples/sagan.py:Generator", ["128"], 4, "t4", conversions=(), timeline=False)
    page = write_html(result, tmp_path / "fit.html", "sa-profile fit").read_text()
    doc = result.to_json()
    assert doc["time_s"] is not None and f"Time per step: <b>{format_seconds(doc['time_s'])}</b>" in page
    assert f"{doc['samples_per_second']:,.1f} samples/s" in page
