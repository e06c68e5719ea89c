"""engine/measure.py's CPU path, field by field: the peak against the simulation (which
shares none of measure.py's code), the baseline against the layer's own parameters, the
timing loop with a clock whose readings are known, and the errors; the CUDA path's order of
calls and its failures with torch.cuda stood in for (tests written against surviving mutants;
tests/test_cuda.py measures on a real GPU)."""

import dataclasses
import importlib
import time
from types import SimpleNamespace

import pytest
import torch

from sa_profiler.targets import gpus
from sa_profiler.attention.sdpa import BackendUnavailable
from sa_profiler.engine import Workload, measure, simulate, step

measure_mod = importlib.import_module("sa_profiler.engine.measure")  # the package exports the function


def _bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("w", [Workload("reference", 2, 16, 4, 4, "float32", "forward", "cpu"),
                               Workload("sdpa", 1, 16, 4, 4, "float32", "train", "cpu"),
                               Workload("sdpa", 1, 16, 4, 4, "bfloat16", "train", "cpu", {"backend": "flash"})],
                         ids=lambda w: f"{w.impl}-{w.mode}-{w.dtype}")
def test_cpu_measurement(w):
    rec = measure(w, repeats=3)
    sim = simulate(w)
    layer, x = step.make(w, "cpu")
    assert (rec.status, rec.message, rec.source, rec.device_name) == ("ok", "", "measured", "cpu")
    assert rec.workload == w
    assert rec.baseline_bytes == _bytes(list(layer.parameters()) + [x])
    assert rec.peak_bytes == sim.peak_bytes > 0
    assert rec.backend == sim.backend == measure_mod._backend_used(w, "cpu")
    assert [(t.shape, t.dtype, t.bytes) for t in rec.top_tensors] == \
        [(t.shape, t.dtype, t.bytes) for t in sim.top_tensors] != []
    assert rec.time_method == "wall clock, median of 3" and rec.time_s > 0


def test_backend_used_names_the_kernel_torch_picked():
    assert measure_mod._backend_used(Workload("sdpa", 2, 16, 4, 4, "float32", "forward", "cpu"), "cpu") == "math"
    flash = Workload("sdpa", 2, 16, 4, 4, "float32", "forward", "cpu", {"backend": "flash"})
    assert measure_mod._backend_used(flash, "cpu") == "flash"
    assert measure_mod._backend_used(Workload("reference", 2, 16, 4, 4), "cpu") == ""
    names = measure_mod._OpNames()
    assert names.ops == set() and names.backend == ""
    with names:
        torch.ones(2) + 1
    assert "add" in names.ops and names.backend == ""


def test_the_time_is_the_median_of_the_timed_steps(monkeypatch):
    """A clock that reads 0, 3 | 10, 11 | 20, 22 | 30, 30.5 | 40, 47: steps of 3, 1, 2, 0.5 and 7 s,
    median 2; the tracked step runs first (through the step runner) and is not timed; grads are
    cleared before each timed step."""
    readings = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0, 30.0, 30.5, 40.0, 47.0])
    calls = []
    run, clear = step.run, step.clear_grads
    monkeypatch.setattr(time, "perf_counter", lambda: next(readings))
    monkeypatch.setattr(step, "run", lambda *a: (calls.append("run"), run(*a))[1])
    monkeypatch.setattr(step, "clear_grads", lambda *a: (calls.append("clear"), clear(*a))[1])
    rec = measure(Workload("reference", 1, 16, 4, 4, "float32", "train", "cpu"), repeats=5)
    assert rec.time_s == 2.0 and rec.time_method == "wall clock, median of 5"
    assert calls == ["clear", "run"] * 5


def test_default_repeats():
    rec = measure(Workload("reference", 1, 8, 2, 2, "float32", "forward", "cpu"))
    assert rec.time_method == "wall clock, median of 5"


def test_an_unavailable_backend_is_unsupported():
    w = Workload("sdpa", 1, 16, 4, 4, "float32", "train", "cpu", {"backend": "efficient"})
    with pytest.raises(BackendUnavailable) as err:
        step.run(*step.make(w, "cpu"), w.mode)
    rec = measure(w, repeats=1)
    assert (rec.status, rec.message, rec.source, rec.device_name) == ("unsupported", str(err.value), "measured", "cpu")
    assert rec.peak_bytes is None and rec.time_s is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer without a CUDA GPU")
def test_a_gpu_target_needs_a_local_gpu():
    with pytest.raises(RuntimeError, match=r"^measuring a GPU target needs a local CUDA GPU; use the simulator "
                                           r"\(--engine simulate\)$"):
        measure(Workload("reference", 1, 8, 2, 2, "float32", "forward", "t4"))


# -- the CUDA path, with torch.cuda's memory and timing calls stood in for ------------------------
# The step runs for real on the CPU; what the stand-in records is every call measure.py makes to
# torch.cuda and to the step, in order, so the order that makes the reading right is checked: the
# peak statistics reset after the warm-up, the device synchronised before they are read, the
# memory fraction of an emulated card set first and given back last.

BASE, WARM_PEAK, STEP_PEAK = 7_000_000, 99_999_999, 12_345  # bytes
LOCAL_CARD = dataclasses.replace(gpus.lookup("a10g"), local=True)
T4 = gpus.lookup("t4")


class FakeCuda:
    """Records the torch.cuda calls measure.py makes; memory and event times come from the runs."""

    OutOfMemoryError = torch.cuda.OutOfMemoryError

    def __init__(self, log, fail=None):
        self.log, self.fail = log, fail or {}
        self.peak, self.clock = BASE, 0.0
        this = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self):
                this.log.append("record")
                self.t = this.clock

            def synchronize(self):
                this.log.append("event sync")

            def elapsed_time(self, end):
                return end.t - self.t  # milliseconds

        self.Event = Event

    def is_available(self):
        return True

    def set_per_process_memory_fraction(self, f):
        self.log.append(("fraction", f))

    def synchronize(self):
        self.log.append("sync")
        if "sync" in self.fail and self.log.count("sync") >= self.fail["sync"][0]:
            raise self.fail["sync"][1]

    def empty_cache(self):
        self.log.append("empty_cache")

    def reset_peak_memory_stats(self):
        self.log.append("reset")
        self.peak = BASE

    def memory_allocated(self):
        self.log.append("allocated")
        return BASE

    def max_memory_allocated(self):
        self.log.append("max")
        return self.peak


@pytest.fixture
def fake_cuda(monkeypatch):
    """measure.py's torch.cuda, targets and step, with the step on the CPU. The warm-up steps
    peak higher than the measured one (as a first step's lazy initialisations do); the timed
    steps take 3, 1, 2, 5, 4 ms."""
    log, state = [], SimpleNamespace(fail={}, runs=0)
    durations = iter([3.0, 1.0, 2.0, 5.0, 4.0])

    def make(w, device):
        log.append(("make", str(device), w.batch))
        return step.make(w, "cpu")

    def run(layer, x, mode):
        state.runs += 1
        log.append("run")
        if state.runs in state.fail:
            raise state.fail[state.runs]
        step.run(layer, x, mode)
        measured = log.count("reset") > 0
        cuda.peak = max(cuda.peak, BASE + (STEP_PEAK if measured else WARM_PEAK))
        if log.count("record") % 2 == 1:  # between a timed step's start and end events
            cuda.clock += next(durations)

    def clear(layer, x):
        log.append("clear")
        step.clear_grads(layer, x)

    def resolve(target):
        return LOCAL_CARD if target == "cuda" else gpus.lookup(target)

    cuda = FakeCuda(log)
    state.cuda = cuda
    monkeypatch.setattr(measure_mod, "torch", SimpleNamespace(cuda=cuda, device=torch.device))
    monkeypatch.setattr(measure_mod, "card_keys", SimpleNamespace(CPU="cpu", LOCAL="cuda", resolve=resolve))
    monkeypatch.setattr(measure_mod, "step", SimpleNamespace(make=make, run=run, clear_grads=clear))
    monkeypatch.setattr(measure_mod.gc, "collect", lambda: log.append("gc"))
    state.log = log
    return state


def _timed(n):
    return ["clear", "record", "run", "record", "event sync"] * n


def test_cuda_measurement_of_an_emulated_card(fake_cuda):
    """T4 on the local A10G: the allocator capped at T4's usable memory over the A10G's total."""
    w = Workload("sdpa", 2, 16, 4, 4, "float32", "train", "t4")
    rec = measure(w, repeats=3)
    fraction = (T4.total_memory - T4.context_bytes) / LOCAL_CARD.total_memory
    assert fake_cuda.log == [
        ("fraction", fraction), ("make", "cuda", 1), "run",  # the backend torch picks, at batch 1
        ("make", "cuda", 2), "clear", "run",  # one warm-up step
        "clear", "sync", "gc", "empty_cache", "reset", "allocated", "run", "sync", "max",
        *_timed(3),
        "gc", "sync", "empty_cache", ("fraction", 1.0)]
    assert (rec.status, rec.message, rec.source) == ("ok", "", "measured") and rec.workload == w
    assert rec.device_name == "NVIDIA A10G capped to Tesla T4"
    assert (rec.peak_bytes, rec.baseline_bytes) == (STEP_PEAK, BASE)
    assert rec.backend == "math"
    assert rec.time_s == 0.002 and rec.time_method == "CUDA events, median of 3 after warm-up"


def test_cuda_measurement_of_the_local_card_and_defaults(fake_cuda):
    """The local card itself: no cap. Defaults: 5 timed steps after 1 warm-up."""
    w = Workload("reference", 1, 16, 4, 4, "float32", "forward", "cuda")
    rec = measure(w)
    assert fake_cuda.log == [
        ("make", "cuda", 1), "run", ("make", "cuda", 1), "clear", "run",
        "clear", "sync", "gc", "empty_cache", "reset", "allocated", "run", "sync", "max",
        *_timed(5), "gc", "sync", "empty_cache"]
    assert rec.device_name == "NVIDIA A10G" and rec.status == "ok" and rec.backend == ""
    assert rec.time_s == 0.003 and rec.time_method == "CUDA events, median of 5 after warm-up"


def test_cuda_measurement_warmups_and_a_larger_card(fake_cuda):
    """Two warm-up steps; an H100 emulated on the A10G gets the whole A10G (fraction at most 1)."""
    w = Workload("reference", 1, 16, 4, 4, "float32", "forward", "h100")
    rec = measure_mod._measure_cuda(w, 1, 2)
    assert fake_cuda.log[:8] == [("fraction", 1.0), ("make", "cuda", 1), "run", ("make", "cuda", 1),
                                 "clear", "run", "clear", "run"]
    assert fake_cuda.log[-1] == ("fraction", 1.0) and rec.device_name == "NVIDIA A10G capped to NVIDIA H100 80GB HBM3"
    assert rec.time_method == "CUDA events, median of 1 after warm-up" and rec.time_s == 0.003


def test_cuda_dtype_the_card_cannot_compute(fake_cuda, monkeypatch):
    old = dataclasses.replace(gpus.lookup("t4"), local=True)
    monkeypatch.setattr(measure_mod, "card_keys", SimpleNamespace(CPU="cpu", LOCAL="cuda", resolve=lambda t: old))
    rec = measure(Workload("reference", 1, 16, 4, 4, "bfloat16", "forward", "cuda"))
    assert (rec.status, rec.message) == ("unsupported", old.supports(torch.bfloat16))
    assert rec.message.startswith("Tesla T4 (compute capability 7.5) has no bfloat16")
    assert fake_cuda.log == [] and rec.device_name == "Tesla T4" and rec.peak_bytes is None


LONG = "x" * 400


@pytest.mark.parametrize("error, status, message", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nstack"), "oom",
     "CUDA out of memory. Tried to allocate 2 GiB"),
    (torch.cuda.OutOfMemoryError(LONG), "oom", LONG[:300]),
    (BackendUnavailable("no flash kernel for this input\nsecond line"), "unsupported",
     "no flash kernel for this input\nsecond line"),
    (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED\nmore"), "error",
     "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
    (RuntimeError(LONG), "error", "RuntimeError: " + LONG[:300])], ids=["oom", "oom-long", "backend", "error", "long"])
def test_cuda_step_failures(fake_cuda, error, status, message):
    """The measured step (the 3rd run) fails: the record says how, and the cap is given back."""
    fake_cuda.fail = {3: error}
    rec = measure(Workload("sdpa", 2, 16, 4, 4, "float32", "train", "t4"), repeats=2)
    assert (rec.status, rec.message) == (status, message)
    assert rec.peak_bytes is None and rec.time_s is None and rec.backend == "math"
    assert fake_cuda.log[-5:] == ["run", "gc", "sync", "empty_cache", ("fraction", 1.0)]


def test_cuda_context_lost(fake_cuda):
    """A synchronize that fails while cleaning up: the record says the context was lost."""
    fake_cuda.cuda.fail = {"sync": (3, RuntimeError("CUDA error: an illegal memory access\ntrace"))}
    rec = measure(Workload("reference", 1, 16, 4, 4, "float32", "forward", "t4"), repeats=1)
    assert (rec.status, rec.message) == ("error", "CUDA context lost: CUDA error: an illegal memory access")
    assert rec.peak_bytes == STEP_PEAK and ("fraction", 1.0) not in fake_cuda.log


def test_cuda_context_lost_after_a_failure(fake_cuda):
    fake_cuda.fail = {3: torch.cuda.OutOfMemoryError("CUDA out of memory")}
    fake_cuda.cuda.fail = {"sync": (2, RuntimeError("CUDA error: " + LONG))}
    rec = measure(Workload("reference", 1, 16, 4, 4, "float32", "forward", "t4"), repeats=1)
    assert rec.status == "oom"
    assert rec.message == "CUDA out of memory; CUDA context lost: " + ("CUDA error: " + LONG)[:200]
