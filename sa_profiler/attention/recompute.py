"""Non-reentrant activation checkpointing for simulated (meta) steps, without torch._dynamo.

`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)` reads `torch._dynamo.config` on
every call (and wraps its recompute hook in `torch._dynamo.disable`), which imports
torch._dynamo: about half a second the first time, in a process that never compiles. On meta
tensors the chunked layer checkpoints with `checkpoint` below instead: torch's own algorithm
(torch/utils/checkpoint.py `_checkpoint_without_reentrant_generator`, `_checkpoint_hook`,
`_recomputation_hook`, early stop on), step by step:

- forward: the inputs are kept as saved tensors (`_make_saved_tensor`, so an enclosing
  checkpoint sees them as it sees torch's); every tensor autograd saves inside is replaced by
  a holder; the CPU RNG state and CPU autocast state are captured, with the simulation's
  routing mode (`routing.AttentionRouting`) if one is on the torch-function mode stack;
- backward, at the first unpack of a graph task: the function re-runs under grad with that
  routing re-entered (as `torch_compat.checkpoint_scope` does for torch's own checkpoint),
  that autocast state and that RNG state; each tensor saved there is detached
  and kept for its holder, and the re-run stops as soon as the last one is kept;
- each kept tensor is released at its own unpack.

So the same aten ops run (the detaches included), and the same storages are allocated and
freed in the same order: tests/test_recompute.py compares the two byte for byte, op by op.
What it leaves out matters only on real devices, where torch's checkpoint runs: device RNG
states, the determinism check, `debug`, `context_fn`, tracing. Where a torch private it needs
is missing (torch before 2.13: `torch_compat.make_saved_tensor`), `usable` says no and the
caller uses torch's checkpoint.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict

import torch

from sa_profiler import torch_compat

_make_saved_tensor = torch_compat.make_saved_tensor()  # None: torch's own checkpoint is used
SavedTensor = torch_compat.saved_tensor_type() if _make_saved_tensor is not None else None


def usable(*args) -> bool:
    """Whether `checkpoint` stands in for torch's here: every tensor argument on meta, the
    torch privates it mirrors present, torch's defaults in force, and nothing tracing."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return (_make_saved_tensor is not None and bool(tensors) and all(t.device.type == "meta" for t in tensors)
            and torch_compat.defaults_in_force() and not torch_compat.non_strict_tracing())


class _Stop(Exception):
    """Raised by the recompute's pack hook once every saved tensor is recomputed (early stop)."""


class _Handle:
    pass


class _Holder:
    def __init__(self) -> None:
        self.handles: dict = {}


class _Frame:
    def __init__(self, recompute) -> None:
        self.recompute = recompute
        self.saved_args: list = []
        self.weak_holders: list = []
        self.recomputed = defaultdict(weakref.WeakKeyDictionary)  # gid -> {handle: tensor}
        self.recomp_counter = defaultdict(int)
        self.is_recomputed = defaultdict(bool)

    def save_inputs(self, *args) -> None:
        self.saved_args = [_make_saved_tensor(a, is_output=False) if isinstance(a, torch.Tensor) else a for a in args]

    def get_inputs(self) -> list:
        return [a.unpack() if isinstance(a, SavedTensor) else a for a in self.saved_args]


class _RecomputeHooks(torch.autograd.graph.saved_tensors_hooks):
    def __init__(self, frame_ref, gid) -> None:
        def pack(x):
            x = x.detach() if x.requires_grad else x
            frame = frame_ref()
            idx = frame.recomp_counter[gid]
            frame.recomp_counter[gid] += 1
            if idx >= len(frame.weak_holders):
                raise RuntimeError("checkpointed function saved more tensors when recomputed than in the forward")
            holder = frame.weak_holders[idx]()
            if holder is not None:
                holder.handles[gid] = _Handle()
                frame.recomputed[gid][holder.handles[gid]] = x
            if frame.recomp_counter[gid] == len(frame.weak_holders):
                raise _Stop
            return x

        super().__init__(pack, lambda x: x)


class _ForwardHooks(torch.autograd.graph.saved_tensors_hooks):
    def __init__(self, frame: _Frame) -> None:
        def pack(x):
            holder = _Holder()
            frame.weak_holders.append(weakref.ref(holder))
            return holder

        def unpack(holder):
            gid = torch_compat.graph_exec_group()
            if gid is None:
                gid = torch_compat.graph_task_id()
                if gid == -1:  # unpacked outside a backward
                    gid = object()
            if not frame.is_recomputed[gid]:
                args = frame.get_inputs()
                try:
                    with _RecomputeHooks(weakref.ref(frame), gid), torch.autograd.enable_grad():
                        frame.recompute(*args)
                except _Stop:
                    pass
                frame.is_recomputed[gid] = True
                if frame.recomp_counter[gid] != len(frame.weak_holders):
                    raise RuntimeError("checkpointed function saved fewer tensors when recomputed than in the forward")
            if holder.handles.get(gid) is None:
                raise RuntimeError("a checkpointed tensor was unpacked twice in one backward")
            ret = frame.recomputed[gid][holder.handles[gid]]
            holder.handles[gid] = None
            return ret

        super().__init__(pack, unpack)


def checkpoint(fn, *args):
    """`fn(*args)` with its saved tensors recomputed in the backward, as
    `torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)` does on meta tensors."""
    device_type = next(a.device.type for a in args if isinstance(a, torch.Tensor))
    device_autocast = ({"enabled": torch.is_autocast_enabled(device_type), "dtype": torch.get_autocast_dtype(device_type),
                        "cache_enabled": torch.is_autocast_cache_enabled()}
                       if torch.amp.is_autocast_available(device_type) else None)
    cpu_autocast = {"enabled": torch.is_autocast_enabled("cpu"), "dtype": torch.get_autocast_dtype("cpu"),
                    "cache_enabled": torch.is_autocast_cache_enabled()}
    cpu_rng = torch.get_rng_state()
    routing = next((m for m in reversed(torch_compat.function_mode_stack()) if hasattr(m, "reentered")), None)

    def recompute(*inputs) -> None:
        torch.set_rng_state(cpu_rng)  # meta tensors have no RNG state of their own to restore
        autocast = (torch.amp.autocast(device_type=device_type, **device_autocast) if device_autocast is not None
                    else contextlib.nullcontext())
        reentered = routing.reentered() if routing is not None else contextlib.nullcontext()
        with autocast, torch.amp.autocast("cpu", **cpu_autocast), reentered:
            fn(*inputs)

    if not torch.is_grad_enabled():
        return fn(*args)
    frame = _Frame(recompute)
    frame.save_inputs(*args)
    with _ForwardHooks(frame):
        return fn(*args)
