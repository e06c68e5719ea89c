"""Memory layouts that meta kernels get wrong, and the copies the real kernels make for them.

A meta kernel decides an output's strides without knowing the device; where the CPU and CUDA
kernels decide otherwise, every later op that needs a particular layout (a `.contiguous()`
in group_norm, a reshape that cannot be a view) copies on the device and not on meta. So the
simulation gives such outputs the strides the device kernel gives them, and costs the
copies the kernel makes of its inputs.

Convolutions (aten/src/ATen/native/Convolution.cpp `_convolution` and
`convolution_backward`): the backend's memory format is channels-last when the input or the
weight suggests it (`determine_backend_memory_format`: `cudnn_conv_suggest_memory_format`
for cuDNN, `mkldnn_conv_use_channels_last` / `thnn_conv_use_channels_last` on the CPU; never
for float64); input and weight are made contiguous in that format (a copy of whichever is
not) and the outputs come out in it. The meta kernel (`torch/_meta_registrations.py`
`meta_conv`) always returns a contiguous output and copies nothing.
"""

from __future__ import annotations

import torch

from sa_profiler.attention.memory_format import suggests_channels_last

aten = torch.ops.aten


def conv_format(inp: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    if torch.float64 in (inp.dtype, weight.dtype) or weight.dim() not in (4, 5):
        return torch.contiguous_format
    if suggests_channels_last(inp) or suggests_channels_last(weight):
        return torch.channels_last if weight.dim() == 4 else torch.channels_last_3d
    return torch.contiguous_format


def _like(t: torch.Tensor, fmt) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=fmt)


def _copy(t: torch.Tensor, what: str, op: str):
    return (t.numel() * t.element_size(), tuple(t.shape), str(t.dtype).replace("torch.", ""),
            f"{what} made contiguous in the backend's memory format inside {op}")


class LayoutRules:
    """Layout corrections for meta outputs (any target) and, on CUDA, the copies the kernels
    make through the caching allocator. On the CPU the copies happen inside the kernel, below
    the dispatcher, where the tracker of a real CPU step does not see them either."""

    ops = frozenset({"convolution", "convolution_backward"})  # every op a method below may act on

    def __init__(self, cuda: bool = True):
        self.cuda = cuda

    def restride(self, func, args, out):
        if func is aten.convolution.default and isinstance(out, torch.Tensor) and out.device.type == "meta":
            fmt = conv_format(args[0], args[1])
            if fmt is not torch.contiguous_format and not out.is_contiguous(memory_format=fmt):
                return _like(out, fmt)
        # grad_input or grad_weight on meta (either may not be asked for: a first layer has no grad_input)
        if func is aten.convolution_backward.default and any(
                t is not None and t.device.type == "meta" for t in out[:2]):
            fmt = conv_format(args[1], args[2])
            if fmt is not torch.contiguous_format:
                grad_input, grad_weight, grad_bias = out
                if grad_input is not None and not grad_input.is_contiguous(memory_format=fmt):
                    grad_input = _like(grad_input, fmt)
                if grad_weight is not None and not grad_weight.is_contiguous(memory_format=fmt):
                    grad_weight = _like(grad_weight, fmt)
                return grad_input, grad_weight, grad_bias
        return out

    def untracked_outputs(self, func, args, outputs) -> tuple[int, ...]:
        return ()

    def transients(self, func, args, kwargs, outputs):
        if not self.cuda:
            return []
        if func is aten.convolution.default and args[0].device.type == "meta":
            fmt = conv_format(args[0], args[1])
            return [_copy(t, what, "convolution") for t, what in ((args[0], "input"), (args[1], "weight"))
                    if not t.is_contiguous(memory_format=fmt)]
        if func is aten.convolution_backward.default and args[0].device.type == "meta":
            fmt = conv_format(args[1], args[2])
            if fmt is torch.contiguous_format:
                return []
            return [_copy(t, what, "convolution_backward")
                    for t, what in ((args[0], "grad_output"), (args[1], "input"), (args[2], "weight"))
                    if not t.is_contiguous(memory_format=fmt)]
        return []


class ChainedRules:
    """Several rule sets applied in order (layouts first, then a target's kernel rules)."""

    def __init__(self, *rules):
        self.rules = [r for r in rules if r is not None]
        self.ops = frozenset().union(*(r.ops for r in self.rules))

    def restride(self, func, args, out):
        for r in self.rules:
            out = r.restride(func, args, out)
        return out

    def untracked_outputs(self, func, args, outputs) -> tuple[int, ...]:
        return tuple(sorted({i for r in self.rules for i in r.untracked_outputs(func, args, outputs)}))

    def transients(self, func, args, kwargs, outputs):
        return [t for r in self.rules for t in r.transients(func, args, kwargs, outputs)]

    def __getattr__(self, name):  # anything else a target's rules expose (e.g. `gpu`)
        for r in self.rules:
            if hasattr(r, name):
                return getattr(r, name)
        raise AttributeError(name)
