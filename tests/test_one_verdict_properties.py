"""The one-verdict property over generated models, cards, AMP modes and batches: `fit` says
"fits" at batch b exactly when b is at most its largest batch, in the Python API, the JSON, the
HTML answer box and `assert_fits`.

Models are drawn as a convolution stack of random width and depth, with or without a SAGAN layer
(the classic layer as the examples write it) and with or without normalisation; cards as a
catalogue card's rules resized to a drawn memory; AMP as none, fp16 or bf16 where the card has it."""

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st
from torch import nn

from sa_profiler.targets import gpus
from sa_profiler.models.fit import fit
from sa_profiler.question import make_question
from sa_profiler.report.fit_html import _answer
from sa_profiler.testing import assert_fits

MiB = 2**20


class SelfAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.query_conv, self.key_conv = nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c // 8, 1)
        self.value_conv = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)
        k = self.key_conv(x).view(b, -1, h * w)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value_conv(x).view(b, -1, h * w)
        return self.gamma * torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w) + x


@st.composite
def models(draw):
    width = draw(st.sampled_from([8, 16, 32]))
    depth = draw(st.integers(1, 3))
    attention_at = draw(st.one_of(st.none(), st.integers(0, depth - 1)))
    norm = draw(st.sampled_from([None, "batch", "group"]))
    size = draw(st.sampled_from([16, 24, 32]))

    def factory():
        layers, cin = [], 3
        for i in range(depth):
            layers.append(nn.Conv2d(cin, width, 3, padding=1))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            elif norm == "group":
                layers.append(nn.GroupNorm(4, width))
            layers.append(nn.ReLU())
            if i == attention_at:
                layers.append(SelfAttn(width))
            cin = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    factory.__name__ = f"net_w{width}_d{depth}_a{attention_at}_{norm}"
    return factory, [f"3x{size}x{size}"]


CARDS = ["t4", "v100-16gb", "a100-40gb", "rtx-3060", "h100"]


@st.composite
def cards(draw):
    arch = gpus.lookup(draw(st.sampled_from(CARDS)))
    memory = draw(st.integers(600, 1400)) * MiB  # a few batches to a few dozen for these models
    amp = draw(st.sampled_from([None, "fp16", "bf16"]))
    if amp is not None and arch.supports({"fp16": torch.float16, "bf16": torch.bfloat16}[amp]):
        amp = None
    return gpus.resized(arch, memory), amp


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), card=cards(), offset=st.sampled_from([-1, 0, 1]), optimizer=st.sampled_from(["adam", "sgd"]))
def test_fits_exactly_when_the_batch_is_at_most_the_largest(model, card, offset, optimizer):
    (factory, inputs), (gpu, amp) = model, card
    target = make_question(gpu)
    largest = fit(factory, inputs, 1, target, amp=amp, optimizer=optimizer, conversions=(), find_max_batch=True,
                  timeline=False).max_batch
    if not largest:  # not even one sample: the verdict at batch 1 must say so
        assert not fit(factory, inputs, 1, target, amp=amp, optimizer=optimizer, conversions=(), timeline=False).fits
        return
    batch = max(1, largest + offset)
    result = fit(factory, inputs, batch, target, amp=amp, optimizer=optimizer, conversions=(), timeline=False)
    expected = batch <= largest
    assert result.fits == expected, (factory.__name__, gpu.key, amp, batch, largest, result.step.peak_total, result.usable)
    assert result.to_json()["fits"] == expected
    assert (">does not fit<" in _answer(result).replace("<b>", ">").replace("</b>", "<")) == (not expected)
    if expected:
        assert_fits(factory, inputs, batch, target, amp=amp, optimizer=optimizer, conversions=(), timeline=False)
    else:
        with pytest.raises(AssertionError):
            assert_fits(factory, inputs, batch, target, amp=amp, optimizer=optimizer, conversions=(), timeline=False)


@st.composite
def headline_cases(draw):
    arch = gpus.lookup(draw(st.sampled_from(CARDS)))
    memory = draw(st.integers(2, 24)) * 2**29  # 1 to 12 GiB
    channels = draw(st.sampled_from([32, 64, 128]))
    side = draw(st.sampled_from([16, 32, 48, 64]))
    mode = draw(st.sampled_from(["forward", "train"]))
    dtype = draw(st.sampled_from(["fp32", "fp16"]))
    return gpus.resized(arch, memory), channels, side, mode, dtype


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=headline_cases(), offset=st.sampled_from([-1, 0, 1]))
# found by a draw: the chunked row, 20,684 bytes over the usable memory at 4639, printed its peak
@example(case=(gpus.resized(gpus.lookup("t4"), 2 * 2**30), 32, 16, "forward", "fp16"), offset=1)
def test_headline_rows_fit_exactly_up_to_their_largest_batch(case, offset):
    """Each headline row at a drawn --batch says yes exactly up to its own largest batch (asked
    without --batch), in the rows and the JSON, and a row that does not fit has no peak."""
    from sa_profiler.advice.advise import advise
    from sa_profiler.report.console import advice_json

    gpu, channels, side, mode, dtype = case
    target = make_question(gpu)
    kw = dict(dtypes=[dtype], modes=(mode,), impls=["reference", "sdpa", "chunked"])
    largest = {r.label: r.max_batch for r in advise(target, channels, side, side, **kw).rows if r.status == "ok"}
    batch = max(1, max(largest.values()) + offset)
    answer = advise(target, channels, side, side, batch=batch, **kw)
    doc = {r["label"]: r for r in advice_json(answer)["rows"]}
    for row in answer.rows:
        if row.label not in largest:
            continue
        assert row.fits == (batch <= largest[row.label]), (row.label, gpu.key, batch, largest)
        assert doc[row.label]["fits"] == row.fits and (doc[row.label]["peak_bytes_at_batch"] is None) == (not row.fits)
