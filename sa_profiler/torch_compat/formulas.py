"""Autograd formulas and op spellings that changed between releases, read off the running torch
or by the simulated target's version."""

from __future__ import annotations

import functools

from sa_profiler.torch_compat.versions import version_tuple

GROUP_NORM_KERNEL_COPIES = (2, 14)  # #186414 (merged 2026-06): the copies move into the kernels


@functools.lru_cache(maxsize=None)
def group_norm_backward_copies_grad() -> bool:
    """Whether the running torch's group norm copies its operands as ops of their own: up to
    torch 2.13 the `group_norm` composite (aten/src/ATen/native/group_norm.cpp) passes
    `input.contiguous(...)` to `native_group_norm` (a copy kept for the backward) and the
    backward formula (tools/autograd/derivatives.yaml, native_group_norm) passes
    `grad_out.contiguous(...)` to `native_group_norm_backward`; torch 2.14 (#186414) passes
    both as they are and the kernels make them contiguous inside. Read off the running torch:
    group norm run once on a tiny transposed CPU tensor (the formula is the same on every
    device), counting the `clone`s before each kernel."""
    import torch
    import torch.nn.functional as F

    from sa_profiler.torch_compat import lazy
    from sa_profiler.torch_compat.dispatch import TorchDispatchMode

    class _Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    x = torch.zeros(1, 2, 2, 3).transpose(2, 3).requires_grad_()  # on the CPU: meta's kernel is a Python ref
    with lazy.outside_compile(_Ops.__torch_dispatch__), torch.enable_grad(), _Ops() as ops:
        F.group_norm(x, 1).sum().backward()
    names = ops.names
    forward = names[:names.index("native_group_norm")]
    backward = names[names.index("native_group_norm"):names.index("native_group_norm_backward")]
    return "clone" in forward and "clone" in backward


def group_norm_copies_in(version: str) -> bool:
    """Whether torch `version` (the simulated target's) copies group norm's operands as ops of
    their own (see `group_norm_backward_copies_grad`): up to 2.13."""
    return version_tuple(version) < GROUP_NORM_KERNEL_COPIES


def half_to_float_softmax() -> dict:
    """softmax and log_softmax as autocast runs them on a float16 input: the private aten ops
    `torch._softmax` / `torch._log_softmax` with `half_to_float` (aten/src/ATen/native/SoftMax.cpp
    `softmax`; native_functions.yaml `_softmax(Tensor self, int dim, bool half_to_float)`, in every
    supported release), by the name of the public function."""
    import torch

    return {"softmax": torch._softmax, "log_softmax": torch._log_softmax}
