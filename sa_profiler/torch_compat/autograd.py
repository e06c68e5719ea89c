"""Private accessors of autograd and of tensors the engine reads: each names the torch source it
follows, and where a release lacks it, says what the caller gets instead."""

from __future__ import annotations


def make_saved_tensor():
    """`torch._C._autograd._make_saved_tensor` (torch 2.13 and later), or None."""
    import torch

    return getattr(torch._C._autograd, "_make_saved_tensor", None)


def saved_tensor_type():
    """`torch._C._autograd.SavedTensor`, the type `make_saved_tensor` returns (torch/csrc/autograd/
    python_saved_variable_hooks.cpp; bound from 2.0), or None where missing."""
    import torch

    return getattr(torch._C._autograd, "SavedTensor", None)


def graph_task_id() -> int | None:
    """`torch._C._current_graph_task_id()` (torch/csrc/autograd/init.cpp: the running graph task's
    id, -1 outside a backward; what torch.utils.checkpoint keys its recomputes by), or None on a
    torch without it."""
    import torch

    current = getattr(torch._C, "_current_graph_task_id", None)
    return None if current is None else current()


def graph_exec_group():
    """`torch._C._get_graph_exec_group()` (torch.utils.checkpoint keys a recompute by it where it
    exists, before the graph task id), or None on a torch without it or outside a group."""
    import torch

    current = getattr(torch._C, "_get_graph_exec_group", None)
    return None if current is None else current()


def non_strict_tracing() -> bool:
    """`torch.compiler._is_non_strict_tracing()` (torch/compiler/__init__.py), False where missing."""
    import torch

    current = getattr(getattr(torch, "compiler", None), "_is_non_strict_tracing", None)
    return False if current is None else current()


def is_view(t) -> bool:
    """`Tensor._is_view()` (python_variable_methods.cpp: the tensor is a view of another), present
    in every supported release."""
    return t._is_view()


def view_base(t):
    """`Tensor._base` (python_variable.cpp `THPVariable_get_base`: the viewed tensor, None for a
    tensor that is not a view), present in every supported release."""
    return t._base


def sequence_nr(node) -> int:
    """An autograd node's sequence number (grows as nodes are made; `Node._sequence_nr`, private
    but present in every supported release)."""
    return node._sequence_nr()


def function_mode_stack() -> list:
    """The torch-function modes on the stack now (innermost last; torch/overrides.py
    `_get_current_function_mode_stack`, in every supported release)."""
    from torch.overrides import _get_current_function_mode_stack

    return list(_get_current_function_mode_stack())
