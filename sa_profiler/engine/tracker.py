"""A dispatch-level memory tracker: every storage an op creates, costed by an allocator model.

Under a `TorchDispatchMode` every aten op's outputs pass through `__torch_dispatch__`. A new
storage (not one already seen: views and in-place results share their input's storage) is
allocated in the allocator model and freed when the storage dies (`weakref.finalize` on the
storage object, which torch keeps unique per storage). Kernel-internal allocations that no
dispatch mode can see come from `rules` (see `rules.py`). The same tracker runs on meta
tensors (simulation) and on real CPU tensors (measurement), so the two agree to the byte.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from sa_profiler.engine import meta_memo, workspaces
from sa_profiler.engine.meta_memo import tensors_in
from sa_profiler.engine.allocator import block_bytes
from sa_profiler.engine.workload import TensorInfo, where
from sa_profiler.torch_compat import lazy
from sa_profiler.torch_compat.dispatch import TorchDispatchMode

# aliasing ops take `MemoryTracker._view`, and ops no rule names skip the rules (False: every op
# takes the general path, to compare)
SHORT_PATHS = True

# Which SDPA backend ran, by the aten op torch dispatched to.
BACKEND_OPS = {
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_safe_softmax": "math",
}


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor holding `t`'s memory on this rank: a DTensor's local shard, else `t`."""
    return getattr(t, "_local_tensor", t)


@dataclass
class _Alloc:
    handle: object
    info: TensorInfo


class MemoryTracker(TorchDispatchMode):
    def __init__(self, allocator, device_type: str | tuple[str, ...], rules=None, timer=None):
        super().__init__()
        self.allocator = allocator
        # the device(s) whose storages count: meta for a simulation (and cpu too when the
        # target is the CPU, where host-side scalars are the same memory), cpu or cuda to measure
        self.device_types = (device_type,) if isinstance(device_type, str) else tuple(device_type)
        self.rules = rules
        self.timer = timer  # a timing.StepTimer that costs each op, or None
        self.baseline = 0
        self.ops: dict[str, int] = {}
        self._live: dict[int, _Alloc] = {}
        self._seen = weakref.WeakSet()  # storages already allocated
        # a storage's first allocation key -> its allocation now: FSDP2 frees and refills its
        # unsharded parameters with `UntypedStorage.resize_`, which no dispatch mode sees
        self._resized: dict[int, int | None] = {}
        self._first_key = weakref.WeakKeyDictionary()  # storage -> its first allocation key
        # a sharded step (models/parallel.py): DTensor's class, and whether a fake mode (its
        # sharding propagation) is active now; None: plain tensors only
        self.subclass: type | None = None
        self.shape_only: Callable[[], bool] = lambda: False
        self.label = ""  # what a wrapper is allocating now (DDP's buckets, FSDP's buffers), noted on each
        self._next = 0
        self._peak_seen = 0
        self.op_log: list[tuple[str, int, int]] | None = None  # (op, output bytes, hidden bytes) if a list
        # per op, if a list: (op, allocated bytes at the op's high point, phase, module); the
        # high point includes the op's kernel-internal temporaries, before they are released
        self.timeline: list[tuple[str, int, str, str]] | None = None
        self.peak_index: int | None = None  # index in `timeline` of the op that set the peak
        self.phase = ""  # set by whole-model steps: forward / backward / optimizer
        self.module = ""  # the top-level module running now
        self.in_attention = False  # inside an attention layer now (attribution.py)
        self.keep_peak_live = False  # give every allocation alive at the peak (for breakdowns)
        # every allocation and release in order, (key, info) and (key, None): the allocations alive
        # at the peak are read back from it once, at the end, rather than copied at each new peak
        self._events: list[tuple[int, TensorInfo | None]] = []
        self._peak_event: int | None = None  # events up to the peak
        self._at_peak: dict[int, TensorInfo] | None = None
        self.key_of = weakref.WeakKeyDictionary()  # storage -> allocation key
        self.sdpa_math = False  # the step called SDPA (a fused kernel or else math)
        self._scopes: list = []  # lazy.outside_compile scopes entered with the mode
        # (library, thread) pairs whose workspace exists (workspaces.py); with `workspace_bytes`
        # (library -> bytes) each is allocated at its first use and held, as a fresh process does
        self.blas_handles: set[tuple[str, str]] = set()
        self.workspace_bytes: dict[str, int] | None = None

    def __enter__(self):
        # the step never compiles: keep torch._dynamo (a second to import) out of it (torch_compat.lazy)
        scope = lazy.outside_compile(type(self).__torch_dispatch__)
        scope.__enter__()
        self._scopes.append(scope)
        self._scopes.append(self._resizes())
        self._scopes[-1].__enter__()
        try:
            return super().__enter__()
        except BaseException:
            for _ in range(2):
                self._scopes.pop().__exit__(None, None, None)
            raise

    def __exit__(self, exc_type, exc_val, exc_tb):
        try:
            return super().__exit__(exc_type, exc_val, exc_tb)
        finally:
            for _ in range(2):
                self._scopes.pop().__exit__(None, None, None)

    @contextlib.contextmanager
    def _resizes(self):
        """`UntypedStorage.resize_` of a tracked storage, seen while the mode is on: the old
        allocation released, one of the new size made (none at 0), as torch's allocator does
        (MemTracker patches the same method: `_track_resize`)."""
        original = torch.UntypedStorage.resize_

        @functools.wraps(original)
        def resize_(st, size):
            out = original(st, size)
            key = self.key_of.get(st)
            if key is not None or st in self._seen:
                self._resize(st, key)
            return out

        torch.UntypedStorage.resize_ = resize_
        try:
            yield
        finally:
            torch.UntypedStorage.resize_ = original

    def _resize(self, st, key: int | None) -> None:
        first = self._first_key.get(st)
        if key is not None:
            self._release(key)
        nbytes = st.nbytes()
        if nbytes == 0:
            self.key_of.pop(st, None)
            self._resized[first] = None
            return
        info = TensorInfo((nbytes,), "uint8", 0, "resize_", self.label, self.phase, self.module, self.in_attention)
        new = self._hold(self.allocator.malloc(nbytes), info)
        self.key_of[st] = new
        self._resized[first] = new
        self._note_peak()

    # -- public ---------------------------------------------------------------------
    def add_baseline(self, tensors, label: str = "baseline") -> None:
        """Tensors that exist before the step (parameters, input): allocated, never in the peak.
        A sharded parameter counts its local shard."""
        before = self.allocator.allocated
        for t in tensors:
            self._track(local(t), label)
        self.baseline += self.allocator.allocated - before
        self._peak_seen = self.allocator.peak

    @property
    def peak_over_baseline(self) -> int:
        return self.allocator.peak - self.baseline

    @property
    def backend(self) -> str:
        """The SDPA backend that ran, by its op; math's `_safe_softmax` is torch 2.5 and later
        (2.4's math ran `_softmax`: `sdpa_math` tells the caller that SDPA was called)."""
        found = [b for op, b in BACKEND_OPS.items() if op in self.ops]
        return found[0] if found else ("math" if self.sdpa_math and "_softmax" in self.ops else "")

    def made_by(self, t: torch.Tensor, module: str = "") -> str:
        """Which op made `t` and in which module (`module`, the one running now, where given),
        for a message; "" if the tracker did not see it."""
        alloc = self._live.get(self.key_of.get(t.untyped_storage(), -1))
        if alloc is None:
            return ""
        module = module or alloc.info.module
        return f"made by {alloc.info.op} in " + (module or "the model's own forward")

    def _where(self) -> str:
        return where(self.module, self.in_attention)

    def held_workspaces(self, workspace_bytes: dict[str, int]) -> int:
        """Bytes of the library workspaces the step's matrix products hold once it has run."""
        return sum(workspace_bytes[lib] for lib, _ in self.blas_handles)

    # -- dispatch -------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.subclass is not None:  # a sharded step: DTensor desugars into its local ops first
            if any(issubclass(t, self.subclass) for t in types):
                return NotImplemented
            if self.shape_only():  # its sharding propagation's own fake tensors are no memory
                return func(*args, **kwargs)
        if func.is_view and SHORT_PATHS:
            return self._view(func, args, kwargs)
        layouts = meta_memo.inputs_key(args, kwargs) if meta_memo.enabled() else None
        out = meta_memo.call(func, args, kwargs, layouts)  # the kernel, or its output's layout from a repeat
        name = func.overloadpacket.__name__
        # the rules act on the ops they name (`rules.ops`); for any other op each method is a no-op
        ruled = self.rules is not None and (name in self.rules.ops or not SHORT_PATHS)
        if ruled:
            out = self.rules.restride(func, args, out)
        self.ops[name] = self.ops.get(name, 0) + 1
        outputs = tensors_in(out)
        skip = self.rules.untracked_outputs(func, args, outputs) if ruled else ()
        before = self.allocator.allocated
        for i, t in enumerate(outputs):
            if i not in skip:
                self._track(t, name)
        for lib in workspaces.handles(name, args):
            self._first_use(lib)
        hidden = 0
        high = self.allocator.allocated
        if ruled:
            temps = [
                self._hold(self.allocator.malloc(nbytes), TensorInfo(shape, dtype, 0, name, note, self.phase, self.module, self.in_attention))
                for nbytes, shape, dtype, note in self.rules.transients(func, args, kwargs, outputs)
            ]
            hidden = sum(self._live[k].info.bytes for k in temps)
            high = self.allocator.allocated
            self._note_peak()
            for key in temps:
                self._release(key)
        if self.timeline is not None:
            self.timeline.append((name, high, self.phase, self._where()))
        if self.op_log is not None:
            self.op_log.append((name, self.allocator.allocated - before, hidden))
        if self.timer is not None:
            self.timer.add(func, args, kwargs, out, layouts)
        return out

    def _view(self, func, args, kwargs):
        """An op whose output aliases an input (its schema says so: a view, detach, alias): no
        kernel, no new storage, and no rule or library handle applies to one (rules.py,
        layouts.py, workspaces.py name none), so only its count, its place in the logs and its
        launch are kept. What `__torch_dispatch__` does for any op, less the steps that are
        no-ops for these (tests/test_meta_memo.py runs steps both ways)."""
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        self.ops[name] = self.ops.get(name, 0) + 1
        before = self.allocator.allocated
        for t in tensors_in(out):  # an alias of a storage made before tracking began is new here
            self._track(t, name)
        if self.timeline is not None:
            self.timeline.append((name, self.allocator.allocated, self.phase, self._where()))
        if self.op_log is not None:
            self.op_log.append((name, self.allocator.allocated - before, 0))
        if self.timer is not None:
            self.timer.add(func, args, kwargs, out)
        return out

    # -- internals ------------------------------------------------------------------
    def _first_use(self, lib: str) -> None:
        key = (lib, workspaces.thread())
        if key in self.blas_handles:
            return
        self.blas_handles.add(key)
        if self.workspace_bytes is not None:
            nbytes = self.workspace_bytes[lib]
            self._hold(self.allocator.malloc(nbytes), TensorInfo(
                (nbytes,), "uint8", 0, "workspace", f"{lib} workspace ({key[1]} thread)", self.phase, self.module, self.in_attention))
            self._note_peak()

    def _track(self, t: torch.Tensor, op: str) -> None:
        if t.device.type not in self.device_types:
            return
        st = t.untyped_storage()
        if st in self._seen:
            return
        self._seen.add(st)
        nbytes = st.nbytes()
        info = TensorInfo(tuple(t.shape), str(t.dtype).replace("torch.", ""), 0, op, self.label, self.phase, self.module,
                          self.in_attention)
        key = self._hold(self.allocator.malloc(nbytes), info)
        self.key_of[st] = key
        self._first_key[st] = key
        weakref.finalize(st, self._release_storage, key)
        self._note_peak()

    def _release_storage(self, first: int) -> None:
        """A storage died: its allocation now (the first, unless it was resized) is released."""
        key = self._resized.pop(first, first)
        if key is not None:
            self._release(key)

    def _hold(self, handle, info: TensorInfo) -> int:
        info.bytes = block_bytes(handle)
        key = self._next
        self._next += 1
        self._live[key] = _Alloc(handle, info)
        self._events.append((key, info))
        return key

    def _release(self, key: int) -> None:
        alloc = self._live.pop(key, None)
        if alloc is not None:
            self.allocator.free(alloc.handle)
            self._events.append((key, None))

    def _note_peak(self) -> None:
        if self.allocator.peak > self._peak_seen:
            self._peak_seen = self.allocator.peak
            if self.timeline is not None:
                self.peak_index = len(self.timeline)  # the op being dispatched now
            self._peak_event, self._at_peak = len(self._events), None

    def _live_at_peak(self) -> dict[int, TensorInfo]:
        if self._at_peak is None:
            live: dict[int, TensorInfo] = {}
            for key, info in self._events[:self._peak_event or 0]:
                if info is None:
                    live.pop(key, None)
                else:
                    live[key] = info
            self._at_peak = live
        return self._at_peak

    @property
    def peak_live(self) -> list[tuple[int, TensorInfo]]:
        """Every allocation alive at the peak (with `keep_peak_live`)."""
        return list(self._live_at_peak().items()) if self.keep_peak_live and self._peak_event is not None else []

    @property
    def peak_tensors(self) -> list[TensorInfo]:
        """The twelve largest tensors alive at the peak, the baseline left out."""
        live = [i for i in self._live_at_peak().values() if i.op != "baseline" and i.phase != "baseline" and i.bytes]
        live.sort(key=lambda i: -i.bytes)
        return [TensorInfo(i.shape, i.dtype, i.bytes, i.op, i.note, i.phase, i.module, i.attention) for i in live[:12]]