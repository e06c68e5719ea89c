"""Tests for bugs that were planted by hand and survived the suite: each pins what a user would
have seen go wrong."""

import torch
from torch import nn

from sa_profiler.targets import gpus
from sa_profiler.models.fit import fit, run_step


class _Named(nn.Module):
    """A model whose module name is markup: a page must show it as text."""

    def __init__(self):
        super().__init__()
        self.add_module("<b>evil</b>", nn.Linear(64, 64))

    def forward(self, x):
        return getattr(self, "<b>evil</b>")(x).relu()


def test_module_names_are_escaped_in_the_tensors_at_the_peak(tmp_path):
    from sa_profiler.report.fit_html import write_html

    result = fit(_Named, 64, 256, "t4", conversions=())
    assert any(t.module == "<b>evil</b>" for t in result.step.top_tensors)
    page = write_html(result, tmp_path / "fit.html", "sa-profile fit").read_text()
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page


class _Masked(nn.Module):
    """One SDPA call with a float mask whose last dim (100) is not a multiple of 16."""

    def __init__(self, tokens=100, heads=2, dim=64):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.heads, self.tokens = heads, tokens

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = torch.zeros(b, 1, n, n, dtype=x.dtype, device=x.device)
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum()


def test_the_efficient_kernels_mask_is_padded_to_16():
    """attention.cpp preprocess_mask: the memory-efficient kernel takes a copy of the mask with its
    last dim padded to a multiple of 16 (100 -> 112); without it a T4 fp16 step is low."""
    from sa_profiler.attention import routing

    step = run_step(_Masked, ["100x64"], 8, gpus.lookup("t4"), amp="fp16", timeline=True)
    assert step.backends == {"efficient": 1}
    real = routing._preprocess_mask
    try:
        routing._preprocess_mask = lambda mask, q, k: mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        unpadded = run_step(_Masked, ["100x64"], 8, gpus.lookup("t4"), amp="fp16")
    finally:
        routing._preprocess_mask = real
    # the padded copy is alive at the peak: without it the step is lower
    assert step.peak_total > unpadded.peak_total


def test_a_narrow_time_axis_still_has_ticks():
    """A sweep whose times span less than a decade showed a single tick ("10 ms")."""
    import math as m

    from sa_profiler.report.page import time_axis

    for lo, hi in [(0.012, 0.04), (0.02, 0.021), (3e-4, 9e-4), (1e-5, 2.0)]:
        axis = time_axis(lo, hi)
        shown = [v for v in axis["tickvals"] if axis["range"][0] <= m.log10(v) <= axis["range"][1]]
        assert len(shown) >= 2 and len(set(axis["ticktext"])) == len(axis["ticktext"]), (lo, hi, axis["ticktext"])
    assert time_axis(1e-5, 2.0)["ticktext"] == ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s"]


def test_the_float32_overlay_lines_up_with_the_phase_bands(tmp_path):
    """An AMP step's float32 twin runs other ops (no casts): drawn on the AMP step's op axis,
    each of its phases lies within the same phase band, and its peak inside its own phase's."""
    from sa_profiler.report.fit_html import _phase_runs, timeline_figure

    result = fit("examples/sagan.py:Generator", 128, 4, "t4", amp="fp16", compare_fp32=True, conversions=())
    main, twin = result.step.timeline, result.fp32_step.timeline
    assert len(main) != len(twin)
    fig = timeline_figure(result)
    overlay = next(d for d in fig["data"] if d["name"] == "as is (float32)")
    bands = _phase_runs(main)
    twin_runs = _phase_runs(twin)
    for x, text in zip(overlay["x"], overlay["text"]):
        i = int(text.split(":")[0].split()[1])
        k = next(k for k, (_, a, b) in enumerate(twin_runs) if a <= i <= b)
        _, a, b = bands[k]
        assert a - 1e-9 <= x <= b + 1e-9
