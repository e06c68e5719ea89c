"""Meta kernels run once per input layout: a step's repeated ops take their output's layout from
the first run.

On meta tensors an op's output depends only on the op, its non-tensor arguments and each input
tensor's size, stride, offset and dtype (and the default dtype); most of torch's meta kernels are
Python (`torch._meta_registrations`, `torch._refs`, decompositions) and cost far more than the
op's bookkeeping. A chunked layer's sixteen chunks, or a batch search's steps, repeat the same
ops on the same layouts (the time model's description of an op is kept by the same key:
timing.py). So `call` keeps, per op and input layout, the layout of each output
(size, stride, dtype) where every output is a new, dense, unshared storage of its own (no view, no
alias of an input, offset 0, the storage `empty_strided` makes), and on a repeat makes fresh meta
tensors of those layouts with `empty_strided` instead of running the kernel. Anything else (a
mutating op, a view, an argument it cannot key, a real tensor) runs the kernel as always.
tests/test_meta_memo.py compares steps with and without it, op by op.
"""

from __future__ import annotations

import contextlib

import torch

from sa_profiler.torch_compat import is_view

LIMIT = 1 << 16  # layouts kept; the memo starts over beyond
_memo: dict = {}
_enabled = True
_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)
_empty_strided = torch.ops.aten.empty_strided.default
_STRIDED = torch.strided


class _Uncacheable(Exception):
    pass


@contextlib.contextmanager
def disabled():
    """Within: every op runs its kernel (for comparisons)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _key(a):
    if isinstance(a, torch.Tensor):
        if not a.is_meta or a.layout is not _STRIDED or a.is_conj() or a.is_neg():
            raise _Uncacheable
        return (a.shape, a.stride(), a.storage_offset(), a.dtype)
    t = type(a)
    if t is int:  # the commonest argument keys as itself; other scalars with their type
        return a
    if t is tuple or t is list:
        return (t, *[_key(x) for x in a])
    if t in _SCALARS:
        return (t, a)
    raise _Uncacheable


def inputs_key(args, kwargs):
    """The key of an op's inputs (with the default dtype), or None where one cannot be keyed."""
    try:
        return (torch.get_default_dtype(), _key(args), _key(tuple(sorted(kwargs.items()))) if kwargs else ())
    except (_Uncacheable, TypeError):
        return None


def mutates(func) -> bool:
    """Whether the op may write to an argument (its schema says so; True where it cannot be read)."""
    schema = getattr(func, "_schema", None)
    return getattr(schema, "is_mutable", True)


def enabled() -> bool:
    return _enabled


def layout_key(obj):
    """A hashable key of `obj`'s meta tensors' layouts and its other values, or None."""
    try:
        return _key(obj)
    except (_Uncacheable, TypeError):
        return None


def _layouts(out, args) -> tuple | None:
    """The outputs' layouts, or None where one is not a fresh dense storage of its own."""
    single = isinstance(out, torch.Tensor)
    outs = (out,) if single else out
    if not isinstance(outs, (tuple, list)):
        return None
    taken = {id(t.untyped_storage()) for t in tensors_in(args)}
    specs = []
    for t in outs:
        if t is None:
            specs.append(None)
            continue
        if (not isinstance(t, torch.Tensor) or type(t) is not torch.Tensor or t.device.type != "meta"
                or t.layout != torch.strided or is_view(t) or t.storage_offset() != 0 or t.is_conj() or t.is_neg()
                or t.requires_grad):
            return None
        st = t.untyped_storage()
        if id(st) in taken:
            return None
        taken.add(id(st))
        shape, stride = tuple(t.shape), t.stride()
        dense = 0 if t.numel() == 0 else (1 + sum((n - 1) * s for n, s in zip(shape, stride))) * t.element_size()
        if st.nbytes() != dense:
            return None
        specs.append((shape, stride, t.dtype))
    return ("tensor" if single else type(outs), tuple(specs))


def tensors_in(obj) -> list[torch.Tensor]:
    """Tensors in an aten op's arguments or result (tensors, and lists/tuples/dicts of them)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors_in(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in tensors_in(item)]
    return []


def _make(layouts):
    kind, specs = layouts
    outs = [None if s is None else _empty_strided(s[0], s[1], dtype=s[2], device="meta") for s in specs]
    return outs[0] if kind == "tensor" else kind(outs)


def call(func, args, kwargs, key=None):
    """`func(*args, **kwargs)`, or fresh tensors of the layouts it gave before for these inputs
    (`key`: their `inputs_key`, made here if not given)."""
    if not _enabled or mutates(func):
        return func(*args, **kwargs)
    if key is None:
        key = inputs_key(args, kwargs)
        if key is None:
            return func(*args, **kwargs)
    key = (func, key)
    hit = _memo.get(key)
    if hit is not None:
        return _make(hit)
    out = func(*args, **kwargs)
    layouts = _layouts(out, args)
    if layouts is not None:
        if len(_memo) >= LIMIT:
            _memo.clear()
        _memo[key] = layouts
    return out
