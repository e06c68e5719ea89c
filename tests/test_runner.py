"""The CPU invariant, once, on the one step runner: a step simulated on meta tensors for the
CPU target allocates what the same step run for real on the CPU allocates, to the byte, for a
single attention layer (each implementation, forward and training) and for whole models (two
training steps with Adam, AMP-free, with and without input values)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sa_profiler.models import inputs as model_inputs
from sa_profiler.attention.backends import CPU
from sa_profiler.engine import runner, step
from sa_profiler.engine.workload import Workload
from sa_profiler.models.fit import load

LAYERS = [("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "math"}), ("chunked", {"chunk": 16}),
          ("chunked", {"chunk": 16, "checkpoint": True}), ("pooled", {"pool": 2})]


def _both(make_for):
    """Run the step `make_for(device)` makes on meta (simulated) and on the CPU (measured)."""
    out = {}
    for device in ("meta", "cpu"):
        tracker = runner.tracker_for(None, device, host=True)
        tracker.keep_peak_live = True
        outcome = runner.run(lambda: make_for(device), tracker, CPU, device, attribute=True)
        out[device] = (tracker, outcome)
    return out


@pytest.mark.parametrize("impl,opts", LAYERS, ids=[f"{i}{o or ''}" for i, o in LAYERS])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_a_layer_step_simulated_is_the_real_one(impl, opts, mode):
    w = Workload(impl, 2, 32, 8, 8, "float32", mode, "cpu", opts)
    runs = _both(lambda device: step.layer_step(w, device))
    (sim, _), (real, _) = runs["meta"], runs["cpu"]
    assert sim.baseline == real.baseline > 0
    assert sim.allocator.peak == real.allocator.peak > sim.baseline
    assert [(t.shape, t.bytes, t.op) for t in sim.peak_tensors] == [(t.shape, t.bytes, t.op) for t in real.peak_tensors]


def _model_step(factory, specs, batch):
    specs = model_inputs.parse_all(specs)

    def make_for(device):
        torch.manual_seed(0)
        with torch.device(device):
            model = factory()
        model.train()
        args, kwargs = model_inputs.make(specs, batch, device)
        ordered = [s for s in specs if not s.name] + [s for s in specs if s.name]
        values = [(t, s.value(batch)) for s, t in zip(ordered, [*args, *kwargs.values()]) if s.has_values]
        params = [p for p in model.parameters() if p.requires_grad]
        return runner.Step(model, args, kwargs, baseline=[([*model.parameters(), *model.buffers()], "parameters"),
                                                          ([*args, *kwargs.values()], "input")],
                           loss=lambda out: out.float().mean() if isinstance(out, torch.Tensor) else out[0].float().mean(),
                           optimizer=torch.optim.Adam(params, lr=1e-4), steps=2,
                           values=values if device == "meta" else None)
    return make_for


class Masked(nn.Module):
    """Attention whose mask is dropped when it masks nothing: a branch on the input's values."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 48)

    def forward(self, x, mask):
        q, k, v = self.proj(x).unsqueeze(1).chunk(3, dim=-1)
        keep = None if mask.all() else mask[:, None, None, :].bool()
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)


@pytest.mark.parametrize("model,specs", [
    ("examples/sagan.py:Generator", ["128"]),
    ("examples/classifier.py:resnet_attn", ["3x32x32"]),
    ("examples/zoo/mha.py:cnn_mha", ["3x32x32"]),
    (Masked, ["8x16", "mask=8:int64:pad=0.25"]),
    (Masked, ["8x16", "mask=8:int64"]),
], ids=["sagan", "resnet-attn", "mha", "mask-padded", "mask-ones"])
def test_a_model_step_simulated_is_the_real_one(model, specs):
    args = {"examples/sagan.py:Generator": {"ch": 8, "image_size": 32},
            "examples/classifier.py:resnet_attn": {"width": 16, "num_classes": 10},
            "examples/zoo/mha.py:cnn_mha": {"width": 16, "heads": 2}}
    factory = load(model, args[model]) if isinstance(model, str) else model
    runs = _both(_model_step(factory, specs, 2))
    (sim, sim_out), (real, real_out) = runs["meta"], runs["cpu"]
    assert sim.baseline == real.baseline and sim.allocator.peak == real.allocator.peak
    assert [c.backend for c in sim_out.calls] == [c.backend for c in real_out.calls]
    assert sim_out.attribution.layers == real_out.attribution.layers
