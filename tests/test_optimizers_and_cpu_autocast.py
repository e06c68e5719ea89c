"""The optimizers that hold less state (transformers' Adafactor), the fused variants of Adam and
AdamW, bitsandbytes' 8-bit AdamW (and its refusal where it is missing), and CPU autocast in bfloat16: the simulated CPU
step equals the real one to the byte (peak, breakdown, modules and every op's allocated bytes),
on zoo models and real transformers models; what fused changes on a GPU target; the refusals."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sa_profiler import names
from sa_profiler.cli import cli
from sa_profiler.engine import amp
from sa_profiler.models.fit import FitError, load, run_step
from sa_profiler.models.step import optimizer_available
from sa_profiler.targets import gpus
from zoo_cases import BERT, GPT2, PADDED, zoo

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAVE_BNB = importlib.util.find_spec("bitsandbytes") is not None




def _mlp():  # parameters large beside its activations: the peak comes in the optimizer step
    return nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 512))


def _same(factory, inputs, batch, ops=True, **setting):
    """The simulated CPU step against the real one; `ops`: op by op too (not where a library
    model reads its mask's values: the simulation computes those beside the meta step)."""
    sim = run_step(factory, inputs, batch, None, timeline=True, **setting)
    real = run_step(factory, inputs, batch, None, device="cpu", timeline=True, **setting)
    assert sim.status == real.status == "ok", (sim.message, real.message)
    assert sim.peak_total == real.peak_total
    assert sim.breakdown == real.breakdown and sim.modules == real.modules
    assert sim.backends == real.backends
    if ops:
        assert [t[:3] for t in sim.timeline] == [t[:3] for t in real.timeline]  # op by op, bytes and phase
    return sim


# -- 1. Adafactor ------------------------------------------------------------------------------
needs_transformers = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers is not installed")


@needs_transformers
@pytest.mark.parametrize("case_id", ["vit", "bert"])
def test_adafactor_simulated_equals_real_on_the_zoo(case_id):
    sim = _same(*zoo(case_id), optimizer="adafactor")
    adam = run_step(*zoo(case_id), None)
    # a factored second moment (a row and a column per matrix) and no first moment: far less state
    assert 0 < sim.breakdown["optimizer state"] < adam.breakdown["optimizer state"] / 10


@needs_transformers
def test_adafactor_when_its_step_sets_the_peak():
    sim = _same(_mlp, ["512"], 2, optimizer="adafactor")
    assert sim.timeline[sim.peak_index][2] == "optimizer"


@needs_transformers
@pytest.mark.slow  # the real library's models
@pytest.mark.parametrize("spec,args", [("transformers:bert", BERT), ("transformers:gpt2", GPT2)], ids=["bert", "gpt2"])
def test_adafactor_simulated_equals_real_on_transformers_models(spec, args):
    _same(load(spec, dict(args)), list(PADDED), 4, ops=False, optimizer="adafactor")


@needs_transformers
def test_adafactor_on_a_gpu_target_holds_its_state_on_the_card():
    a100 = gpus.lookup("a100")
    ada = run_step(_mlp, ["512"], 2, a100, optimizer="adafactor")
    adam = run_step(_mlp, ["512"], 2, a100, optimizer="adam")
    assert ada.ok and 0 < ada.breakdown["optimizer state"] < adam.breakdown["optimizer state"] / 100


def test_adafactor_without_transformers_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    why = optimizer_available("adafactor")
    assert why == "Adafactor needs transformers, which is not installed (pip install transformers)"
    with pytest.raises(FitError, match="pip install transformers"):
        run_step(_mlp, ["512"], 2, None, optimizer="adafactor")


# -- 2. 8-bit AdamW -----------------------------------------------------------------------------
@pytest.mark.skipif(HAVE_BNB, reason="bitsandbytes is installed here")
def test_adamw8bit_is_known_and_refused_without_bitsandbytes():
    assert "adamw8bit" in names.OPTIMIZERS
    why = "8-bit AdamW needs bitsandbytes, which is not installed (pip install bitsandbytes)"
    assert optimizer_available("adamw8bit") == why
    with pytest.raises(FitError) as err:
        run_step(_mlp, ["512"], 2, None, optimizer="adamw8bit")
    assert str(err.value) == why
    result = CliRunner().invoke(cli, ["fit", "examples/zoo/vit.py:vit_tiny_test", "--optimizer", "adamw8bit"])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"sa-profile: error: {why}"]


needs_bnb = pytest.mark.skipif(not HAVE_BNB, reason="bitsandbytes is not installed")


def _two_sizes():  # one weight of 4,096 elements or more (8-bit state), the rest smaller (float32)
    return nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 2))


@needs_bnb
def test_adamw8bit_simulated_equals_real_with_its_blockwise_state():
    # not op by op: its quantile maps exist from the optimizer's construction on the CPU, while the
    # simulated step copies them from the host when its first update runs (`step._held_by`)
    sim = _same(_two_sizes, ["512"], 2, ops=False, optimizer="adamw8bit")
    # the 524,288-element weight: two uint8 moments, a float32 absmax per 256-value block of each;
    # the 1,024 bias, the 2,048 weight and the 2 bias: two float32 moments each; the two 256-entry
    # float32 quantile maps, once (bitsandbytes/optim/optimizer.py: Optimizer8bit, blocksize 256)
    big = 512 * 1024
    expected = 2 * big + 2 * 4 * (big // 256) + 2 * 4 * (1024 + 2048 + 2) + 2 * 256 * 4
    assert sim.breakdown["optimizer state"] == expected
    adamw = run_step(_two_sizes, ["512"], 2, None, optimizer="adamw")
    assert adamw.breakdown["optimizer state"] == 2 * 4 * (big + 1024 + 2048 + 2) + 4 * 4  # and a float32 step each


@needs_bnb
def test_adamw8bit_on_a_gpu_target_quarters_the_state():
    t4 = gpus.lookup("t4")
    bnb = run_step(_mlp, ["512"], 2, t4, optimizer="adamw8bit")
    adamw = run_step(_mlp, ["512"], 2, t4, optimizer="adamw")
    assert bnb.ok and adamw.ok
    ratio = bnb.breakdown["optimizer state"] / adamw.breakdown["optimizer state"]
    assert 0.25 < ratio < 0.27  # one byte a value instead of four, and one absmax per 256


def test_which_optimizers_are_available():
    assert {n for n in names.OPTIMIZERS if optimizer_available(n) is None} >= {
        "sgd", "sgd-momentum", "adam", "adamw", "adam-fused", "adamw-fused"}
    assert optimizer_available("lion").startswith("unknown optimizer 'lion'; expected one of sgd,")
    with pytest.raises(FitError, match="unknown optimizer 'lion'"):
        run_step(_mlp, ["512"], 2, None, optimizer="lion")


# -- 3. fused Adam / AdamW ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["adam-fused", "adamw-fused"])
def test_fused_simulated_equals_real_on_the_cpu(name):
    # the CPU's fused kernels are torch 2.4's (the oldest release supported)
    assert names.fused_unsupported(name, "cpu", torch.__version__) is None
    sim = _same(_mlp, ["512"], 2, optimizer=name)
    plain = run_step(_mlp, ["512"], 2, None, optimizer=name.removesuffix("-fused"))
    assert sim.breakdown["optimizer state"] == plain.breakdown["optimizer state"]
    assert sim.peak_total < plain.peak_total  # no per-parameter temporaries in the update


def test_fused_on_a_gpu_target_allocates_no_foreach_intermediates():
    a100 = gpus.lookup("a100")
    foreach = run_step(_mlp, ["512"], 2, a100, optimizer="adamw", timeline=True)
    fused = run_step(_mlp, ["512"], 2, a100, optimizer="adamw-fused", timeline=True)
    ops = {t[0] for t in fused.timeline if t[2] == "optimizer"}
    assert "_fused_adamw_" in ops and not any(op.startswith("_foreach_sqrt") for op in ops)
    assert foreach.timeline[foreach.peak_index][0] == "_foreach_sqrt"  # foreach's peak: its denominators
    # foreach's peak holds one temporary per parameter (the denominators, 512-byte blocks); fused
    # holds the step counts on the card (a 0-dim float32 each, one 512-byte block per parameter)
    assert foreach.breakdown["temporary"] == foreach.breakdown["gradients"]
    assert fused.breakdown["optimizer state"] == foreach.breakdown["optimizer state"] + 4 * 512
    # fused's peak comes in the backward: the update adds nothing to it
    assert fused.timeline[fused.peak_index][2] == "backward"
    assert 0.99 * foreach.breakdown["temporary"] < foreach.peak_total - fused.peak_total < foreach.breakdown["temporary"]


@pytest.mark.parametrize("name,target,version,first", [
    ("adam-fused", "cuda", "1.12", "1.13"), ("adamw-fused", "cuda", "1.13.1", "2.0"),
    ("adamw-fused", "cpu", "2.3.1+cpu", "2.4")])
def test_fused_on_a_torch_without_its_kernels_is_refused(name, target, version, first):
    why = names.fused_unsupported(name, target, version)
    assert why.startswith(f"{name} needs torch {first} or later on ") and "\n" not in why
    assert names.fused_unsupported(name, target, first) is None
    assert names.fused_unsupported("adamw", target, version) is None


def test_fused_on_a_cpu_torch_without_its_kernels_is_refused_by_run_step(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.3.1")
    with pytest.raises(FitError, match="adamw-fused needs torch 2.4 or later on the CPU"):
        run_step(_mlp, ["512"], 2, None, optimizer="adamw-fused")


# -- 4. CPU autocast in bfloat16 ----------------------------------------------------------------
@pytest.mark.parametrize("case_id", ["vit", "bert", "mha", "sagan-D", "resnet-attn"])
def test_cpu_bf16_autocast_simulated_equals_real(case_id):
    sim = _same(*zoo(case_id), amp="bf16")
    fp32 = run_step(*zoo(case_id), None)
    assert sim.peak_total < fp32.peak_total


@needs_transformers
@pytest.mark.slow  # the real library's model
def test_cpu_bf16_autocast_and_adafactor_on_transformers_bert():
    _same(load("transformers:bert", dict(BERT)), list(PADDED), 4, ops=False, amp="bf16", optimizer="adafactor")


def test_cpu_autocast_policy_is_not_cudas():
    import torch.nn.functional as F

    cpu, cuda = amp.AutocastEmulation(torch.bfloat16, "cpu"), amp.AutocastEmulation(torch.bfloat16)
    x = torch.empty(2, 3, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for func in (F.softmax, F.layer_norm, torch.exp):  # CUDA's fp32 list; CPU has no kernel for them
            assert cuda.cast(func, (x.bfloat16(),), {})[0][0].dtype == torch.float32
            assert cpu.cast(func, (x.bfloat16(),), {})[0][0].dtype == torch.bfloat16
        assert cpu.cast(F.linear, (x, x), {})[0][0].dtype == torch.bfloat16
        assert cpu.cast(F.mse_loss, (x.bfloat16(), x), {})[0][0].dtype == torch.float32
        assert cpu.cast(torch.cat, ([x.bfloat16(), x],), {})[0][0][0].dtype == torch.float32
        assert cpu.cast(F.pad, (x.bfloat16(), (1, 1)), {"mode": "reflect"})[0][0].dtype == torch.float32
        assert cpu.cast(F.pad, (x.bfloat16(), (1, 1)), {})[0][0].dtype == torch.bfloat16
    # the measured step: torch's own CPU autocast casts, the emulation nothing
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert amp.AutocastEmulation(torch.bfloat16, "cpu", emulate=False).cast(F.linear, (x, x), {})[0][0] is x


def test_the_cpu_lists_are_ops_with_a_cpu_autocast_kernel():
    import torch.nn.functional as F

    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for op in ("linear", "conv2d", "matmul", "bmm", "addmm", "scaled_dot_product_attention", "mse_loss", "cat",
               "stack", "prod"):
        assert has(f"aten::{op}", "AutocastCPU"), op
    for op in ("softmax.int", "layer_norm", "exp", "group_norm"):  # on CUDA's lists, not on the CPU's
        assert not has(f"aten::{op}", "AutocastCPU"), op
    assert F.softmax not in amp.CPU_FP32 | amp.CPU_LOWER_PRECISION and F.linear in amp.CPU_LOWER_PRECISION


def test_cpu_fp16_autocast_is_refused():
    with pytest.raises(FitError, match="--amp emulates CUDA autocast in fp16"):
        run_step(*zoo("vit"), None, amp="fp16")


# -- 5. the CLI ---------------------------------------------------------------------------------
@needs_transformers
def test_fit_with_adafactor_from_the_cli():
    import json

    base = ["fit", "examples/zoo/vit.py:vit_tiny_test", "--input", "3x32x32", "--batch", "2", "--json"]
    ada = CliRunner().invoke(cli, base + ["--optimizer", "adafactor"])
    adam = CliRunner().invoke(cli, base)
    assert ada.exit_code == 0 and adam.exit_code == 0, (ada.output, adam.output)
    a, b = json.loads(ada.stdout), json.loads(adam.stdout)
    assert a["optimizer"] == "adafactor" and a["peak_bytes"] < b["peak_bytes"]
