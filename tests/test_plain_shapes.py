"""sympy kept out of simulated steps (sa_profiler/torch_compat/plain_shapes.py): every helper call the
steps make answers what torch's own function answers, the stand-ins are scoped, step aside for
anything else, and the answers do not move.

Whether sympy is imported is process state: each check runs in a fresh interpreter.
"""

import json
import os
import subprocess
import sys

import pytest

WORKLOADS = """
from sa_profiler.engine import Workload, simulate
# the CPU target last: its SDPA math path reaches a torch._refs function that imports
# torch._dynamo (and with it the real modules) whatever this package does
WORKLOADS = [Workload(impl, b, c, h, w, dtype, mode, target, opts)
             for target, (b, c, h, w) in [("t4", (2, 64, 16, 16)), ("h100", (1, 128, 24, 40)), ("cpu", (2, 16, 8, 8))]
             for impl, opts in [("reference", {}), ("sdpa", {}), ("sdpa", {"backend": "efficient"}),
                                ("sdpa", {"backend": "flash"}), ("chunked", {"chunk": 100, "checkpoint": True}),
                                ("chunked", {"chunk": 256}), ("pooled", {"pool": 2})]
             for dtype in ("float32", "float16") for mode in ("forward", "train")]
"""

REPLAY = WORKLOADS + """
import sys, json
from sa_profiler.torch_compat import plain_shapes
calls = []
for name, fn in list(plain_shapes.PLAIN[plain_shapes.SYMBOLIC].items()):
    def recorded(*args, _fn=fn, _name=name):
        out = _fn(*args)
        calls.append((_name, args, out))
        return out
    plain_shapes.PLAIN[plain_shapes.SYMBOLIC][name] = recorded
records = [simulate(w) for w in WORKLOADS if w.target != "cpu"]
assert all(r.status in ("ok", "unsupported") for r in records), [r.message for r in records if r.status not in ("ok", "unsupported")]
loaded = [m for m in ("sympy", plain_shapes.SYMBOLIC, "torch._dynamo") if m in sys.modules]
import torch.fx.experimental.symbolic_shapes as real
wrong = [(n, repr(a), out) for n, a, out in calls if getattr(real, n)(*a) != out or type(getattr(real, n)(*a)) != type(out)]
print(json.dumps({"loaded": loaded, "calls": len(calls), "names": sorted({n for n, _, _ in calls}), "wrong": wrong[:5]}))
"""


def _run(code: str, *argv: str) -> str:
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         env={**os.environ, "SA_PROFILER_CACHE": "off"})
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def test_every_helper_call_of_the_steps_answers_as_torchs_own():
    out = json.loads(_run(REPLAY))
    assert out["loaded"] == []  # on GPU targets: neither sympy, nor torch's module, nor torch._dynamo
    assert out["calls"] > 1000 and {"expect_true", "sym_eq", "guard_or_false"} <= set(out["names"])
    assert out["wrong"] == []


ANSWERS = WORKLOADS + """
import sys, json
if sys.argv[1] == "sympy":  # torch's module imported first: the stand-ins stay out
    import torch.fx.experimental.symbolic_shapes
from sa_profiler.torch_compat import plain_shapes
records, sympy = [], None
for w in WORKLOADS:
    if w.target == "cpu" and sympy is None:
        sympy = "sympy" in sys.modules  # after every GPU target
    r = simulate(w)
    records.append([r.status, r.peak_bytes, r.baseline_bytes, r.backend, r.time_s,
                    [list(map(str, t.__dict__.values())) for t in r.top_tensors]])
print(json.dumps({"records": records, "sympy": sympy}))
"""


@pytest.mark.slow
def test_answers_are_the_same_with_sympy_imported():
    light, full = json.loads(_run(ANSWERS, "light")), json.loads(_run(ANSWERS, "sympy"))
    assert not light["sympy"] and full["sympy"]
    assert light["records"] == full["records"]


SCOPE = """
import sys, torch
from sa_profiler.torch_compat.plain_shapes import plain_shapes, SYMBOLIC, SYMPY, SYMPY_FUNCTIONS, Basic
NAMES = (SYMBOLIC, SYMPY, SYMPY_FUNCTIONS)
assert not any(n in sys.modules for n in NAMES)
with plain_shapes():
    from torch.fx.experimental.symbolic_shapes import expect_true, sym_eq
    import sympy
    assert sympy.Basic is Basic and expect_true(True) is True and sym_eq((1, 2), [1, 2]) is True
    with plain_shapes():  # re-entrant: the inner exit keeps them
        pass
    assert sys.modules["sympy"] is sympy and type(sympy).__name__ == "_StandIn"
    try:
        expect_true(1)  # not a bool: torch's own answers, and raises as it does
    except AssertionError:
        pass
    else:
        raise SystemExit("expect_true(1) did not raise")
    # asking for it imported the real modules: the stand-ins stepped aside, and the one kept forwards
    real_sympy = sys.modules["sympy"]
    assert real_sympy is not sympy and sympy.Basic is real_sympy.Basic
    assert type(sys.modules[SYMBOLIC]).__name__ == "module"
assert all(type(sys.modules[n]).__name__ == "module" for n in NAMES[:2])
print("ok")
"""


def test_the_stand_ins_are_scoped_and_step_aside():
    assert _run(SCOPE) == "ok"


LEAVE = """
import sys
from sa_profiler.torch_compat.plain_shapes import plain_shapes, SYMBOLIC
with plain_shapes():
    assert SYMBOLIC in sys.modules and "sympy" in sys.modules
import torch.fx.experimental as experimental
assert SYMBOLIC not in sys.modules and "sympy" not in sys.modules and not hasattr(experimental, "symbolic_shapes")
import torch.fx.experimental.symbolic_shapes as real, sympy
assert real.expect_true.__module__ == SYMBOLIC and hasattr(sympy, "Symbol")
print("ok")
"""


def test_on_exit_nothing_is_left_and_the_real_modules_import():
    assert _run(LEAVE) == "ok"


def test_the_headline_question_imports_no_sympy():
    code = """
import sys, io, contextlib
from sa_profiler.cli import cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(args=["--gpu-mem", "12G", "--shape", "128x256x256", "--json"], prog_name="sa-profile")
    except SystemExit as e:
        assert e.code in (0, None), e.code
print(sorted(m for m in ("sympy", "torch.fx.experimental.symbolic_shapes", "torch._dynamo") if m in sys.modules))
"""
    assert _run(code) == "[]"
