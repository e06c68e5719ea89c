"""One step of a workload: the layer and its input, and forward or forward + backward; as a
`runner.Step` (a model step with one module, one input, a `sum()` loss and no optimizer)."""

from __future__ import annotations

import torch

from sa_profiler.attention import build
from sa_profiler.engine.runner import Step
from sa_profiler.engine.workload import Workload


def make(w: Workload, device: str | torch.device):
    """The layer and input of `w` on `device`. In training the input requires grad, as it does
    for an attention layer inside a network (its gradient flows to the layers before)."""
    layer = build(w.impl, w.channels, **dict(w.options)).to(device=device, dtype=w.torch_dtype)
    if w.mode == "forward":
        layer.eval().requires_grad_(False)
    if device == "meta" or getattr(device, "type", None) == "meta":
        x = torch.empty(w.batch, w.channels, w.height, w.width, device=device, dtype=w.torch_dtype)
    else:
        x = torch.randn(w.batch, w.channels, w.height, w.width, device=device, dtype=w.torch_dtype)
    if w.mode == "train":
        x.requires_grad_(True)
    return layer, x


def layer_step(w: Workload, device) -> Step:
    """The workload as the runner runs it: the layer's parameters and the input are the baseline."""
    layer, x = make(w, device)
    return Step(layer, [x], baseline=[(list(layer.parameters()) + [x], "baseline")], loss=lambda out: out[0].sum(),
                train=w.mode == "train", phases=False)


def run(layer, x, mode: str) -> None:
    """Forward under no_grad, or forward + `out.sum().backward()`; nothing is kept."""
    if mode == "forward":
        with torch.no_grad():
            layer(x)
    else:
        layer(x)[0].sum().backward()


def clear_grads(layer, x) -> None:
    for p in layer.parameters():
        p.grad = None
    x.grad = None
