"""Allocations a dispatch mode cannot see, per op, on CUDA.

A kernel that allocates a temporary inside its C++ implementation (below the dispatcher)
adds to `max_memory_allocated` but never shows up as an op output. Each rule names the op,
the condition, the bytes, and the torch source it follows; tests/test_rules.py pins each one
and the validation CSVs under reports/validation/ check them against a real card.
Outputs that a meta kernel returns on the device but the CUDA kernel returns on the host
(philox seed/offset of the memory-efficient kernel) are listed in `untracked_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

F32 = 4


def _name(func) -> str:
    return func.overloadpacket.__name__


def _dt(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


@dataclass(frozen=True)
class Rule:
    op: str
    source: str
    temps: Callable  # (args, kwargs, outputs, gpu) -> [(bytes, shape, dtype, note)]


def _softmax_backward(args, kwargs, outputs, gpu):
    # aten/src/ATen/native/cuda/SoftMax.cu, host_softmax_backward: `grad_.contiguous()` and
    # `output_.contiguous()` copy a non-contiguous gradient / output inside the kernel.
    grad, output = args[0], args[1]
    temps = []
    for what, t in (("grad_output", grad), ("output", output)):
        if not t.is_contiguous():
            temps.append((t.numel() * t.element_size(), tuple(t.shape), _dt(t), f"contiguous copy of {what} inside the softmax backward kernel"))
    return temps


def _efficient_forward(args, kwargs, outputs, gpu):
    # aten/src/ATen/native/transformers/cuda/attention.cu `_efficient_attention_forward`:
    # `output_accum` (float32, B x M x H x Kv) when Kernel::kNeedsOutputAccumulatorBuffer,
    # i.e. fp16/bf16 output with value head size > 128 (no single value iteration,
    # mem_eff_attention/kernel_forward.h).
    q, v = args[0], args[2]
    b, h, m, _ = q.shape
    kv = v.shape[-1]
    if q.dtype in (torch.float16, torch.bfloat16) and kv > 128:
        return [(b * m * h * kv * F32, (b, m, h, kv), "float32", "output_accum of the memory-efficient kernel")]
    return []


RULES: dict[str, Rule] = {r.op: r for r in [
    Rule("_softmax_backward_data", "aten/src/ATen/native/cuda/SoftMax.cu host_softmax_backward", _softmax_backward),
    Rule("_scaled_dot_product_efficient_attention", "aten/src/ATen/native/transformers/cuda/attention.cu", _efficient_forward),
]}

# CUDA returns these outputs on the host (not device memory); meta returns them on "device".
UNTRACKED_OUTPUTS = {
    # cuda/attention.cu: seed and offset are CPU scalars unless the stream is capturing a graph
    "_scaled_dot_product_efficient_attention": (2, 3),
}


class CudaRules:
    """The rules for one GPU target (some depend on its SM count or compute capability)."""

    def __init__(self, gpu):
        self.gpu = gpu

    def untracked_outputs(self, func, outputs) -> tuple[int, ...]:
        return UNTRACKED_OUTPUTS.get(_name(func), ())

    def transients(self, func, args, kwargs, outputs):
        rule = RULES.get(_name(func))
        return rule.temps(args, kwargs, outputs, self.gpu) if rule else []
