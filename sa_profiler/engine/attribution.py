"""Attribution: which module made each allocation, which modules are attention layers, and
the peak by category and by module.

`Attribution` names the top-level module running forward (the children of ModuleLists, which
are never called themselves, count as top level) and marks the attention layers forward and
backward: SAGAN layers, nn.MultiheadAttention, every module that calls
scaled_dot_product_attention itself (found by the routing when it does) and every module that
computes attention by hand (`attention/explicit.py`). Backward: hooks on the autograd nodes an
attention layer created (nothing is wrapped or kept).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from sa_profiler import torch_compat
from sa_profiler.attention import is_sagan_attention
from sa_profiler.attention.explicit import Finder
from sa_profiler.attention.routing import active_modes
from sa_profiler.engine.tracker import MemoryTracker, tensors_in

CATEGORIES = ("parameters", "input", "gradients", "optimizer state", "activations", "temporary",
              "library workspaces")
# what a data-parallel wrapper allocates (models/parallel.py labels it): in a breakdown only where
# the step had one
PARALLEL_CATEGORIES = ("DDP buckets", "unsharded parameters", "communication buffers")


def is_attention_module(module: nn.Module) -> bool:
    """Attention known by structure before it runs: SAGAN layers, nn.MultiheadAttention (its
    explicit-weights path computes attention without SDPA). Modules that call SDPA are found
    when they do."""
    return is_sagan_attention(module) or isinstance(module, nn.MultiheadAttention)


class Attribution:
    """See the module notes; once found, the whole module counts as attention."""

    def __init__(self, model: nn.Module, tracker: MemoryTracker, routing=None):
        self.tracker = tracker
        self.routing = routing
        self.reentered: list[nn.Module] = []
        self.stack: list[nn.Module] = []
        self.backward_depth = 0
        self.hooked: dict[int, object] = {}  # autograd nodes hooked (held: ids stay theirs)
        self.names = {id(m): n for n, m in model.named_modules()}
        self.attention = {id(m) for m in model.modules() if is_attention_module(m)}
        self.tops = self._tops(model)
        self.handles = []
        for name, module in model.named_modules():
            if module is model:
                continue
            self.handles += [module.register_forward_pre_hook(self._push), module.register_forward_hook(self._pop)]
        self.explicit: dict[str, tuple] = {}  # module -> its attention probabilities' shape (written out by hand)
        if routing is not None:
            routing.where = self.innermost
            routing.on_call = self._found_attention
            routing.explicit = Finder(self._found_explicit)

    @staticmethod
    def _tops(model) -> dict[int, str]:
        tops = {}
        for name, child in model.named_children():
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                for sub, m in child.named_children():
                    tops[id(m)] = f"{name}.{sub}"
            else:
                tops[id(child)] = name
        return tops

    def innermost(self) -> str:
        return self.names.get(id(self.stack[-1]), "") if self.stack else ""

    def _found_explicit(self, shape) -> None:
        if self.stack and self.tracker.phase == "forward":
            self.explicit.setdefault(self.innermost() or TOP_ATTENTION, shape)
            self._found_attention(None, None)

    def _found_attention(self, call, out) -> None:
        if self.stack and id(self.stack[-1]) not in self.attention:
            self.attention.add(id(self.stack[-1]))
            self._update()

    def _update(self) -> None:
        top = next((self.tops[id(m)] for m in self.stack if id(m) in self.tops), "")
        attention = self.backward_depth > 0 or any(id(m) in self.attention for m in self.stack)
        self.tracker.module, self.tracker.in_attention = top, attention

    def _push(self, module, args):
        self.stack.append(module)
        self._update()
        if self.routing is not None and self.tracker.phase == "backward":
            # forward code re-run in the backward (reentrant checkpoint): autograd cleared the
            # torch-function modes, so the routing (and AMP) is re-entered around the module
            modes = active_modes()
            if modes is not None and self.routing not in modes:
                self.routing.__enter__()
                self.reentered.append(module)

    def _pop(self, module, args, out):
        if self.reentered and self.reentered[-1] is module:
            self.reentered.pop()
            self.routing.__exit__(None, None, None)
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        self._update()
        if id(module) in self.attention and torch.is_grad_enabled():
            self._mark_backward(args, out)

    def _enter_backward(self, *_):
        self.backward_depth += 1
        self._update()

    def _leave_backward(self, *_):
        self.backward_depth = max(0, self.backward_depth - 1)
        self._update()

    def _mark_backward(self, args, out) -> None:
        # nodes held by id -> node while walking, each read once: before torch 2.9 `t.grad_fn`
        # makes a new Python object per read, which dies with the read, and a later node's
        # object can take its id
        stop = {id(n): n for n in (t.grad_fn for t in tensors_in(args)) if n is not None}
        # nodes made before the layer ran (sequence numbers grow as nodes are made) are not its
        before = max((torch_compat.sequence_nr(n) for n in stop.values()), default=-1)
        frontier = [t.grad_fn for t in tensors_in(out) if t.grad_fn is not None]
        seen = {}
        # forward code re-run inside a backward (a checkpoint's recompute): its nodes are hooked
        # but not held past the walk, since a node holds its saved tensors and a non-reentrant
        # recompute's graph is never run to release them (held, they would outlive the backward)
        hold = torch_compat.graph_task_id() in (None, -1)
        while frontier:
            node = frontier.pop()
            if node is None or id(node) in seen or id(node) in stop or torch_compat.sequence_nr(node) <= before:
                continue
            seen[id(node)] = node
            frontier += [n for n, _ in node.next_functions]
            if id(node) in self.hooked:  # a parameter's AccumulateGrad node outlives the step
                continue
            if hold:
                self.hooked[id(node)] = node
            self.handles += [node.register_prehook(lambda grad_outputs: self._enter_backward()),
                             node.register_hook(lambda grad_inputs, grad_outputs: self._leave_backward())]

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.tracker.module, self.tracker.in_attention = "", False

    @property
    def layers(self) -> int:
        return len(self.attention)


OUTSIDE = "(the model's own code, outside its modules)"  # activations made by the top-level forward itself
TOP_ATTENTION = "(attention called at the top level)"


def calls_by_module(calls) -> list[dict]:
    """The SDPA calls grouped by module, backend, dtype, shapes, mask and causality."""
    groups: dict[tuple, int] = Counter(
        (c.module, c.backend, c.dtype, c.query, c.key, c.value, c.mask, c.is_causal) for c in calls)
    return [{"module": m or "(top level)", "backend": b, "calls": n, "dtype": dt, "query": list(q), "key": list(k),
             "value": list(v), "mask": list(mask) if mask is not None else None, "is_causal": causal}
            for (m, b, dt, q, k, v, mask, causal), n in groups.items()]


def breakdown(tracker: MemoryTracker, grads: set, states: set) -> tuple[dict, dict, int]:
    """The allocations alive at the peak by category, the activations by top-level module (every
    activation byte under one name: the table adds up to the category), and the bytes the
    attention layers made (forward or backward)."""
    categories = dict.fromkeys(CATEGORIES, 0)
    modules: dict[str, int] = {}
    attention = 0
    for key, info in tracker.peak_live:
        if info.op == "workspace":
            cat = "library workspaces"
        elif key in grads:
            cat = "gradients"
        elif key in states:
            cat = "optimizer state"
        elif info.note in PARALLEL_CATEGORIES:  # before the baseline: DDP builds its buckets there
            cat = info.note
            categories.setdefault(cat, 0)
        elif info.phase == "baseline":
            cat = info.op if info.op in ("input", "optimizer state") else "parameters"
        elif info.phase == "forward":
            cat = "activations"
        else:
            cat = "temporary"
        categories[cat] += info.bytes
        top, in_attention = (info.module, info.attention) if info.op != "workspace" else ("", False)
        if cat == "activations":
            name = top or (TOP_ATTENTION if in_attention else OUTSIDE)
            modules[name] = modules.get(name, 0) + info.bytes
        if in_attention:
            attention += info.bytes
    return categories, modules, attention
