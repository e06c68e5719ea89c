"""Keeps `torch._dynamo` (about a second to import) out of a step that nothing compiles.

torch wraps some functions in `torch._disable_dynamo` (torch/_compile.py): the wrapper imports
`torch._dynamo` on its first call and caches `torch._dynamo.disable(fn)` as
`fn.__dynamo_disable`. A step reaches such functions: a dispatch mode's `__torch_dispatch__`
(TorchDispatchMode wraps it), the Python meta kernels of `torch._refs` (add, sub, cat, ...) and
`torch.utils.checkpoint`. Outside torch.compile that disabled function is `fn` itself: its
wrapper sets the eval-frame callback to None, which is what it already is. So while
`torch._dynamo` is not imported (then nothing can be compiling), `outside_compile()` caches
`fn` itself for those functions, and takes exactly those entries back on exit: a torch.compile
later in the process gets torch's own wrapper. On a torch whose wrapper differs, it does nothing.
The same scope keeps sympy out of the step's shape checks (`plain_shapes`).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading

from sa_profiler.torch_compat.plain_shapes import plain_shapes

# modules whose functions a step may reach through torch's lazy wrapper
MODULES = ("torch._refs", "torch._refs.nn.functional", "torch._refs.special", "torch._refs.linalg",
           "torch._refs.fft", "torch.utils.checkpoint")
ATTRIBUTE = "__dynamo_disable"

_lock = threading.Lock()
_depth = 0
_seeded: list = []  # the functions this module cached itself for, while _depth > 0
_known: list | None = None


def wrapped_fn(obj):
    """The function torch's `_disable_dynamo` wrapper `obj` calls, or None if `obj` is not one."""
    code = getattr(obj, "__code__", None)
    if code is None or code.co_name != "inner" or ATTRIBUTE not in code.co_consts:
        return None
    if not code.co_filename.replace("\\", "/").endswith("torch/_compile.py") or "fn" not in code.co_freevars:
        return None
    try:
        return obj.__closure__[code.co_freevars.index("fn")].cell_contents
    except (TypeError, IndexError, ValueError):
        return None


def wrapped_fns(obj) -> list:
    """The wrapped functions in `obj`'s `__wrapped__` chain (a reference nests several wrappers)."""
    found, seen = [], set()
    while obj is not None and id(obj) not in seen and len(seen) < 16:
        seen.add(id(obj))
        fn = wrapped_fn(obj)
        if fn is not None:
            found.append(fn)
        obj = getattr(obj, "__wrapped__", None)
    return found


def _module_fns() -> list:
    global _known
    if _known is None:
        fns = []
        for name in MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for value in list(vars(module).values()):
                if callable(value):
                    fns.extend(wrapped_fns(value))
        _known = list({id(f): f for f in fns}.values())
    return _known


def _seed(fns) -> None:
    for fn in fns:
        if getattr(fn, ATTRIBUTE, None) is None:
            try:
                setattr(fn, ATTRIBUTE, fn)
            except (AttributeError, TypeError):
                continue
            _seeded.append(fn)


@contextlib.contextmanager
def outside_compile(*extra):
    """Within: the functions of MODULES and `extra` (wrapper objects, e.g. a dispatch mode's
    `__torch_dispatch__`) run without importing torch._dynamo. Re-entrant; a no-op once
    torch._dynamo is imported."""
    global _depth
    with _lock:
        active = _depth > 0 or "torch._dynamo" not in sys.modules
        if active:
            if _depth == 0:
                _seed(_module_fns())
            _seed(fn for obj in extra for fn in wrapped_fns(obj))
            _depth += 1
    try:
        with plain_shapes():  # and sympy out of its shape checks
            yield
    finally:
        if active:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    for fn in _seeded:
                        if getattr(fn, ATTRIBUTE, None) is fn:
                            delattr(fn, ATTRIBUTE)
                    _seeded.clear()
