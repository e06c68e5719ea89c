"""The whole-model engine's own guarantees: AMP through checkpoint recompute, independent
conversions, inputs of any dtype, loading real project layouts, the CPU target, instances,
the per-op timeline, layouts that meta kernels get wrong, convert() in float64."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sa_profiler import build, convert

from sa_profiler.targets import gpus
from sa_profiler.cli import cli
from sa_profiler.engine.layouts import conv_format, suggests_channels_last
from sa_profiler.models.fit import FitError, fit, load, meta_copy, run_step
from sa_profiler.models.inputs import Input, InputError, parse, parse_all

ROOT = Path(__file__).resolve().parent.parent
GEN = ("examples/sagan.py:Generator", {"ch": 8, "image_size": 32})


def test_amp_with_every_conversion_is_ok_and_lowers_the_peak():
    """The chunked[checkpoint=True] conversion recomputes in the backward; under AMP the
    recompute must run in float16 as torch's checkpoint restores the autocast state (it failed
    with CheckpointError: saved float32, recomputed float16)."""
    factory = load(*GEN)
    amp = fit(factory, 128, 4, "a100", amp="fp16")
    full = fit(factory, 128, 4, "a100")
    for label, step in amp.conversions.items():
        assert step.status == "ok", (label, step.message)
    assert amp.step.peak_total < full.step.peak_total
    assert amp.conversions["chunked[chunk=1024][checkpoint=True]"].peak_total < \
        full.conversions["chunked[chunk=1024][checkpoint=True]"].peak_total


def test_checkpointed_sdpa_is_routed_in_the_recompute():
    """Autograd runs the recompute with no torch-function mode; the simulation's mode is a
    device context that checkpoint re-enters, so the recomputed SDPA call is the fused kernel,
    not math's N x N map: the checkpointed step's peak stays far below the math one."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    class Block(nn.Module):
        def __init__(self, force_math=False):
            super().__init__()
            self.qkv = nn.Linear(64, 192)
            self.force_math = force_math

        def forward(self, x):
            def attend(x):
                q, k, v = self.qkv(x).view(x.shape[0], -1, 3, 4, 16).permute(2, 0, 3, 1, 4)
                if self.force_math:
                    return (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).sum()
                return F.scaled_dot_product_attention(q, k, v).sum()
            return checkpoint(attend, x, use_reentrant=False)

    sim = run_step(lambda: Block(), ["2048x64"], 2, gpus.lookup("a100"), amp="fp16")
    math = run_step(lambda: Block(force_math=True), ["2048x64"], 2, gpus.lookup("a100"), amp="fp16")
    assert sim.status == "ok" and sim.backends == {"flash": 1}
    assert sim.peak_total < math.peak_total / 4  # math keeps 2 x 4 heads x 2048^2 maps in the recompute
    cpu_sim = run_step(lambda: Block(), ["2048x64"], 2, None)
    cpu_real = run_step(lambda: Block(), ["2048x64"], 2, None, device="cpu")
    assert cpu_sim.peak_total == cpu_real.peak_total


def test_a_failing_conversion_is_a_row_not_the_answer(monkeypatch):
    from sa_profiler.models import fit as fit_module

    real = fit_module.run_step

    def flaky(*args, **kwargs):
        if kwargs.get("convert_to") and kwargs["convert_to"][0] == "chunked":
            raise FitError("chunk failed on purpose")
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "run_step", flaky)
    result = fit_module.fit(load(*GEN), 128, 2, "t4")
    assert result.step.status == "ok" and result.conversions["sdpa"].status == "ok"
    bad = result.conversions["chunked[chunk=1024][checkpoint=True]"]
    assert bad.status == "error" and "on purpose" in bad.message
    data = result.to_json()
    assert data["conversions"]["chunked[chunk=1024][checkpoint=True]"]["status"] == "error"


@pytest.mark.parametrize("text,want", [
    ("3x224x224", Input((3, 224, 224))),
    ("128", Input((128,))),
    (128, Input((128,))),
    ((3, 8, 8), Input((3, 8, 8))),
    ("ids=77:int64", Input((77,), torch.int64, "ids")),
    ("timestep=scalar:int64", Input((), torch.int64, "timestep", batched=False)),
    ("t=B:float16", Input((), torch.float16, "t")),
    ("mask=16x16:bool", Input((16, 16), torch.bool, "mask")),
])
def test_input_forms(text, want):
    assert parse(text) == want


@pytest.mark.parametrize("bad", ["3xx4", "0x3", "ids=77:int65", "1bad=3", "", "x=scalar:complex"])
def test_bad_inputs_say_the_form(bad):
    with pytest.raises(InputError, match="expected"):
        parse(bad)


def test_input_order_and_names():
    assert [i.name for i in parse_all(["3x8x8", "timestep=scalar:int64"])] == [None, "timestep"]
    assert [i.name for i in parse_all({"sample": (3, 8, 8), "timestep": "scalar:int64"})] == ["sample", "timestep"]
    with pytest.raises(InputError, match="positional input"):
        parse_all(["t=B:int64", "3x8x8"])
    with pytest.raises(InputError, match="given twice"):
        parse_all(["a=3", "a=4"])


def test_inputs_of_other_dtypes_reach_the_model():
    seen = {}

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 8)

        def forward(self, ids, mask=None, t=None):
            seen.update(ids=(ids.dtype, tuple(ids.shape)), mask=(mask.dtype, tuple(mask.shape)),
                        t=(t.dtype, tuple(t.shape)))
            return self.emb(ids).masked_fill(~mask[..., None], 0).sum() * t.float().sum()

    r = run_step(Model, ["16:int64", "mask=16:bool", "t=scalar:int64"], 4, None)
    assert r.status == "ok"
    assert seen == {"ids": (torch.int64, (4, 16)), "mask": (torch.bool, (4, 16)), "t": (torch.int64, ())}
    assert r.breakdown["input"] == 4 * 16 * 8 + 4 * 16 + 8


def test_file_beside_import_loads_from_any_directory(tmp_path):
    """`from spectral import SpectralNorm` beside sagan_models.py, as `python FILE.py` sees it."""
    out = subprocess.run([sys.executable, "-m", "sa_profiler.cli", "fit",
                          str(ROOT / "examples/zoo/sagan_repo/sagan_models.py:Generator"),
                          "--arg", "batch_size=2", "--arg", "image_size=64", "--arg", "conv_dim=8",
                          "--input", "100", "--batch", "2", "--gpu", "t4", "--json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["sagan_layers"] == 2 and data["status"] == "ok"


def test_file_in_a_package_uses_its_relative_imports(tmp_path):
    pkg = tmp_path / "proj" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "proj" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text("from torch import nn\nWIDTH = 8\n")
    (pkg / "net.py").write_text("from torch import nn\nfrom .layers import WIDTH\n"
                                "def build():\n    return nn.Sequential(nn.Linear(4, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1))\n")
    factory = load(str(pkg / "net.py") + ":build")
    assert run_step(factory, 4, 2, None).status == "ok"


def test_cpu_target_simulated_and_measured():
    runner = CliRunner()
    sim = runner.invoke(cli, ["fit", "examples/zoo/vit.py:vit_tiny_test", "--input", "3x32x32", "--batch", "2",
                              "--gpu", "cpu", "--json"])
    meas = runner.invoke(cli, ["fit", "examples/zoo/vit.py:vit_tiny_test", "--input", "3x32x32", "--batch", "2",
                               "--gpu", "cpu", "--engine", "measure", "--json"])
    assert sim.exit_code == 0 and meas.exit_code == 0, (sim.output, meas.output)
    a, b = json.loads(sim.stdout), json.loads(meas.stdout)
    assert a["peak_bytes"] == b["peak_bytes"] and a["engine"] == "simulate" and b["engine"] == "measure"
    assert a["sdpa_backends"] == {"flash": 2}
    assert [c["backend"] for c in a["attention_calls"]] == ["flash", "flash"]
    assert {c["module"] for c in a["attention_calls"]} == {"blocks.0.attn", "blocks.1.attn"}


@pytest.mark.parametrize("args,message", [
    (["--gpu", "t4", "--engine", "measure"], "--engine measure runs the step on this CPU"),
    (["--gpu", "cpu", "--amp", "fp16"], "--amp emulates CUDA autocast"),
    (["--input", "ids=3:int99"], "unknown dtype"),
])
def test_bad_fit_options_are_one_line(args, message):
    base = ["fit", "examples/zoo/vit.py:vit_tiny_test", "--batch", "2"]
    if "--input" not in args:
        base += ["--input", "3x32x32"]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_an_instance_is_profiled_as_itself_without_copying_weights():
    """It used to be rebuilt with default arguments: Generator(ch=8, image_size=32) was
    profiled as the default Generator, 70x larger."""
    from examples.sagan import Generator  # noqa: E402 (examples is a folder of scripts)

    small = Generator(ch=8, image_size=32)
    by_instance = fit(small, 128, 2, "t4")
    by_factory = fit(lambda: Generator(ch=8, image_size=32), 128, 2, "t4")
    assert by_instance.step.peak_total == by_factory.step.peak_total
    assert by_instance.model == "Generator"
    twin = meta_copy(small)
    assert all(p.is_meta for p in twin.parameters()) and not any(p.is_meta for p in small.parameters())
    assert [p.requires_grad for p in twin.parameters()] == [p.requires_grad for p in small.parameters()]


def test_int_input_shape_in_python():
    assert fit(load(*GEN), 128, 2, "t4").input_shape == (128,)


def test_timeline_marks_the_peak():
    r = run_step(load(*GEN), 128, 2, gpus.lookup("t4"), timeline=True)
    assert r.timeline and r.peak_index is not None
    phases = [p for _, _, p, _ in r.timeline]
    assert {"forward", "backward", "optimizer"} <= set(phases)
    assert max(a for _, a, _, _ in r.timeline) == r.peak_total


def test_channels_last_rules():
    x = torch.empty(2, 8, 4, 4, device="meta").to(memory_format=torch.channels_last)
    w = torch.empty(8, 8, 3, 3, device="meta")
    assert suggests_channels_last(x) and not suggests_channels_last(w)
    assert conv_format(x, w) is torch.channels_last
    assert conv_format(x.double(), w.double()) is torch.contiguous_format
    assert conv_format(torch.empty(2, 8, 4, 4, device="meta"), w) is torch.contiguous_format


class _ChannelsLastNet(nn.Module):
    """A conv fed channels-last (as diffusers' attention hands it back), then a flatten that is
    a view of a contiguous tensor and a copy of a channels-last one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)

    def forward(self, x):
        y = self.conv(x.contiguous(memory_format=torch.channels_last))
        return self.norm(y).sum() + torch.flatten(y, 1).sum()


def test_conv_output_layout_matches_the_cpu(monkeypatch):
    """A channels-last input gives a channels-last output on the CPU (mkldnn) and on CUDA
    (cuDNN); the meta kernel returns contiguous, which the layout rule corrects. Without the
    rule the simulated step misses the reshape's copy."""
    from sa_profiler.engine import layouts

    def forward_high(step):
        return max(a for _, a, phase, _ in step.timeline if phase == "forward")

    real = run_step(_ChannelsLastNet, ["8x32x32"], 4, None, device="cpu", timeline=True)
    sim = run_step(_ChannelsLastNet, ["8x32x32"], 4, None, timeline=True)
    assert (sim.peak_total, forward_high(sim)) == (real.peak_total, forward_high(real))
    x = torch.empty(4, 8, 32, 32, device="meta").to(memory_format=torch.channels_last)
    meta_out = torch.nn.functional.conv2d(x, torch.empty(8, 8, 3, 3, device="meta"), padding=1)
    if not meta_out.is_contiguous(memory_format=torch.channels_last):  # the meta kernel's layout (2.5 and later)
        monkeypatch.setattr(layouts.LayoutRules, "restride", lambda self, func, args, out: out)
        assert forward_high(run_step(_ChannelsLastNet, ["8x32x32"], 4, None, timeline=True)) != forward_high(real)


def test_convert_keeps_float64_exact():
    model = nn.Sequential(build("reference", 16)).double()
    with torch.no_grad():
        model[0].gamma.fill_(0.7)
        x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
        before = model[0](x)[0]
    assert convert(model, "sdpa") == 1
    assert model[0].gamma.dtype == torch.float64 and model[0].gamma.item() == 0.7
    assert torch.allclose(model[0](x)[0], before, rtol=0, atol=1e-12)


def test_measured_step_reports_attention_as_the_simulation_does():
    """A real CPU step logs the SDPA calls torch runs (the same mode, observing), so the
    measured answer names the same attention modules, backends and share as the simulated."""
    factory = load("examples/zoo/bert.py:bert_mini", {"vocab_size": 100, "hidden": 64, "layers": 2})
    inputs = ["input_ids=16:int64", "attention_mask=16:int64"]
    sim = run_step(factory, inputs, 2, None)
    real = run_step(factory, inputs, 2, None, device="cpu")
    assert sim.attention_calls == real.attention_calls and sim.backends == real.backends == {"math": 2}
    assert sim.attention_layers == real.attention_layers == 2
    assert sim.attention_bytes == real.attention_bytes > 0


def test_reentrant_checkpoint_recompute_is_routed_through_module_hooks():
    """Reentrant checkpoint (Hugging Face's default) re-runs the module in the backward with no
    torch-function mode and no device context to restore; fit's module hooks re-enter the
    simulation's mode around it, so the recomputed SDPA call is the fused kernel again."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    class Attention(nn.Module):
        def __init__(self, force_math=False):
            super().__init__()
            self.qkv = nn.Linear(64, 192)
            self.force_math = force_math

        def forward(self, x):
            q, k, v = self.qkv(x).view(x.shape[0], -1, 3, 4, 16).permute(2, 0, 3, 1, 4)
            if self.force_math:
                return torch.softmax(q @ k.transpose(-1, -2), -1) @ v
            return F.scaled_dot_product_attention(q, k, v)

    class Model(nn.Module):
        def __init__(self, force_math=False):
            super().__init__()
            self.embed = nn.Linear(64, 64)  # so the checkpoint's input requires grad, as in a real stack
            self.attn = Attention(force_math)

        def forward(self, x):
            return checkpoint(self.attn, self.embed(x), use_reentrant=True).sum()

    a100 = gpus.lookup("a100")
    fused = run_step(lambda: Model(), ["2048x64"], 2, a100, amp="fp16", timeline=True)
    math = run_step(lambda: Model(force_math=True), ["2048x64"], 2, a100, amp="fp16")
    assert fused.status == "ok" and fused.backends == {"flash": 1}
    assert fused.peak_total < math.peak_total / 4
    flash_ops = [op for op, _, phase, _ in fused.timeline if phase == "backward" and op.startswith("_scaled_dot")]
    assert "_scaled_dot_product_flash_attention" in flash_ops  # recomputed, routed, in the backward
    assert run_step(lambda: Model(), ["2048x64"], 2, None).peak_total == \
        run_step(lambda: Model(), ["2048x64"], 2, None, device="cpu").peak_total
