"""The model zoo (examples/zoo/, library-style attention) and the examples through `fit`:
the simulated CPU step against the real one (byte-exact) and against PyTorch's MemTracker,
AMP with every conversion, the SDPA backend each attention call gets per card by torch's
selection rules, the real diffusers UNet2DModel, and loading a file that imports its neighbour."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sa_profiler.cli import cli
from sa_profiler.models.fit import fit, load, run_step
from zoo_cases import BY_ID, CASES, MODELS, REPO, memtracker_peak

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = [c for c in CASES if not c.id.startswith("unet-small")]  # the per-sample timestep too




@functools.lru_cache(maxsize=None)
def simulated(case_id: str):
    case = BY_ID[case_id]
    return run_step(load(case.model, case.args), list(case.inputs), case.batch, None)


# -- 1. the simulated CPU step is the real one, to the byte ---------------------------------
@pytest.mark.parametrize("case", STEPS, ids=lambda c: c.id)
def test_simulated_cpu_step_equals_real_step(case):
    sim = simulated(case.id)
    real = run_step(load(case.model, case.args), list(case.inputs), case.batch, None, device="cpu")
    assert sim.status == real.status == "ok"
    assert sim.peak_total == real.peak_total
    assert sim.breakdown == real.breakdown
    assert sim.modules == real.modules
    assert sim.breakdown["parameters"] > 0 and sim.breakdown["activations"] > 0  # the peak holds activations
    assert sim.attention_layers == case.attention_layers
    # CPU routing: torch's CPU flash kernel for every call, except BERT's, whose dropout 0.1 the
    # CPU flash kernel refuses (sdp_utils_cpp.cpp use_flash_attention_cpp: check_for_dropout)
    expected = {} if not case.sdpa_calls else {("math" if case.id == "bert" else "flash"): case.sdpa_calls}
    assert sim.backends == expected


# -- 2. within 3 % of PyTorch's MemTracker around the same real step -------------------------
@pytest.mark.parametrize("case", MODELS, ids=lambda c: c.id)
def test_within_three_percent_of_pytorch_memtracker(case):
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    sim = simulated(case.id)
    # two real steps under MemTracker (reset_mod_stats between them; frozen Parameters
    # re-registered as buffers of the same storage, since MemTracker cannot hook them: see
    # zoo_cases.frozen_to_buffers)
    peak, frozen = memtracker_peak(load(case.model, case.args), case.inputs, case.batch)
    if case.id.startswith("sagan-repo"):
        assert frozen > 0  # spectral.py's weight_u / weight_v were counted
    assert abs(sim.peak_total - peak) <= 0.03 * peak, (sim.peak_total, peak)


# -- 3. AMP through the CLI: exit 0, every conversion ok --------------------------------------

def _amp_params():
    for case in MODELS:
        yield pytest.param(case, id=case.id)


@pytest.mark.parametrize("amp,gpu", [("fp16", "t4"), ("bf16", "a100")])
@pytest.mark.parametrize("case", list(_amp_params()))
def test_amp_fit_exits_0_with_every_conversion(case, amp, gpu):
    out = CliRunner().invoke(cli, ["fit", *case.cli_args(), "--gpu", gpu, "--amp", amp, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["amp"] == amp and data["status"] == "ok" and data["peak_bytes"] > data["baseline_bytes"]
    if case.sagan:
        assert data["sagan_layers"] == 2
        assert set(data["conversions"]) == {"sdpa", "chunked[chunk=1024][checkpoint=True]"}
        bad = {k: v["message"] for k, v in data["conversions"].items() if v["status"] != "ok"}
        assert not bad, bad
    else:
        assert data["sagan_layers"] == 0 and data["conversions"] == {}
    # every SDPA call ran in the autocast dtype
    assert {c["dtype"] for c in data["attention_calls"]} <= {"float16" if amp == "fp16" else "bfloat16"}


def test_autocast_cache_takes_only_what_torch_caches():
    # aten/src/ATen/autocast_mode.cpp `cached_cast` caches the cast of a float32 leaf that
    # requires grad and `!arg.is_view()`, keyed by its TensorImpl and holding a weak reference
    # (the address cannot be reused while cached). A view of a parameter made under no_grad (as
    # spectral_norm's `weight_mat`) is such a leaf but a view: cast afresh every time.
    from sa_profiler.engine.amp import AutocastEmulation

    emulation = AutocastEmulation(torch.float16)
    wide = torch.nn.Parameter(torch.empty(16, 144, device="meta"))
    small = torch.nn.Parameter(torch.empty(3, 5, device="meta"))
    with emulation.region(), torch.no_grad():
        for weight in (wide, small, wide, small):
            view = weight.t()  # requires grad and is a leaf: made under no_grad
            (cast,), _ = emulation.cast(torch.mv, (view,), {})
            assert cast.shape == view.shape and cast.dtype == torch.float16
            del view, cast


# -- 4. the backend each attention call gets, per card, by torch's selection rules -----------
# Derived from aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (torch 2.13, the installed
# one, whose rules a simulation applies): `select_sdp_backend` takes the first backend of
# `priority_order` whose `can_use_*` constraint list passes. The order is flash, efficient,
# math, cuDNN; cuDNN goes first where `check_prefer_cudnn_attention` holds (sm90/sm100/sm103
# with a cuDNN newer than 9.15; torch >= 2.10 wheels bundle one: 9.19 assumed, the catalogue
# H100 says cudnn_preferred). Each entry: (backend, the check that decides it).
PLAIN = {  # no mask, dropout 0, head sizes a multiple of 8 (ViT 16, unet-small 8, MHA 8)
    ("t4", None): ("efficient", "flash: check_flash_attention_hardware_support (sm75 < sm80); efficient runs "
                   "fp32 below sm80 (less_than_sm80_mem_efficient_dtypes), minimum_gemm_alignment 1 for fp32 on sm75"),
    ("t4", "fp16"): ("efficient", "flash: check_flash_attention_hardware_support (sm75 < sm80); efficient: "
                     "minimum_gemm_alignment 8 for fp16 on sm7x (use_tensor_cores), head sizes divisible by 8"),
    ("rtx-3060", None): ("efficient", "flash: check_dtypes_flash_attention -> check_dtypes_low_precision (fp32 is "
                         "not flash); efficient: minimum_gemm_alignment 4 from sm80, check_data_ptr_alignment_mem_efficient"),
    ("rtx-3060", "fp16"): ("flash", "flash first; sm86 with grad: check_requires_grad_and_head_dim_gt192_constraints"
                           "_on_sm86_89_or_120 passes (head size <= 192)"),
    ("a100", None): ("efficient", "flash: check_dtypes_low_precision (fp32 is not flash)"),
    ("a100", "fp16"): ("flash", "flash first in priority_order, every can_use_flash_attention check passes"),
    ("h100", None): ("efficient", "cuDNN first (check_prefer_cudnn_attention) but cuDNN and flash refuse fp32: "
                     "check_dtypes_low_precision"),
    ("h100", "fp16"): ("cudnn", "check_prefer_cudnn_attention puts cuDNN first on sm90; check_cudnn_tensor_shapes "
                       "passes (head size <= 128, a multiple of 8, key length != 1)"),
}
HEAD4 = {  # the UNet with heads of 4 (unet-small-d4)
    ("t4", None): ("efficient", "minimum_gemm_alignment is 1 for fp32 on sm75 (no tensor cores for fp32 below sm80)"),
    ("t4", "fp16"): ("math", "flash: check_flash_attention_hardware_support; efficient: "
                     "check_head_dim_size_mem_efficient, 4 not divisible by minimum_gemm_alignment 8 (fp16, sm7x)"),
    ("rtx-3060", None): ("efficient", "flash: check_dtypes_low_precision; efficient: minimum_gemm_alignment 4 "
                         "from sm80 divides 4"),
    ("rtx-3060", "fp16"): ("flash", "check_head_dim_size_flash asks only equal head sizes <= 256 (attention.cpp "
                           "pads the head to 8 itself)"),
    ("a100", None): ("efficient", "flash: check_dtypes_low_precision; efficient: minimum_gemm_alignment 4 divides 4"),
    ("a100", "fp16"): ("flash", "check_head_dim_size_flash: equal head sizes <= 256, no alignment"),
    ("h100", None): ("efficient", "cuDNN and flash: check_dtypes_low_precision; efficient: alignment 4 divides 4"),
    ("h100", "fp16"): ("flash", "cuDNN first but check_cudnn_tensor_shapes: head_dim should be a multiple of 8"),
}
MASKED = {  # BERT: additive B x 1 x 1 x S mask, dropout 0.1, heads of 32
    ("t4", None): ("efficient", "flash: check_for_attn_mask; efficient takes a mask and dropout"),
    ("t4", "fp16"): ("efficient", "flash: check_for_attn_mask (before check_flash_attention_hardware_support)"),
    ("rtx-3060", None): ("efficient", "flash: check_for_attn_mask"),
    ("rtx-3060", "fp16"): ("efficient", "flash: check_for_attn_mask (flash takes no attn_mask)"),
    ("a100", None): ("efficient", "flash: check_for_attn_mask"),
    ("a100", "fp16"): ("efficient", "flash: check_for_attn_mask"),
    ("h100", None): ("efficient", "cuDNN: check_dtypes_low_precision; flash: check_for_attn_mask"),
    ("h100", "fp16"): ("efficient", "cuDNN first but check_cudnn_dropout: 0.1 is not a multiple of 1/16; "
                       "flash: check_for_attn_mask"),
}
RULES = {"vit": PLAIN, "unet-small": PLAIN, "mha": PLAIN, "unet-small-d4": HEAD4, "bert": MASKED}
CARDS = ("t4", "rtx-3060", "a100", "h100")
PINNED_TORCH = "2.13"  # the torch whose choices RULES pins (BY_VERSION: where they differ)
PINS = [(m, card, amp) for m in RULES for card in CARDS for amp in (None, "fp16")]


@pytest.mark.parametrize("model,card,amp", PINS, ids=[f"{m}-{c}-{a or 'fp32'}" for m, c, a in PINS])
def test_backend_per_card(model, card, amp):
    case = BY_ID[model]
    expected, rule = RULES[model][(card, amp)]
    result = fit(load(case.model, case.args), list(case.inputs), case.batch, card, amp=amp, conversions=(),
                 timeline=False, torch_version=PINNED_TORCH)  # the choice of one torch, whichever runs the suite
    step = result.step
    assert step.status == "ok"
    got = {c["backend"] for c in step.attention_calls}
    assert got == {expected}, f"{model} on {card} {amp or 'fp32'}: expected {expected} ({rule}), got {got}"
    assert step.backends == {expected: case.sdpa_calls}
    assert sum(c["calls"] for c in step.attention_calls) == case.sdpa_calls
    assert {c["dtype"] for c in step.attention_calls} == {"float16" if amp else "float32"}
    masks = {tuple(c["mask"]) if c["mask"] else None for c in step.attention_calls}
    assert masks == ({(case.batch, 1, 1, 32)} if model == "bert" else {None})


# Answers that legitimately depend on the torch version: the backend the dispatcher picks
# (sdp_utils.cpp, attention/backends.py TORCH_RULES), each with the rule that decides it
BY_VERSION = [
    ("vit", "h100", "2.4", "flash", "cuDNN attention last in priority (opt-in) in 2.4"),
    ("vit", "h100", "2.5.0", "cudnn", "cuDNN first on sm90 in 2.5.0 only"),
    ("vit", "h100", "2.5.1", "flash", "2.5.1 made cuDNN opt-in again (#138522)"),
    ("vit", "h100", "2.8", "flash", "cuDNN first on sm90 only from 2.9 (#162073)"),
    ("vit", "h100", "2.9", "cudnn", "check_prefer_cudnn_attention puts cuDNN first on sm90 (#162073)"),
    ("vit", "h100", "2.14", "cudnn", "cuDNN first with a cuDNN newer than 9.15 (#169849; assumed 9.19 from 2.10)"),
    ("vit", "a100", "2.9", "flash", "cuDNN is preferred on sm90/sm100 only"),
    ("bert", "h100", "2.11", "cudnn", "no dropout gate in 2.11 (measured on an H100)"),
    ("bert", "h100", "2.13", "efficient", "check_cudnn_dropout: 0.1 is not a multiple of 1/16"),
]


@pytest.mark.parametrize("model,card,version,expected,rule", BY_VERSION,
                         ids=[f"{m}-{c}-{v}" for m, c, v, _, _ in BY_VERSION])
def test_backend_per_torch_version(model, card, version, expected, rule):
    case = BY_ID[model]
    step = fit(load(case.model, case.args), list(case.inputs), case.batch, card, amp="fp16", conversions=(),
               timeline=False, torch_version=version).step
    assert step.backends == {expected: case.sdpa_calls}, f"{model} on {card} as torch {version}: {rule}"


def test_cudnn_dropout_gate_follows_the_torch_version():
    # check_cudnn_dropout (dropout a multiple of 1/16) is not in torch 2.11: an H100 with 2.11 ran
    # BERT's dropout 0.1 on cuDNN (reports/validation/fit-zoo-h100-2.11.0.csv, the dispatcher's
    # own choice); asked as 2.13, the same call goes to the memory-efficient kernel
    case = BY_ID["bert"]
    for version, expected in (("2.11", "cudnn"), ("2.13", "efficient")):
        step = fit(load(case.model, case.args), list(case.inputs), case.batch, "h100", amp="fp16",
                   conversions=(), timeline=False, torch_version=version).step
        assert step.backends == {expected: case.sdpa_calls}, version


@pytest.mark.parametrize("amp", [None, "fp16"])
@pytest.mark.parametrize("card", CARDS)
def test_explicit_attention_calls_no_sdpa(card, amp):
    # nn.MultiheadAttention with need_weights=True computes the map itself (baddbmm, softmax,
    # bmm in F.multi_head_attention_forward), the SAGAN layers with bmm: no backend to pick
    for case in (BY_ID["mha-weights"], BY_ID["sagan-repo-D"]):
        step = fit(load(case.model, case.args), list(case.inputs), case.batch, card, amp=amp, conversions=(),
                   timeline=False).step
        assert step.status == "ok" and step.attention_layers == case.attention_layers
        assert step.attention_calls == [] and step.backends == {}


# -- 5. the real diffusers UNet2DModel ---------------------------------------------------------
UNET_INPUTS = ["3x16x16", "timestep=scalar:int64"]  # batch 4: the peak holds activations
UNET_ATTENTION = {"down_blocks.1.attentions.0", "down_blocks.2.attentions.0", "mid_block.attentions.0",
                  "up_blocks.0.attentions.0", "up_blocks.0.attentions.1", "up_blocks.1.attentions.0",
                  "up_blocks.1.attentions.1"}


class CheckpointedAttention(torch.nn.Module):
    """An attention block run under torch.utils.checkpoint (recomputed in the backward)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return torch.utils.checkpoint.checkpoint(self.inner, *args, use_reentrant=False, **kwargs)


def diffusers_unet(checkpointing: bool = False, checkpoint_attention: bool = False):
    """A small diffusers.UNet2DModel: attention (AttnProcessor2_0, heads of 8) in the two lower
    stages and the middle. `checkpointing`: diffusers' enable_gradient_checkpointing (its blocks
    checkpoint their resnets); `checkpoint_attention`: the attention blocks checkpointed too."""
    diffusers = pytest.importorskip("diffusers")
    model = diffusers.UNet2DModel(
        sample_size=32, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
        attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    if checkpointing:
        model.enable_gradient_checkpointing()
    if checkpoint_attention:
        for block in [*model.down_blocks, model.mid_block, *model.up_blocks]:
            for i, attn in enumerate(getattr(block, "attentions", None) or []):
                block.attentions[i] = CheckpointedAttention(attn)
    return model


@pytest.mark.parametrize("variant", ["plain", "checkpointing", "checkpoint-attention"])
def test_real_diffusers_unet_cpu_step_is_exact(variant):
    pytest.importorskip("diffusers")
    factory = functools.partial(diffusers_unet, variant != "plain", variant == "checkpoint-attention")
    sim = fit(factory, UNET_INPUTS, 4, "cpu", conversions=())  # built on meta
    real = fit(factory, UNET_INPUTS, 4, "cpu", engine="measure", conversions=(), timeline=False)
    assert sim.step.status == real.step.status == "ok"
    assert sim.step.peak_total == real.step.peak_total and sim.step.breakdown["activations"] > 0
    assert sim.step.breakdown == real.step.breakdown and sim.step.modules == real.step.modules
    # every attention module's SDPA call on torch's CPU flash kernel
    inner = ".inner" if variant == "checkpoint-attention" else ""
    assert {c["module"] for c in sim.step.attention_calls} == {m + inner for m in UNET_ATTENTION}
    assert sim.step.backends == {"flash": 7}
    backward = {op for op, _, phase, _ in sim.step.timeline if phase == "backward"}
    assert "_scaled_dot_product_flash_attention_for_cpu_backward" in backward
    assert not {"_softmax", "_safe_softmax", "bmm"} & backward  # no math attention anywhere in the backward
    if variant == "checkpoint-attention":  # recomputed in the backward, routed there too
        assert "_scaled_dot_product_flash_attention_for_cpu" in backward


@pytest.mark.parametrize("variant,amp", [("plain", None), ("plain", "fp16"), ("checkpoint-attention", "fp16")])
def test_real_diffusers_unet_on_a_t4_runs_memory_efficient(variant, amp):
    pytest.importorskip("diffusers")
    # sm75: flash refused (check_flash_attention_hardware_support); efficient takes fp32 below
    # sm80 and fp16 heads of 8 (minimum_gemm_alignment 8 on sm7x)
    factory = functools.partial(diffusers_unet, variant != "plain", variant != "plain")
    result = fit(factory, UNET_INPUTS, 4, "t4", amp=amp, conversions=())
    assert result.step.status == "ok", result.step.message
    assert result.step.backends == {"efficient": 7}
    assert {c["dtype"] for c in result.step.attention_calls} == {"float16" if amp else "float32"}
    backward = {op for op, _, phase, _ in result.step.timeline if phase == "backward"}
    assert "_scaled_dot_product_efficient_attention_backward" in backward
    if variant != "plain":  # the checkpointed attention recomputed on the efficient kernel, under autocast
        assert "_scaled_dot_product_efficient_attention" in backward
    assert not {"_softmax", "_safe_softmax", "_softmax_backward_data"} & backward


# -- 6. loading a file that imports the module beside it, from another folder ---------------------
def test_sagan_repo_file_loads_from_another_folder(tmp_path, monkeypatch):
    # from an empty folder, by a relative path; neither the file's folder on sys.path nor its
    # modules imported (earlier tests load them): `from spectral import SpectralNorm` resolves
    # only because loading makes the file's own folder importable
    folder = REPO / "examples/zoo/sagan_repo"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != folder])
    for name in [n for n, m in sys.modules.items() if str(folder) in str(getattr(m, "__file__", "") or "")]:
        monkeypatch.delitem(sys.modules, name)
    spec = os.path.relpath(folder / "sagan_models.py", tmp_path) + ":Generator"
    out = CliRunner().invoke(cli, ["fit", spec, "--input", "16", "--arg", "batch_size=2", "--arg", "image_size=64",
                                   "--arg", "conv_dim=8", "--arg", "z_dim=16", "--batch", "2", "--gpu", "t4", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["status"] == "ok" and data["sagan_layers"] == 2
    assert Path(sys.modules["spectral"].__file__).resolve() == folder / "spectral.py"
