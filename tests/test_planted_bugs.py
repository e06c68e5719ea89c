"""Focused checks of behaviours a one-line change could break without the rest of the suite
noticing: group norm's copies by torch release, the `range=LO..HI` input boundary, the
hand-written attention finder's softmax dimension, the verdict at exactly the usable memory,
the AMP step's loss scaling, a top-level ModuleList's rows by module, and the fit page's SDPA
calls table as text."""

import html

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sa_profiler import torch_compat
from sa_profiler.advice.recommend import profile_row, total_bytes
from sa_profiler.question import make_question
from sa_profiler.attention import backends
from sa_profiler.cli import cli
from sa_profiler.fit import fit, run_step
from sa_profiler.models.inputs import InputError, parse
from sa_profiler.targets import gpus
from zoo_cases import SdpaBlock

RUNNING = torch_compat.version_tuple(torch.__version__)


# -- group norm's copies: ops of their own up to torch 2.13, inside the kernels from 2.14 ---------
class _ChannelsLastGroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.norm = nn.GroupNorm(4, 32)

    def forward(self, x):
        return self.norm(self.conv(x.contiguous(memory_format=torch.channels_last)))


def _group_norm_step_on_t4(version: str):
    return fit(_ChannelsLastGroupNorm, "16x64x64", 8, "t4", conversions=(), timeline=False, torch_version=version).step


def test_group_norm_copies_are_ops_of_their_own_up_to_torch_2_13():
    assert torch_compat.group_norm_copies_in("2.13")
    assert torch_compat.group_norm_copies_in("2.13.9")
    assert torch_compat.group_norm_copies_in("2.4")
    assert not torch_compat.group_norm_copies_in("2.14")
    assert not torch_compat.group_norm_copies_in("2.14.1")


def test_channels_last_group_norm_step_on_t4_as_torch_2_13():
    # up to 2.13 the composite copies the channels-last input as an op of its own (kept for
    # the backward), and the backward copies grad_out the same way
    step = _group_norm_step_on_t4("2.13")
    assert step.ok
    assert step.peak_total == 16_840_192
    assert step.breakdown["activations"] == 6_292_992
    assert step.breakdown["temporary"] == 8_389_120


@pytest.mark.skipif(RUNNING < (2, 14), reason="an older torch simulates a 2.14 target with the older composite's copy")
def test_channels_last_group_norm_step_on_t4_as_torch_2_14():
    # from 2.14 the kernels copy inside (transients of their own: engine/rules.py)
    step = _group_norm_step_on_t4("2.14")
    assert step.ok
    assert step.peak_total == 21_034_496
    assert step.breakdown["activations"] == 6_292_992
    assert step.breakdown["temporary"] == 12_583_424


# -- --input ...:range=LO..HI: LO strictly below HI -----------------------------------------------
TOKENS = """
from torch import nn


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(16, 8)

    def forward(self, ids):
        return self.emb(ids)
"""


def test_range_values_need_lo_below_hi_in_the_parser():
    assert parse("8:int64:range=3..4").values == "range=3..4"
    for bad in ("8:int64:range=3..3", "8:int64:range=4..3"):
        with pytest.raises(InputError, match=r"range=LO\.\.HI takes two integers, LO below HI"):
            parse(bad)


@pytest.mark.parametrize("values,accepted", [("range=3..4", True), ("range=3..3", False), ("range=4..3", False)])
def test_range_values_boundary_on_the_command_line(tmp_path, values, accepted):
    model = tmp_path / "tokens.py"
    model.write_text(TOKENS)
    result = CliRunner().invoke(cli, ["fit", f"{model}:Tokens", "--input", f"8:int64:{values}", "--gpu", "cpu",
                                      "--batch", "2", "--json"])
    if accepted:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "range=LO..HI takes two integers, LO below HI" in lines[0]
    assert "Traceback" not in result.output


# -- attention written out by hand: a softmax over the last dimension only -----------------------
class _HandAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(8, 8)

    def forward(self, x):  # x: B x N x 8, scores B x N x N
        x = self.proj(x)
        return torch.softmax(x @ x.transpose(1, 2), dim=self.dim) @ x


@pytest.mark.parametrize("dim,layers", [(1, 0), (-3, 0), (0, 0), (-1, 1), (2, 1)])
def test_hand_written_attention_needs_the_softmax_over_the_last_dim(dim, layers):
    step = fit(lambda: nn.Sequential(nn.Linear(8, 8), _HandAttention(dim)), "16x8", 2, "cpu", conversions=(),
               timeline=False).step
    assert step.ok
    assert step.attention_layers == layers
    assert step.explicit_attention == ({"1": [2, 16, 16]} if layers else {})


# -- the verdict at exactly the usable memory ----------------------------------------------------
def _small():
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU())


def test_fit_at_exactly_the_usable_memory_fits_on_the_cpu():
    host = gpus.host()
    peak = fit(_small, "8", 2, "cpu", conversions=(), timeline=False).step.peak_total
    assert peak == 1736
    exact = fit(_small, "8", 2, make_question(host, host.total_memory - peak), conversions=(), timeline=False)
    assert exact.usable == exact.step.peak_total == peak
    assert exact.fits and exact.to_json()["fits"] and "fits" in repr(exact) and "does not fit" not in repr(exact)
    short = fit(_small, "8", 2, make_question(host, host.total_memory - peak + 1), conversions=(), timeline=False)
    assert short.usable == peak - 1 and short.step.peak_total == peak
    assert not short.fits and not short.to_json()["fits"] and "does not fit" in repr(short)


def test_headline_row_at_exactly_the_usable_memory_fits_on_the_cpu():
    host = gpus.host()
    first = profile_row(make_question(host, 0.1), "reference", {}, "float32", "forward", 16, 8, 8, 1)
    need = total_bytes(first.at_batch)
    assert need == 55_636
    exact = make_question(host, host.total_memory - need)
    assert exact.usable == need
    row = profile_row(exact, "reference", {}, "float32", "forward", 16, 8, 8, 1)
    assert row.fits and row.max_batch == 1
    row = profile_row(exact, "reference", {}, "float32", "forward", 16, 8, 8, None)
    assert row.fits and row.max_batch == row.batch == 1
    short = make_question(host, host.total_memory - need + 1)
    row = profile_row(short, "reference", {}, "float32", "forward", 16, 8, 8, 1)
    assert not row.fits and row.max_batch == 0
    row = profile_row(short, "reference", {}, "float32", "forward", 16, 8, 8, None)
    assert not row.fits and row.max_batch == row.batch == 0


# -- AMP: the GradScaler's scaled loss ------------------------------------------------------------
def _mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))


def _ops_around_the_loss(step):
    """The last ops of the first forward and the first ops of the backward after it."""
    phases = [phase for _, _, phase, _ in step.timeline]
    start = phases.index("backward")
    return ([op for op, *_ in step.timeline[start - 3:start]],
            [op for op, *_ in step.timeline[start:start + 4]],
            [a for _, a, _, _ in step.timeline[start - 3:start + 4]])


def test_amp_step_scales_the_loss_on_a_t4():
    amp = run_step(_mlp, "64", 4, gpus.lookup("t4"), amp="fp16", timeline=True)
    plain = run_step(_mlp, "64", 4, gpus.lookup("t4"), timeline=True)
    assert amp.ok and plain.ok
    forward_end, backward_start, allocated = _ops_around_the_loss(amp)
    # the loss (float32 mean of the fp16 output), then the scaler's `loss * scale`: a block of its
    # own, and its gradient in the backward
    assert forward_end == ["_to_copy", "mean", "mul"]
    assert backward_start == ["ones_like", "mul", "expand", "div"]
    assert allocated == [9_623_040, 9_623_552, 9_613_312, 9_613_312, 9_613_824, 9_613_824, 9_614_848]
    # the step without AMP has no scaling: the backward starts from the mean itself
    forward_end, backward_start, _ = _ops_around_the_loss(plain)
    assert forward_end[-1] == "mean" and "mul" not in backward_start
    assert amp.peak_total == 18_257_920
    # GradScaler.unscale_: each of the 4 gradients divided in place before the optimizer's step
    optimizer = [op for op, _, phase, _ in amp.timeline if phase == "optimizer"]
    assert optimizer[:5] == ["mul_"] * 4 + ["_record_function_enter_new"]
    assert "mul_" not in [op for op, _, phase, _ in plain.timeline if phase == "optimizer"][:4]


# -- activations by module: a top-level ModuleList's children each a row -------------------------
class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.lin(x))


class _Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([_Block() for _ in range(3)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_top_level_module_list_children_are_rows_of_their_own():
    result = fit(_Blocks, "16x8", 2, "cpu", conversions=(), timeline=False)
    modules = result.step.modules
    assert {k: v for k, v in modules.items() if k.startswith("blocks")} == \
        {"blocks.0": 1024, "blocks.1": 1024, "blocks.2": 1024}
    assert "blocks" not in modules
    assert sum(modules.values()) == result.step.breakdown["activations"]
    assert set(result.to_json()["modules"]) >= {"blocks.0", "blocks.1", "blocks.2"}


# -- the fit page: a module's name is text in the SDPA calls table -------------------------------
HOSTILE_MODULE = "<img src=x onerror=alert(1)>"


class _HostileName(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module(HOSTILE_MODULE, SdpaBlock())

    def forward(self, x):
        return getattr(self, HOSTILE_MODULE)(x)


def test_fit_page_sdpa_calls_table_escapes_the_module_name():
    from sa_profiler.report.fit_html import render

    result = fit(_HostileName, "8x16", 2, "t4", conversions=(), timeline=True)
    assert [c["module"] for c in result.step.attention_calls] == [HOSTILE_MODULE]
    page = render(result)
    assert "<img" not in page
    table = page.split("Attention calls and the SDPA backend the target runs", 1)[1].split("</table>", 1)[0]
    assert f"<td class='s'>{html.escape(HOSTILE_MODULE)}</td><td class='s'>efficient</td>" in table
