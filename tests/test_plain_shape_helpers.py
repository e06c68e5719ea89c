"""torch_compat/plain_shapes.py in-process: each plain-value helper against torch's own, the hand-over of
symbolic arguments, and the stand-ins' life in sys.modules."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from sa_profiler.torch_compat import plain_shapes as ps


class _Symbolic(types.SimpleNamespace):
    """A symbolic-shapes module that records what is handed to it."""


@pytest.fixture
def handed(monkeypatch):
    calls = []

    def rec(name):
        return lambda *a, **k: calls.append((name, a, k)) or ("handed", name)

    fake = _Symbolic(**{n: rec(n) for n in (
        "expect_true", "guard_or_false", "guard_or_true", "guard_size_oblivious", "statically_known_true",
        "guarding_hint_or_throw", "has_guarding_hint", "sym_eq", "free_unbacked_symbols", "Max")})
    monkeypatch.setattr(ps, "real", lambda name: fake)
    return calls


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_plain_values_answer_as_torch_does():
    from torch.fx.experimental import symbolic_shapes as real

    for b in (True, False):
        for f in ("expect_true", "guard_or_false", "guard_or_true", "guard_size_oblivious", "statically_known_true"):
            assert getattr(ps, f)(b) is getattr(real, f)(b) is b, f
    assert ps.guarding_hint_or_throw(7) == real.guarding_hint_or_throw(7) == 7
    assert ps.guarding_hint_or_throw(True) is True
    assert ps.has_guarding_hint(3) is True and ps.has_guarding_hint(2.5) is True
    assert ps.is_nested_int(3) is False and ps.is_nested_int(True) is False
    for x, y in [((1, 2), (1, 2)), ((1, 2), [1, 2]), ((1, 2), (1, 3)), ((1,), (1, 1)), ((), ()), (3, 3), (3, 4),
                 ([2, 3], (2, 3)), ((0, 1), (0, 0))]:
        assert ps.sym_eq(x, y) == real.sym_eq(x, y) == (tuple(x) == tuple(y) if isinstance(x, (list, tuple)) else x == y)
    for args in [(True,), (True, True), (True, False), (False, True, True), (True, True, True)]:
        assert ps.sym_and(*args) == real.sym_and(*args) == all(args)
        assert ps.sym_or(*args) == real.sym_or(*args) == any(args)
    assert ps.sym_or(False, False) is False and ps.sym_and(True, True) is True
    t = torch.empty(2, 3, device="meta")[:, 1:]
    for x in (t, None, 3, 2.5, True, "s"):
        got = ps.free_unbacked_symbols(x)
        assert type(got).__name__ == "OrderedSet" and len(got) == 0
    assert ps._is_plain_bool(True) and not ps._is_plain_bool(1) and not ps._is_plain_bool(None)
    assert ps._is_plain_int(1) and ps._is_plain_int(False) and not ps._is_plain_int(1.0) and not ps._is_plain_int("1")


def test_symbolic_arguments_are_handed_over(handed):
    x = object()
    assert ps.expect_true(x) == ("handed", "expect_true") and handed[-1] == ("expect_true", (x, 1), {})
    assert ps.expect_true(x, 2) and handed[-1] == ("expect_true", (x, 3), {})
    for f in ("guard_or_false", "guard_or_true", "guard_size_oblivious", "statically_known_true"):
        assert getattr(ps, f)(1) == ("handed", f) and handed[-1] == (f, (1,), {})
    assert ps.guarding_hint_or_throw(2.5) == ("handed", "guarding_hint_or_throw")
    assert ps.sym_eq(1, 2.0) == ("handed", "sym_eq") and handed[-1] == ("sym_eq", (1, 2.0), {})
    assert ps.sym_eq(1.0, 1) == ("handed", "sym_eq")
    assert ps.free_unbacked_symbols([1]) == ("handed", "free_unbacked_symbols")
    assert ps.free_unbacked_symbols(torch.empty(2, layout=torch.sparse_coo)) == ("handed", "free_unbacked_symbols")
    assert ps.Max(1, 2) == ("handed", "Max") and handed[-1] == ("Max", (1, 2), {})
    assert ps._symbolic() is ps.real(ps.SYMBOLIC)
    assert not isinstance(1, ps.Basic) and not isinstance(ps.Basic, type(None))


def test_sym_eq_of_sequences_is_elementwise(handed):
    assert ps.sym_eq((1, 2), (1, 2)) is True
    assert ps.sym_eq((1, 2), (2, 1)) is False
    assert ps.sym_eq((1, 2), (1, 2, 3)) is False and handed == []


def test_stand_in_attributes(monkeypatch):
    stand = ps._StandIn(ps.SYMBOLIC)
    assert "stands in for" in stand.__doc__ and stand.__name__ == ps.SYMBOLIC
    for name, f in ps.PLAIN[ps.SYMBOLIC].items():
        assert vars(stand)[name] is f
    sympy_stand = ps._StandIn(ps.SYMPY)
    assert "Basic" not in vars(sympy_stand)
    monkeypatch.setitem(sys.modules, ps.SYMPY, sympy_stand)
    assert sympy_stand.Basic is ps.Basic
    fake = types.SimpleNamespace(other="real one", __path__=["p"])
    monkeypatch.setattr(ps, "real", lambda name: fake)
    assert sympy_stand.other == "real one"
    assert sympy_stand.__path__ == ["p"]  # sympy is a package: asked of the real one
    funcs = ps._StandIn(ps.SYMPY_FUNCTIONS)
    monkeypatch.setitem(sys.modules, ps.SYMPY_FUNCTIONS, funcs)
    with pytest.raises(AttributeError):
        funcs.__path__
    assert funcs.Max is ps.Max
    # once the real module is in sys.modules, the stand-in answers from it
    monkeypatch.setitem(sys.modules, ps.SYMPY, types.SimpleNamespace(Basic="the real Basic"))
    assert sympy_stand.Basic == "the real Basic"


def test_remove_takes_the_stand_in_out_of_sys_modules_and_its_parent(monkeypatch):
    parent = types.ModuleType("pkg_for_test")
    stand = ps._StandIn(ps.SYMPY)
    monkeypatch.setitem(sys.modules, "pkg_for_test", parent)
    monkeypatch.setitem(sys.modules, "pkg_for_test.child", stand)
    parent.child = stand
    ps._remove("pkg_for_test.child", stand)
    assert "pkg_for_test.child" not in sys.modules and not hasattr(parent, "child")
    other = types.ModuleType("x")
    sys.modules["pkg_for_test.child"] = other
    parent.child = other
    ps._remove("pkg_for_test.child", stand)  # not the stand-in: left alone
    assert sys.modules["pkg_for_test.child"] is other and parent.child is other
    del sys.modules["pkg_for_test.child"]


def test_scope_installs_stand_ins_for_unimported_modules_and_removes_them(monkeypatch):
    import torch.utils._sympy as sympy_pkg  # noqa: F401  (the parent of the functions module)
    from torch.fx import experimental

    names = (ps.SYMPY, ps.SYMBOLIC, ps.SYMPY_FUNCTIONS)
    saved = {n: sys.modules.get(n) for n in names}
    saved_attrs = {"symbolic_shapes": getattr(experimental, "symbolic_shapes", None),
                   "functions": getattr(sys.modules["torch.utils._sympy"], "functions", None)}
    try:
        for n in names:
            sys.modules.pop(n, None)
        with ps.plain_shapes():
            for n in names:
                assert isinstance(sys.modules[n], ps._StandIn) and ps._installed[n] is sys.modules[n]
            assert experimental.symbolic_shapes is sys.modules[ps.SYMBOLIC]
            with ps.plain_shapes():  # re-entrant: the inner exit keeps them
                pass
            assert ps._depth == 1 and isinstance(sys.modules[ps.SYMPY], ps._StandIn)
        assert ps._depth == 0 and ps._installed == {}
        for n in names:
            assert n not in sys.modules
        assert getattr(experimental, "symbolic_shapes", None) is None or not isinstance(
            experimental.symbolic_shapes, ps._StandIn)
    finally:
        for n, m in saved.items():
            if m is not None:
                sys.modules[n] = m
        if saved_attrs["symbolic_shapes"] is not None:
            experimental.symbolic_shapes = saved_attrs["symbolic_shapes"]
        if saved_attrs["functions"] is not None:
            sys.modules["torch.utils._sympy"].functions = saved_attrs["functions"]


def test_scope_does_nothing_where_the_modules_are_imported():
    import sympy  # noqa: F401
    from torch.fx.experimental import symbolic_shapes  # noqa: F401
    import torch.utils._sympy.functions  # noqa: F401

    before = {n: sys.modules[n] for n in (ps.SYMPY, ps.SYMBOLIC, ps.SYMPY_FUNCTIONS)}
    with ps.plain_shapes():
        assert {n: sys.modules[n] for n in before} == before and ps._installed == {}
    assert ps._depth == 0


def test_real_removes_every_stand_in_first(monkeypatch):
    stand = ps._StandIn(ps.SYMPY)
    monkeypatch.setitem(ps._installed, ps.SYMPY, stand)
    monkeypatch.setitem(sys.modules, ps.SYMPY, stand)
    module = ps.real("json")
    assert module.__name__ == "json" and sys.modules.get(ps.SYMPY) is not stand
