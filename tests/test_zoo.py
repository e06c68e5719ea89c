"""The model zoo (examples/zoo/, library-style attention) and the examples through `fit`:
the simulated CPU step against the real one (byte-exact) and against PyTorch's MemTracker,
AMP with every conversion, the SDPA backend each attention call gets per card by torch's
selection rules, the real diffusers UNet2DModel, and loading a file that imports its neighbour."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sa_profiler.cli import cli
from sa_profiler.fit import fit, load, run_step
from zoo_cases import BY_ID, CASES, MODELS, memtracker_peak

REPO = Path(__file__).resolve().parents[1]
STEPS = [c for c in CASES if not c.id.startswith("unet-small")]  # the per-sample timestep too


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Real CPU steps on one intra-op thread: on a small shared machine several threads per
    conv contend and a step takes seconds. The bytes a step allocates do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    assert sim.breakdown["parameters"] > 0 and sim.peak_total > sim.baseline
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
@pytest.mark.parametrize("amp,gpu", [("fp16", "t4"), ("bf16", "a100")])
@pytest.mark.parametrize("case", MODELS, ids=lambda c: c.id)
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
PINS = [(m, card, amp) for m in RULES for card in CARDS for amp in (None, "fp16")]
# cases the engine gets wrong by the source: (model, card, amp) -> what it answers instead
ENGINE_DIFFERS: dict = {}


def _pin_params():
    for model, card, amp in PINS:
        marks = ()
        if (model, card, amp) in ENGINE_DIFFERS:
            marks = pytest.mark.xfail(strict=True, reason=ENGINE_DIFFERS[(model, card, amp)])
        yield pytest.param(model, card, amp, marks=marks, id=f"{model}-{card}-{amp or 'fp32'}")


@pytest.mark.parametrize("model,card,amp", list(_pin_params()))
def test_backend_per_card(model, card, amp):
    case = BY_ID[model]
    expected, rule = RULES[model][(card, amp)]
    result = fit(load(case.model, case.args), list(case.inputs), case.batch, card, amp=amp, conversions=(),
                 timeline=False)
    step = result.step
    assert step.status == "ok"
    got = {c["backend"] for c in step.attention_calls}
    assert got == {expected}, f"{model} on {card} {amp or 'fp32'}: expected {expected} ({rule}), got {got}"
    assert step.backends == {expected: case.sdpa_calls}
    assert sum(c["calls"] for c in step.attention_calls) == case.sdpa_calls
    assert {c["dtype"] for c in step.attention_calls} == {"float16" if amp else "float32"}
    masks = {tuple(c["mask"]) if c["mask"] else None for c in step.attention_calls}
    assert masks == ({(case.batch, 1, 1, 32)} if model == "bert" else {None})


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
