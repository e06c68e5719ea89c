"""Whole-model fit: CPU byte-exact, PyTorch's MemTracker, conversions, the forum model, bad input."""

import json

import pytest
import torch
from click.testing import CliRunner

from sa_profiler.cli import cli
from sa_profiler.models.fit import FitError, fit, load, run_step
from sa_profiler.testing import assert_fits

EXAMPLES = [
    ("examples/sagan.py:Generator", {"ch": 8, "image_size": 32}, (128,), 4),
    ("examples/sagan.py:Discriminator", {"ch": 8, "image_size": 32}, (3, 32, 32), 4),
    ("examples/classifier.py:resnet_attn", {"width": 16, "num_classes": 10}, (3, 64, 64), 2),
]
IDS = [e[0].split(":")[1] for e in EXAMPLES]


@pytest.mark.parametrize("spec,args,shape,batch", EXAMPLES, ids=IDS)
@pytest.mark.parametrize("optimizer", ["sgd", "sgd-momentum", "adam", "adamw"])
def test_simulated_step_equals_cpu_measurement(spec, args, shape, batch, optimizer):
    factory = load(spec, args)
    sim = run_step(factory, shape, batch, None, optimizer=optimizer)
    meas = run_step(factory, shape, batch, None, optimizer=optimizer, device="cpu")
    assert sim.peak_total == meas.peak_total
    assert sim.breakdown == meas.breakdown and sim.modules == meas.modules
    assert sim.breakdown["parameters"] > 0 and sim.attention_layers == 2


@pytest.mark.parametrize("spec,args,shape,batch", EXAMPLES, ids=IDS)
def test_within_two_percent_of_pytorch_memtracker(spec, args, shape, batch):
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")
    factory = load(spec, args)
    sim = run_step(factory, shape, batch, None, optimizer="adam")
    torch.manual_seed(0)
    model, x = factory(), torch.randn(batch, *shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x).float().mean()
        loss.backward()
        del loss
        opt.step()

    step()  # the tracked step is the steady state, as in the simulation
    tracker = mem_tracker.MemTracker()
    tracker.track_external(model, opt, x)
    with tracker:
        step()
    total = sum(v["Total"] for v in tracker.get_tracker_snapshot("peak").values())
    assert abs(sim.peak_total - total) <= 0.02 * total, (sim.peak_total, total)


@pytest.mark.parametrize("spec,args,shape,batch", EXAMPLES, ids=IDS)
def test_conversion_lowers_the_peak_within_the_attention_share(spec, args, shape, batch):
    result = fit(load(spec, args), shape, batch, "t4")
    classic = result.step
    assert set(result.conversions) == {"sdpa", "chunked[chunk=1024][checkpoint=True]"}
    for label, conv in result.conversions.items():
        again = run_step(load(spec, args), shape, batch, result_gpu("t4"), convert_to=_parse(label))
        assert again.peak_total == conv.peak_total  # the table is what convert() gives
        # the peak cannot drop by more than the attention layers' share of it shrank
        assert classic.peak_total - conv.peak_total <= classic.attention_bytes - conv.attention_bytes


def result_gpu(name):
    from sa_profiler.targets import gpus
    return gpus.lookup(name)


def _parse(label):
    impl = label.split("[")[0]
    opts = {}
    for kv in label[len(impl):].strip("[]").split("]["):
        if kv:
            k, v = kv.split("=")
            opts[k] = int(v) if v.isdigit() else v == "True"
    return impl, opts


def test_forum_model_does_not_fit_a_t4_until_converted():
    result = fit(load("examples/classifier.py:forum_cnn"), (128, 256, 256), 1, "t4")
    assert not result.fits and result.step.peak_total > 5 * 16 * 2**30  # five N x N float32 matrices
    sdpa = result.conversions["sdpa"]
    assert sdpa.peak_total <= result.usable
    # here the attention layer makes the peak: converting it removes what the breakdown attributed
    drop = result.step.peak_total - sdpa.peak_total
    assert drop == pytest.approx(result.step.attention_bytes - sdpa.attention_bytes, rel=0.01)
    out = CliRunner().invoke(cli, ["fit", "examples/classifier.py:forum_cnn", "--input", "128x256x256", "--batch", "1",
                                   "--gpu", "t4"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "does not fit" in text and 'convert(model, "sdpa")' in text


def test_json_and_max_batch():
    out = CliRunner().invoke(cli, ["fit", "examples/sagan.py:Generator", "--input", "128", "--batch", "2", "--arg", "ch=8",
                                   "--arg", "image_size=32", "--gpu-mem", "1G", "--find-max-batch", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["fits"] and data["max_batch"] >= 2 and data["attention_layers"] == 2
    assert set(data["breakdown"]) == {"parameters", "input", "gradients", "optimizer state", "activations", "temporary",
                                      "library workspaces"}
    factory = load("examples/sagan.py:Generator", {"ch": 8, "image_size": 32})
    from sa_profiler.targets import gpus
    from sa_profiler.question import make_question
    target = make_question(gpus.custom(2**30))
    at = run_step(factory, (128,), data["max_batch"], target.gpu, cap=target.usable)
    over = run_step(factory, (128,), data["max_batch"] + 1, target.gpu, cap=target.usable)
    assert at.status == "ok" and at.peak_total <= target.usable
    assert over.status == "oom" or over.peak_total > target.usable


def test_amp_runs_and_bf16_on_t4_is_refused():
    factory = load("examples/sagan.py:Discriminator", {"ch": 8, "image_size": 32})
    from sa_profiler.targets import gpus
    amp = run_step(factory, (3, 32, 32), 4, gpus.lookup("a100"), amp="bf16")
    full = run_step(factory, (3, 32, 32), 4, gpus.lookup("a100"))
    assert amp.status == "ok" and amp.peak_total != full.peak_total
    with pytest.raises(FitError, match="no bfloat16"):
        run_step(factory, (3, 32, 32), 4, gpus.lookup("t4"), amp="bf16")


def test_assert_fits_helper():
    small = load("examples/sagan.py:Discriminator", {"ch": 8, "image_size": 32})
    assert assert_fits(small, (3, 32, 32), 4, "t4").fits
    with pytest.raises(AssertionError, match=r"forum_cnn at batch 1 needs .* on Tesla T4"):
        assert_fits("examples/classifier.py:forum_cnn", "128x256x256", 1, "t4")


BAD = [
    (["nope.py:Model", "--input", "128"], "no such file: 'nope.py'"),
    (["examples/sagan.py:Nope", "--input", "128"], "has no 'Nope'"),
    (["examples/sagan.py", "--input", "128"], "expected FILE.py:NAME, module:NAME, timm:NAME"),
    (["examples/sagan.py:Generator"], "needs its inputs: give --input"),
    (["examples/sagan.py:Generator", "--input", "128:int64:pad=2"], "pad=F takes the padded fraction"),
    (["examples/sagan.py:Generator", "--input", "128:int64:range=9..3"], "range=LO..HI takes two integers"),
    (["examples/sagan.py:Generator", "--input", "128:int64:file=nope.pt"], "no file 'nope.pt'"),
    (["examples/sagan.py:Generator", "--input", "128:int64:twos"], "expected ones, zeros, pad=F, range=LO..HI or file=PATH"),
    (["no_such_module_xyz:Model", "--input", "128"], "no module 'no_such_module_xyz'"),
    (["examples/sagan.py:Generator", "--input", "128", "--arg", "bogus=1"], "building the model failed: TypeError"),
    (["examples/sagan.py:Discriminator", "--input", "128", "--arg", "ch=8"], "the model rejected a batch of 1 x 128"),
    (["examples/sagan.py:Generator", "--input", "128", "--batch", "0"], "--batch must be a positive integer"),
    (["examples/sagan.py:Generator", "--input", "128", "--optimizer", "lion"], "unknown optimizer 'lion'"),
    (["examples/sagan.py:Generator", "--input", "12a"], "cannot read --input '12a'"),
    (["examples/sagan.py:Generator", "--input", "128", "--arg", "ch"], "cannot read --arg 'ch'"),
    (["examples/sagan.py:Generator", "--input", "128", "--amp", "bf16", "--gpu", "t4"], "no bfloat16"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_fit_input_is_one_line_exit_2(args, message):
    result = CliRunner().invoke(cli, ["fit", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
