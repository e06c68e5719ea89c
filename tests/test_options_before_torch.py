"""An option that is wrong by itself is refused before torch loads: one line, exit 2, and torch
never imported (a bad value costs the interpreter, not torch's import)."""

import os
import subprocess
import sys

import pytest

PROBE = ("import sys; sys.argv = ['sa-profile'] + sys.argv[1:]\n"
         "from sa_profiler.cli import main\n"
         "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
         "print('torch imported:', 'torch' in sys.modules, 'exit:', code, file=sys.stderr)")
FIT = ["fit", "examples/sagan.py:Generator", "--input", "128"]
HEAD = ["--gpu", "t4", "--shape", "64x32x32"]


def _ask(args):
    env = dict(os.environ, SA_PROFILER_CACHE="off")
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("args, words", [
    (FIT + ["--batch", "-3"], "--batch must be a positive integer, got -3"),
    (FIT + ["--batch", "0"], "got 0"),
    (FIT + ["--gpu", "nosuchgpu"], "unknown GPU 'nosuchgpu'"),
    (FIT + ["--gpu", "t4", "--gpu-mem", "12G"], "not both"),
    (FIT + ["--gpu-mem", "12Q"], "memory size '12Q'"),
    (FIT + ["--optimizer", "lion"], "unknown optimizer 'lion'"),
    (FIT + ["--headroom", "150%"], "--headroom 150% is out of range"),
    (FIT + ["--torch-version", "9.9"], "--torch-version '9.9'"),
    (HEAD + ["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (HEAD + ["--impl", "sdpa:fast"], "unknown implementation 'sdpa:fast'"),
    (HEAD + ["--impl", "flash"], "unknown implementation 'flash'"),
    (["--gpu", "nosuchgpu", "--shape", "64x32x32"], "unknown GPU 'nosuchgpu'"),
    (HEAD + ["--batch", "0"], "--batch must be a positive integer"),
    (HEAD + ["--headroom", "100%"], "out of range"),
    (HEAD + ["--headroom", "-1%"], "out of range"),
    (HEAD + ["--headroom", "nan%"], "out of range"),
    (HEAD + ["--headroom", "ten%"], "cannot read --headroom 'ten%'"),
    (HEAD + ["--headroom", "lots"], "cannot read --headroom 'lots'"),
    (HEAD + ["--torch-version", "2.3"], "--torch-version '2.3'"),
    (HEAD + ["--torch-version", "2.15"], "--torch-version '2.15'"),
])
def test_refused_before_torch_loads(args, words):
    done = _ask(args)
    assert "torch imported: False exit: 2" in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sa-profile: error: ") and words in lines[0], done.stderr


@pytest.mark.parametrize("headroom", ["0%", "99.9%", "1", "512M"])
def test_the_headroom_boundaries_that_are_accepted(headroom):
    from sa_profiler.cli import checks

    kind, value = checks.headroom(headroom)
    assert kind == ("fraction" if headroom.endswith("%") else "bytes")
    assert value == pytest.approx({"0%": 0.0, "99.9%": 0.999, "1": 1, "512M": 512 * 2**20}[headroom])


def test_the_names_checked_early_are_the_ones_the_engine_knows():
    from sa_profiler import names
    from sa_profiler.attention import BACKENDS, IMPLEMENTATIONS
    from sa_profiler.engine.workload import DTYPES
    from sa_profiler.models.fit import OPTIMIZERS

    assert tuple(IMPLEMENTATIONS) == names.IMPLEMENTATIONS and tuple(BACKENDS) == names.BACKENDS
    assert set(DTYPES) == set(names.DTYPE_NAMES) and OPTIMIZERS == names.OPTIMIZERS
