"""The torch versions sa-profiler supports, and every private or version-dependent piece of torch
it leans on.

The engine runs on torch's own machinery (meta kernels, torch-function and dispatch modes,
autograd's checkpoint), and that machinery changes from release to release. Every access to a
torch private (`torch._C`, `torch.utils._python_dispatch`, `torch._refs`, private attributes)
and every difference between the supported releases is made in this package, each behind one
named function with the torch source it relies on, detected by behaviour or schema where it can
be (so a patch release that back-ports a change is handled too) and by version where it cannot.
tests/test_torch_compat.py has a test per guard; a new torch release that changes one of these
breaks this package, visibly. Importing it imports no torch (options are checked before torch
loads); `dispatch`, `lazy` and `plain_shapes` import torch and are imported by their users.

By subject:
- `versions`: `SUPPORTED`, the releases tested (pyproject.toml keeps the floor, and no ceiling);
  below the floor the CLI refuses to start (`unsupported`), above the last it answers with a
  one-line note that the release is untested (`untested`); `checked_torch_version`.
- `sdpa_ops`: `register_fakes` (the fused SDPA forward ops and the cuDNN backward have no meta
  kernel before torch 2.5; registered from torch 2.8's torch/_meta_registrations.py where
  missing); `cudnn_attention` / `cudnn_computes_lse` (the cuDNN op's schema: 2.4 has no
  `attn_bias`, no `compute_log_sumexp`); `sdpa_takes_gqa` (`enable_gqa`, 2.5 and later);
  `sdp_defaults` (cuDNN opt-in in 2.4); `sdpa_functions` (`torch._C._nn`'s SDPA binding);
  `op_schema` (`OpOverload._schema`).
- `autograd`: `make_saved_tensor` / `saved_tensor_type` (2.13 and later, which the chunked
  layer's checkpoint mirror needs; before it the layer takes torch's own checkpoint),
  `graph_task_id`, `graph_exec_group`, `non_strict_tracing`, `is_view`, `view_base`,
  `sequence_nr`, `function_mode_stack`.
- `checkpoint`: `checkpoint_scope` (torch.utils.checkpoint's recompute re-enters no
  torch-function mode of ours in any release, so the simulation's routing is entered around
  each non-reentrant recompute; before 2.5 `_get_device_module("meta")` raises) and
  `defaults_in_force` (its private early-stop and debug switches).
- `formulas`: `group_norm_backward_copies_grad` / `group_norm_copies_in` (group norm copies its
  strided operands as ops of its own up to 2.13, inside its kernels from 2.14, #186414);
  `half_to_float_softmax` (the private `_softmax` / `_log_softmax` autocast runs).
- `imports`: `import_flop_counter_without_triton`.
- `optim`: `fused_on_meta` (torch's fused Adam / AdamW refuse a device outside their private list
  of fused devices, meta included, although their kernels have meta kernels).
- `dispatch`: `TorchDispatchMode`, `disable_current_modes`, `tree_flatten`, `tree_map`.
- `lazy` and `plain_shapes`: speed shortcuts on torch's internals, each with its fallback
  (torch's own path): `lazy.outside_compile` keeps `torch._dynamo` out of a step that nothing
  compiles (it caches functions of `torch._refs` in torch's `_disable_dynamo` wrappers), and
  `plain_shapes.plain_shapes` keeps sympy out of shape checks on plain ints (stand-ins in
  `sys.modules` for `torch.fx.experimental.symbolic_shapes`, sympy and
  `torch.utils._sympy.functions`).
"""

from __future__ import annotations

from sa_profiler.torch_compat.versions import (OVERRIDE, SUPPORTED, checked_torch_version, installed_version,
                                               unsupported, untested, version_tuple)

# the rest on first use: the answer cache and the option checks need the versions alone
_BY_SUBJECT = {
    "autograd": ("function_mode_stack", "graph_exec_group", "graph_task_id", "is_view", "make_saved_tensor",
                 "non_strict_tracing", "saved_tensor_type", "sequence_nr", "view_base"),
    "checkpoint": ("checkpoint_knows_meta", "checkpoint_scope", "defaults_in_force", "fork_rng_knows_meta"),
    "formulas": ("GROUP_NORM_KERNEL_COPIES", "group_norm_backward_copies_grad", "group_norm_copies_in",
                 "half_to_float_softmax"),
    "imports": ("import_flop_counter_without_triton",),
    "optim": ("fused_on_meta",),
    "sdpa_ops": ("cudnn_attention", "cudnn_computes_lse", "cudnn_takes_bias", "missing_fakes", "op_schema",
                 "register_fakes", "sdp_defaults", "sdpa_functions", "sdpa_takes_gqa"),
}
_SUBJECT = {name: subject for subject, names in _BY_SUBJECT.items() for name in names}
__all__ = ["OVERRIDE", "SUPPORTED", "checked_torch_version", "installed_version", "unsupported", "untested",
           "version_tuple", "prepare", *_SUBJECT]


def __getattr__(name):
    subject = _SUBJECT.get(name)
    if subject is None:
        raise AttributeError(f"module 'sa_profiler.torch_compat' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"sa_profiler.torch_compat.{subject}"), name)
    globals()[name] = value
    return value


def prepare() -> None:
    """Everything a simulation needs settled before its modes are entered: the missing meta
    kernels registered, and the behaviour probes run (outside any mode that would count them)."""
    from sa_profiler.torch_compat.formulas import group_norm_backward_copies_grad
    from sa_profiler.torch_compat.sdpa_ops import register_fakes

    register_fakes()
    group_norm_backward_copies_grad()
