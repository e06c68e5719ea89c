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
SWEEP = ["sweep", "--gpu", "t4", "--out", "{tmp}"]
PLAN = ["plan", "examples/sagan.py:Generator", "--input", "128"]


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
    (FIT + ["--accumulation", "0"], "--accumulation must be a positive integer"),
    (FIT + ["--checkpointing", "every-0"], "unknown --checkpointing 'every-0'; expected all, every-K"),
    (FIT + ["--checkpointing", "every-x"], "unknown --checkpointing 'every-x'"),
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
    (SWEEP + ["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (SWEEP + ["--impl", "foo"], "unknown implementation 'foo'"),
    (SWEEP + ["--headroom", "150%"], "--headroom 150% is out of range"),
    (["sweep", "--gpu", "nosuchgpu", "--out", "{tmp}"], "unknown GPU 'nosuchgpu'"),
    (SWEEP + ["--gpu-mem", "12G"], "not both"),
    (SWEEP + ["--torch-version", "1.0"], "--torch-version '1.0'"),
    (FIT + ["--world-size", "0", "--parallel", "ddp"], "--world-size must be a positive integer (the number of ranks)"),
    (FIT + ["--parallel", "fsdp"], "--parallel fsdp needs --world-size N"),
    (FIT + ["--world-size", "2"], "--world-size 2 needs --parallel ddp or --parallel fsdp"),
    (FIT + ["--world-size", "2", "--parallel", "ddp", "--reshard-after-forward"], "FSDP2's: give it with --parallel fsdp"),
    (FIT + ["--find-unused-parameters"], "--find-unused-parameters is DDP's"),
    (PLAN + ["--batch", "10", "--world-size", "4"], "--batch 10 does not split over 4 ranks"),
    (PLAN + ["--batch", "8", "--world-size", "-1"], "--world-size must be a positive integer"),
    (PLAN + ["--batch", "0"], "--batch must be a positive integer, got 0"),
    (PLAN + ["--batch", "8", "--try", "speed"], "--try 'speed': unknown kind speed"),
    (PLAN + ["--batch", "8", "--try", ","], "--try ',': unknown kind (none given)"),
    (PLAN + ["--batch", "8", "--optimizer", "lion"], "unknown optimizer 'lion'"),
    (PLAN + ["--batch", "8", "--gpu", "nosuchgpu"], "unknown GPU 'nosuchgpu'"),
    (PLAN + ["--batch", "8", "--torch-version", "9.9"], "--torch-version '9.9'"),
])
def test_refused_before_torch_loads(args, words, tmp_path):
    done = _ask([a.replace("{tmp}", str(tmp_path / "out")) for a in args])
    assert "torch imported: False exit: 2" in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sa-profile: error: ") and words in lines[0], done.stderr
    assert not (tmp_path / "out").exists()  # nothing written


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


# -- the same checks in one process (fast; reachable by mutation testing) ----------------------------
@pytest.mark.parametrize("call, words", [
    (lambda c: c.batch(0), "got 0"), (lambda c: c.batch(-3), "got -3"),
    (lambda c: c.headroom("100%"), "out of range"), (lambda c: c.headroom("-0.1%"), "out of range"),
    (lambda c: c.headroom("nan%"), "out of range"), (lambda c: c.headroom("x%"), "cannot read"),
    (lambda c: c.headroom("lots"), "cannot read"), (lambda c: c.headroom("0"), "cannot read"),
    (lambda c: c.dtypes("fp16,fp8"), "unknown dtype 'fp8'"),
    (lambda c: c.impls("reference,flash"),
     "unknown implementation 'flash'; expected reference, sdpa, chunked, pooled or sdpa:BACKEND"),
    (lambda c: c.impls("chunked:flash"), "a backend goes with sdpa only"),
    (lambda c: c.impls("sdpa:fast"), "a backend goes with sdpa only: sdpa:math|efficient|flash|cudnn"),
    (lambda c: c.card("t4", "12G"), "give either --gpu NAME or --gpu-mem SIZE, not both"), (lambda c: c.card("cpu", "12G"), "not both"),
    (lambda c: c.card("nosuch", None), "unknown GPU"), (lambda c: c.card("cpu", None), "unknown GPU"),
    (lambda c: c.card(None, "12Q"), "memory size"),
    (lambda c: c.torch_version("2.3"), "from 2.4 to 2.14"), (lambda c: c.torch_version("2.6", "measure"), "measur"),
    (lambda c: c.optimizer("lion"), "unknown optimizer 'lion'; expected one of sgd, sgd-momentum, adam, adamw"),
    (lambda c: c.accumulation(0), "--accumulation must be a positive integer"), (lambda c: c.accumulation(-1), "got -1"),
    (lambda c: c.checkpointing("every-0"), "unknown --checkpointing 'every-0'"),
    (lambda c: c.checkpointing("every-²"), "unknown --checkpointing"), (lambda c: c.checkpointing("most"), "selective"),
])
def test_each_check_refuses_in_one_line(call, words):
    import click

    from sa_profiler.cli import checks

    with pytest.raises(click.UsageError) as err:
        call(checks)
    assert words in err.value.message and "\n" not in err.value.message


def test_each_check_accepts_and_reads():
    from sa_profiler.cli import checks

    assert checks.batch(1) is None and checks.batch(None) is None
    assert checks.dtypes("fp16, bf16,float32") == ["float16", "bfloat16", "float32"] and checks.dtypes("") is None
    assert checks.impls("sdpa,sdpa:flash,sdpa, chunked") == ["sdpa", "sdpa:flash", "chunked"]
    assert checks.impls("reference,all") is None and checks.impls(None) is None
    assert checks.card("t4", None) is None and checks.card(None, "12G") is None and checks.card(None, None) is None
    assert checks.card("cpu", "12G", cpu_allowed=True) is None and checks.card("cpu", None, cpu_allowed=True) is None
    assert checks.torch_version(None) is None and checks.torch_version("2.14") is None
    assert checks.torch_version("2.4.1") is None and checks.optimizer("sgd-momentum") is None
    assert checks.accumulation(1) is None and checks.accumulation(8) is None
    assert all(checks.checkpointing(v) is None for v in (None, "all", "every-1", "every-12", " Selective "))
    assert checks.headroom(" 10% ") == ("fraction", 0.1) and checks.headroom("512M") == ("bytes", 512 * 2**20)
