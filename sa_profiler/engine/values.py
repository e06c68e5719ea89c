"""Values in a simulation: what a model computes from its inputs alone is computed for real.

A simulated step runs on meta tensors, which have shapes but no values. Models read values,
though: transformers' mask helpers ask `padding_mask.all()` to decide whether SDPA gets a mask
at all (which decides the backend), position ids come from `arange`, a causal mask from
comparisons. `InputValues` is a dispatch mode inside the memory tracker that keeps, beside each
meta tensor computed only from inputs that have values (`inputs.Input.has_values`) and from
constants, the same tensor computed on the CPU. The tracker still costs the meta tensor on the
target; the CPU copy only answers `.item()`, `bool()`, `.all()` and ops whose output shape
depends on values (`nonzero`). A tensor touched by a parameter or an activation has no values:
a branch on it is refused in one line that names the op and the module, with the way out
(`--engine measure` runs the step for real).
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from sa_profiler.torch_compat import op_schema
from sa_profiler.torch_compat.dispatch import TorchDispatchMode, disable_current_modes, tree_flatten, tree_map

aten = torch.ops.aten

# the largest tensor (elements) computed for real: masks and ids are far smaller; a tensor above
# it has no values (a branch on it is refused, naming the reason)
MAX_ELEMENTS = 1 << 24
READS = {aten._local_scalar_dense.default}  # .item(), bool(), int(): a value leaves the tensor world


class ValueBranch(RuntimeError):
    """The model reads a value the simulation does not have (one line for the user)."""


class InputValues(TorchDispatchMode):
    """Keep CPU values beside the meta tensors computed from inputs with values. `where(t)`
    names the op and the module that made a meta tensor (for the one-line refusal)."""

    def __init__(self, where=None):
        super().__init__()
        self.values = WeakTensorKeyDictionary()
        self.too_large = WeakTensorKeyDictionary()  # computed from inputs, but above MAX_ELEMENTS
        self.where = where or (lambda t: "")
        self.computed = 0  # ops computed for real

    def add(self, meta: torch.Tensor, value: torch.Tensor) -> None:
        self.values[meta] = value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        metas = _metas(args, kwargs)
        values = self.values
        known = all(t in values for t in metas)
        if func in READS:
            return self._read(func, args, kwargs, metas)
        try:
            out = func(*args, **kwargs)
        except (RuntimeError, NotImplementedError) as err:
            if not (metas and known and "meta" in str(err).lower()):
                raise
            return self._data_dependent(func, args, kwargs)
        if not known:
            for t in metas:  # written by an op on values it does not have: its values are gone
                if t in values and _writes(func, args, kwargs, t):
                    del values[t]
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_meta]
        if not outs:  # a CPU op, or nothing made
            return out
        if sum(t.numel() for t in outs) > MAX_ELEMENTS:
            for t in outs:
                self.too_large[t] = True
            return out
        real = self._run(func, args, kwargs)
        for m, r in zip(tree_flatten(out)[0], tree_flatten(real)[0]):
            if isinstance(m, torch.Tensor) and m.is_meta and isinstance(r, torch.Tensor):
                values[m] = r
        return out

    def _run(self, func, args, kwargs):
        """`func` on the CPU values, unseen by the modes outside (the tracker costs the meta op)."""
        self.computed += 1
        with disable_current_modes():
            return func(*self._real(args), **self._real(kwargs))

    def _real(self, tree):
        def swap(x):
            if isinstance(x, torch.Tensor) and x.is_meta:
                return self.values[x]
            if isinstance(x, torch.device) and x.type == "meta":
                return torch.device("cpu")
            return x
        return tree_map(swap, tree)

    def _read(self, func, args, kwargs, metas):
        if not metas:
            return func(*args, **kwargs)
        t = metas[0]
        if t in self.values:
            return self._run(func, args, kwargs)
        raise ValueBranch(self._why(t, "reads a value of"))

    def _data_dependent(self, func, args, kwargs):
        """An op whose output shape depends on values (`nonzero`, `masked_select`): run for real,
        then a meta output of the real shape, allocated under the tracker."""
        real = self._run(func, args, kwargs)

        def meta_of(r):
            if not isinstance(r, torch.Tensor):
                return r
            m = torch.empty_strided(r.shape, r.stride(), dtype=r.dtype, device="meta")
            self.values[m] = r
            return m
        return tree_map(meta_of, real)

    def _why(self, t: torch.Tensor, verb: str) -> str:
        made = self.where(t)
        what = ("a tensor computed from the inputs but too large to compute here "
                f"({t.numel():,} elements)") if t in self.too_large else "a tensor computed from parameters or activations"
        return (f"the model {verb} {what}{(' (' + made + ')') if made else ''}; a simulation has no values there: "
                f"run the step for real with --engine measure --gpu cpu")


def _metas(args, kwargs) -> list:
    """The meta tensors among an op's arguments (and in its list arguments): a plain loop, as
    this runs for every op of a forward."""
    found = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            if a.is_meta:
                found.append(a)
        elif isinstance(a, (list, tuple)):
            found += [x for x in a if isinstance(x, torch.Tensor) and x.is_meta]
    return found


def _writes(func, args, kwargs, t) -> bool:
    """Whether `func` writes `t` (an in-place or out= argument)."""
    schema = op_schema(func)
    for i, arg in enumerate(schema.arguments):
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        if value is t and arg.alias_info is not None and arg.alias_info.is_write:
            return True
    return False

