"""The fresh question's light path: torch._dynamo kept out of a step that never compiles
(sa_profiler/torch_compat/lazy.py), with answers identical to torch's own path.

Each check runs in a fresh interpreter, since whether torch._dynamo is imported is process state.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow]  # one fresh interpreter per question

QUESTION = ["--gpu-mem", "12G", "--shape", "128x256x256", "--json"]

# prints the CLI's JSON answer, then whether torch._dynamo got imported; argv[1] == "dynamo"
# imports torch._dynamo first, which turns the shortcut off (torch's own wrappers run)
ASK = """
import io, sys, contextlib, json
if sys.argv[1] == "dynamo":
    import torch._dynamo
from sa_profiler.cli import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        cli.main(args=sys.argv[2:], prog_name="sa-profile")
    except SystemExit as e:
        assert e.code in (0, None), e.code
print(json.dumps({"answer": json.loads(out.getvalue()), "dynamo": "torch._dynamo" in sys.modules}))
"""


def _ask(first: str, argv: list[str]) -> dict:
    run = subprocess.run([sys.executable, "-c", ASK, first, *argv], capture_output=True, text=True, check=True,
                         env={**os.environ, "SA_PROFILER_CACHE": "off"})
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("extra", [["--mode", "forward"], ["--mode", "both"]], ids=["forward", "both"])
def test_answers_identical_with_and_without_the_shortcut(extra):
    light, own = _ask("light", QUESTION + extra), _ask("dynamo", QUESTION + extra)
    assert own["dynamo"]
    assert light["answer"] == own["answer"]


def test_a_forward_question_does_not_import_dynamo():
    # training with chunked attention goes through torch.utils.checkpoint, which reads
    # torch._dynamo.config itself: there the import is torch's and stays
    assert not _ask("light", QUESTION + ["--mode", "forward"])["dynamo"]


SCOPE = """
import sys, torch, torch._refs, torch.utils.checkpoint
from sa_profiler.torch_compat import lazy
[fn] = lazy.wrapped_fns(torch._refs.add)
assert lazy.wrapped_fns(lambda: None) == [] and lazy.wrapped_fn(torch._refs.add) is None
assert getattr(fn, lazy.ATTRIBUTE, None) is None
with lazy.outside_compile():
    assert getattr(fn, lazy.ATTRIBUTE) is fn
    with lazy.outside_compile():  # re-entrant: the inner exit keeps the outer's entries
        pass
    assert getattr(fn, lazy.ATTRIBUTE) is fn
    a = torch.ones(3, device="meta")
    assert torch._refs.add(a, a).shape == (3,)
assert getattr(fn, lazy.ATTRIBUTE, None) is None  # taken back: a later compile gets torch's wrapper
assert "torch._dynamo" not in sys.modules
import torch._dynamo
with lazy.outside_compile():
    assert getattr(fn, lazy.ATTRIBUTE, None) is None  # once dynamo is imported: torch's own path
torch._refs.add(a, a)
assert getattr(fn, lazy.ATTRIBUTE) is not fn
print("ok")
"""


def test_the_shortcut_is_scoped_and_steps_aside_once_dynamo_is_imported():
    run = subprocess.run([sys.executable, "-c", SCOPE], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_after_the_scope_torch_caches_its_own_disable_wrapper():
    code = """
import torch
from sa_profiler.torch_compat import lazy
with lazy.outside_compile():
    pass
import torch._refs
[fn] = lazy.wrapped_fns(torch._refs.add)
torch._refs.add(torch.ones(2), torch.ones(2))
disabled = getattr(fn, lazy.ATTRIBUTE)
assert disabled is not fn and getattr(disabled, "_torchdynamo_disable", False)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


# runs the console-script entry point (or, with argv[1] == "library", the click command as a
# library caller would), then prints how many objects the collector has frozen
FROZEN = """
import gc, io, sys, contextlib
from sa_profiler import cli

how, sys.argv = sys.argv[1], ["sa-profile", *sys.argv[2:]]
entry = cli.main if how == "entry" else (lambda: cli.cli.main(args=sys.argv[1:], prog_name="sa-profile"))
with contextlib.redirect_stdout(io.StringIO()):
    try:
        entry()
    except SystemExit as e:
        assert e.code in (0, None), e.code
print(gc.get_freeze_count())
"""


@pytest.mark.parametrize("how", ["entry", "library"])
def test_only_the_one_shot_command_freezes_what_torch_made(how):
    """`sa-profile` answers one question and exits: it freezes torch's objects out of the cyclic
    collector's walks once torch is imported. A caller of the library keeps its collector as is."""
    run = subprocess.run([sys.executable, "-c", FROZEN, how, *QUESTION, "--mode", "forward", "--dtype", "fp16"],
                         capture_output=True, text=True, check=True, env={**os.environ, "SA_PROFILER_CACHE": "off"})
    frozen = int(run.stdout.strip().splitlines()[-1])
    assert (frozen > 100_000) if how == "entry" else (frozen == 0)


TRITON = """
import sys
from sa_profiler import torch_compat
import torch
print(torch_compat.import_flop_counter_without_triton(), 'triton' in sys.modules)
from torch.utils.flop_counter import flop_registry
print(torch.ops.aten.mm in flop_registry, torch_compat.import_flop_counter_without_triton())
import importlib.util
print(importlib.util.find_spec('triton') is not None)
"""


def test_the_flop_formulas_load_without_triton_and_triton_still_imports_after():
    run = subprocess.run([sys.executable, "-c", TRITON], capture_output=True, text=True, check=True)
    first, second, has_triton = run.stdout.split("\n")[:3]
    assert first == "True False" and second == "True False"  # once; the formulas are torch's own
    assert run.stderr == ""  # flop_counter's "triton not found" warning is muted
    if has_triton == "True":  # hidden only while flop_counter imports: triton itself imports after
        after = subprocess.run([sys.executable, "-c", TRITON + "import triton; print('ok')"], capture_output=True,
                               text=True, check=True)
        assert after.stdout.strip().endswith("ok")


def test_the_one_shot_answer_is_the_library_answer_without_triton():
    args = ["--gpu-mem", "12G", "--shape", "128x256x256", "--mode", "forward"]
    env = {**os.environ, "SA_PROFILER_CACHE": "off"}
    probe = ("import sys; sys.argv = ['sa-profile'] + sys.argv[1:]\nfrom sa_profiler.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\nprint('triton' in sys.modules, file=sys.stderr)")
    one = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env)
    two = subprocess.run([sys.executable, "-c", "import sys\nfrom sa_profiler.cli import cli\ntry:\n"
                          "    cli.main(args=sys.argv[1:], prog_name='sa-profile')\nexcept SystemExit:\n    pass",
                          *args], capture_output=True, text=True, env=env)
    assert one.stdout == two.stdout and "Self-attention" in one.stdout
    assert one.stderr.strip() == "False"
