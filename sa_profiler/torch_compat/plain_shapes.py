"""Keeps sympy (about a quarter of `import torch` again) out of a step whose shapes are plain ints.

torch's meta kernels and references test shapes through helpers of
`torch.fx.experimental.symbolic_shapes` (`torch._check` -> `expect_true`, `sym_eq`,
`guard_or_false`, ...), imported on first use, and type-promote with
`isinstance(x, sympy.Basic)` (`torch._prims_common.elementwise_dtypes` imports sympy for that,
and `_is_non_overlapping_and_dense_or_false` imports `torch.utils._sympy.functions.Max` that it
does not use); all three import sympy. For plain Python ints and bools each helper is one line (`expect_true(True)`
is `True`), the simulator never makes a symbolic shape, and no `sympy.Basic` can exist before
sympy is imported. So while `plain_shapes()` is entered, for each of these modules that is not
imported yet a stand-in sits at its name in `sys.modules`: the symbolic-shapes one answers the
helpers in `PLAIN` (their plain-value branch, as torch writes it); the sympy one has a `Basic`
that nothing is an instance of; the sympy-functions one a `Max` that calls the real one. For any other name, or a symbolic argument, the stand-ins step
aside (both), the real modules are imported, and the call goes to them; a stand-in kept by
someone forwards to its real module from then on. They leave on exit, when nothing else is
inside (re-entrant). Where both modules are imported already, nothing is done.

tests/test_plain_shapes.py replays every call a headline question makes against torch's own
functions, and checks the scope and the step aside.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import operator
import sys
import threading
import types

import torch

SYMBOLIC = "torch.fx.experimental.symbolic_shapes"
SYMPY = "sympy"
SYMPY_FUNCTIONS = "torch.utils._sympy.functions"
_lock = threading.RLock()
_depth = 0
_installed: dict[str, "_StandIn"] = {}  # name -> stand-in, while in the scope


def _is_plain_bool(x) -> bool:
    return type(x) is bool


def _is_plain_int(x) -> bool:
    return type(x) is int or type(x) is bool


def _symbolic():
    return real(SYMBOLIC)


def expect_true(a, skip: int = 0):
    return a if _is_plain_bool(a) else _symbolic().expect_true(a, skip + 1)


def guard_or_false(a):
    return a if _is_plain_bool(a) else _symbolic().guard_or_false(a)


def guard_or_true(a):
    return a if _is_plain_bool(a) else _symbolic().guard_or_true(a)


def guard_size_oblivious(expr):
    return expr if _is_plain_bool(expr) else _symbolic().guard_size_oblivious(expr)


def statically_known_true(x):
    return x if _is_plain_bool(x) else _symbolic().statically_known_true(x)


def guarding_hint_or_throw(a):
    return a if _is_plain_int(a) else _symbolic().guarding_hint_or_throw(a)


def has_guarding_hint(a):
    if isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return _symbolic().has_guarding_hint(a)
    return True


def is_nested_int(s):
    return isinstance(s, torch.SymInt) and s.node.is_nested_int()


def sym_eq(x, y):
    if isinstance(x, (tuple, list)) and isinstance(y, (list, tuple)):
        if len(x) != len(y):
            return False
        return functools.reduce(operator.and_, map(sym_eq, x, y), True)
    if _is_plain_int(x) and _is_plain_int(y):
        return x == y
    return _symbolic().sym_eq(x, y)


def sym_and(x, *others):
    for y in others:
        x = operator.and_(x, y)
    return x


def sym_or(x, *others):
    for y in others:
        x = operator.or_(x, y)
    return x


def free_unbacked_symbols(x):
    """No symbols in a strided tensor of plain sizes, strides and offset, or in plain values."""
    if isinstance(x, torch.Tensor) and x.layout == torch.strided:
        plain = all(map(_is_plain_int, (*x.shape, *x.stride(), x.storage_offset())))
    else:
        plain = x is None or type(x) in (int, float, bool, str)
    if plain:
        from torch.utils._ordered_set import OrderedSet

        return OrderedSet()
    return _symbolic().free_unbacked_symbols(x)


class Basic:
    """sympy's base class while sympy is not imported: nothing is an instance of it."""


class Max:
    """torch's sympy `Max`, imported when first called."""

    def __new__(cls, *args, **kwargs):
        return real(SYMPY_FUNCTIONS).Max(*args, **kwargs)


PLAIN = {
    SYMBOLIC: {f.__name__: f for f in (expect_true, guard_or_false, guard_or_true, guard_size_oblivious,
                                       statically_known_true, guarding_hint_or_throw, has_guarding_hint,
                                       is_nested_int, sym_eq, sym_and, sym_or, free_unbacked_symbols)},
    SYMPY: {"Basic": Basic},
    SYMPY_FUNCTIONS: {"Max": Max},
}


class _StandIn(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name, f"stands in for {name} while shapes are plain (sa_profiler.torch_compat.plain_shapes)")
        if name == SYMBOLIC:  # right for any argument (they hand symbolic ones over): no lookup cost
            vars(self).update(PLAIN[name])

    def __getattr__(self, attr):
        name = self.__name__
        current = sys.modules.get(name)
        if current is not None and current is not self:  # the real module is imported: its own
            return getattr(current, attr)
        if attr in PLAIN[name]:
            return PLAIN[name][attr]
        if attr == "__path__" and name != SYMPY:  # asked by every `from ... import`: not a package
            raise AttributeError(attr)
        return getattr(real(name), attr)


def _remove(name: str, stand_in) -> None:
    if sys.modules.get(name) is stand_in:
        del sys.modules[name]
    parent, _, child = name.rpartition(".")
    if parent and getattr(sys.modules.get(parent), child, None) is stand_in:
        delattr(sys.modules[parent], child)


def real(name: str):
    """The real module `name` (imported now if need be; every stand-in steps aside first, so
    that what it imports is real too)."""
    with _lock:
        for other, stand_in in _installed.items():
            _remove(other, stand_in)
    return importlib.import_module(name)


@contextlib.contextmanager
def plain_shapes():
    """Within: torch's shape checks and type promotion on plain values import no sympy."""
    global _depth
    with _lock:
        if _depth == 0:
            for name in (SYMPY, SYMBOLIC, SYMPY_FUNCTIONS):
                if name not in sys.modules:
                    stand_in = _installed[name] = _StandIn(name)
                    sys.modules[name] = stand_in
                    parent, _, child = name.rpartition(".")
                    if parent:
                        setattr(importlib.import_module(parent), child, stand_in)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, stand_in in _installed.items():
                    _remove(name, stand_in)
                _installed.clear()
