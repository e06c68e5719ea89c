"""torch_compat/lazy.py piece by piece: which objects are torch's `_disable_dynamo` wrappers, which
functions `outside_compile` caches for, and that it takes exactly those entries back (tests
written against surviving mutants).

Whether torch._dynamo is imported is process state, so the checks run in a fresh interpreter
with this process's import path."""

import os
import subprocess
import sys

from sa_profiler.torch_compat import lazy

CHECKS = r'''
import sys, types
import torch, torch._refs
from sa_profiler.torch_compat import lazy

A = lazy.ATTRIBUTE
assert A == "__dynamo_disable"

def fake(name="inner", filename="site-packages/torch/_compile.py", attribute=A, freevar="fn"):
    """A function shaped like torch/_compile.py's wrapper, closing over `fn` (or another name)."""
    src = (f"def outer({freevar}):\n"
           f"    def {name}(*a):\n"
           f"        return ({freevar}, {attribute!r})\n"
           f"    return {name}\n")
    scope = {}
    exec(compile(src, filename, "exec"), scope)
    target = lambda: None
    return scope["outer"](target), target

wrapper, target = fake()
assert lazy.wrapped_fn(wrapper) is target
assert lazy.wrapped_fn(fake(filename="C:\\torch\\_compile.py")[0]) is not None
assert lazy.wrapped_fn(fake(name="other")[0]) is None
assert lazy.wrapped_fn(fake(attribute="something else")[0]) is None
assert lazy.wrapped_fn(fake(filename="site-packages/torch/_compile_py.py")[0]) is None
assert lazy.wrapped_fn(fake(filename="mytorch/_compile.pyx")[0]) is None
assert lazy.wrapped_fn(fake(freevar="f")[0]) is None
assert lazy.wrapped_fn(3) is None and lazy.wrapped_fn(lambda: None) is None

class NoClosure:  # a wrapper's code without its closure
    __code__ = wrapper.__code__
    __closure__ = None
assert lazy.wrapped_fn(NoClosure()) is None
empty = types.FunctionType(wrapper.__code__, {}, "inner", None, (types.CellType(),))
assert lazy.wrapped_fn(empty) is None

# the __wrapped__ chain, in order, stopping at a cycle and after 16 objects
class Holder:
    def __init__(self, inner):
        self.__wrapped__ = inner
w1, f1 = fake()
w2, f2 = fake()
w2.__wrapped__ = Holder(w1)
assert lazy.wrapped_fns(w2) == [f2, f1]
loop = Holder(None)
loop.__wrapped__ = loop
assert lazy.wrapped_fns(loop) == []
chain, fns = None, []
for _ in range(20):
    w, f = fake()
    w.__wrapped__ = chain
    chain = w
    fns.append(f)
assert lazy.wrapped_fns(chain) == fns[::-1][:16]
assert lazy.wrapped_fns(None) == []

# the functions of MODULES: found once, cached, each once
[add] = lazy.wrapped_fns(torch._refs.add)
known = lazy._module_fns()
assert add in known and len({id(f) for f in known}) == len(known)
assert lazy._module_fns() is known
lazy._known, saved = None, lazy.MODULES
lazy.MODULES = ("no_such_module_here", "torch._refs")
assert add in lazy._module_fns() and len(lazy._module_fns()) <= len(known)
lazy._known, lazy.MODULES = known, saved

# seeding: only functions without an entry, only those that take one, remembered
has = lambda: None
setattr(has, A, "someone's")
fresh = lambda: None
lazy._seed([len, has, fresh])  # len takes no attribute: skipped, and the rest still seeded
assert getattr(has, A) == "someone's" and getattr(fresh, A) is fresh and lazy._seeded == [fresh]
delattr(fresh, A)
lazy._seeded.clear()

# the scope: seeds the modules' functions and the extra wrappers, takes back only its own entries
extra, extra_fn = fake()
assert "torch._dynamo" not in sys.modules and lazy._depth == 0
try:
    with lazy.outside_compile(extra):
        assert lazy._depth == 1
        assert getattr(add, A) is add and getattr(extra_fn, A) is extra_fn
        other, other_fn = fake()
        with lazy.outside_compile(other):  # re-entrant, and seeds the inner scope's extras
            assert lazy._depth == 2 and getattr(other_fn, A) is other_fn
        assert lazy._depth == 1 and getattr(add, A) is add and getattr(other_fn, A) is other_fn
        setattr(extra_fn, A, "replaced")  # torch's own wrapper cached meanwhile: kept
        a = torch.ones(3, device="meta")
        assert torch._refs.add(a, a).shape == (3,)
        raise KeyError("inside")
except KeyError:
    pass
assert lazy._depth == 0 and lazy._seeded == []
assert getattr(add, A, None) is None and getattr(other_fn, A, None) is None
assert getattr(extra_fn, A) == "replaced"
assert "torch._dynamo" not in sys.modules

# once torch._dynamo is imported: nothing is seeded, except inside a scope already open
opened, opened_fn = fake()
late, late_fn = fake()
with lazy.outside_compile():
    import torch._dynamo
    with lazy.outside_compile(late):
        assert lazy._depth == 2 and getattr(late_fn, A) is late_fn
assert lazy._depth == 0 and getattr(late_fn, A, None) is None
with lazy.outside_compile(opened):
    assert lazy._depth == 0 and getattr(opened_fn, A, None) is None and getattr(add, A, None) is None
print("ok")
'''


def test_lazy_wrappers_seeding_and_scope():
    # in this process too, so that a tool that maps tests to the functions they call (mutmut)
    # sees this test reach each of them; here torch._dynamo may already be imported
    assert lazy.wrapped_fn(lambda: None) is None and lazy.wrapped_fns(None) == []
    assert lazy._module_fns() is lazy._module_fns()
    lazy._seed([])
    with lazy.outside_compile():
        pass
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-c", CHECKS], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
